"""Batch norm at memory speed for channels-last frames on the CPU (the BN layers of Fig. 2).

Fig. 2 runs in channels-last on the CPU only where its C convolutions are off (no C compiler,
or ``SSVAE_NATIVE=0``; `conv3x3.memory_format`). With them it runs in NCHW, where PyTorch's
own batch norm is as fast as this one, and `BatchNorm2d` leaves NCHW input to it.

PyTorch's CPU kernel reduces a channels-last [N, C, H, W] tensor along its rows with only
C = 3 or 6 numbers per pixel, which leaves it several times slower than memory allows: half
of a `small` training step went to it (issue 13's profile). Here the same training-mode batch
norm reads the tensor as a matrix X of rows [N * H, W * C] (a view, no copy):

- sums over the rows are one matrix-vector product (1ᵀX, BLAS), folded to C numbers;
- the variance is two-pass, Σ (x − mean)² / M over M = N * H * W pixels (biased, as PyTorch
  normalises with);
- per-channel scale and shift are tiled W times, so every elementwise op runs over long
  contiguous rows.

The backward is the standard one (Ioffe and Szegedy 2015), with x̂ = (x − mean) / σ,
a = weight / σ:

    ∂L/∂x = a ∘ (g − Σg / M − x̂ Σ(g x̂) / M),  ∂L/∂weight = Σ(g x̂),  ∂L/∂bias = Σg.

Measured against the native kernel on [60, 6, 64, 64] (forward + backward, one thread):
2.3x to 2.9x faster in two runs on the 2-core CI machine (7.4 against 17.3 ms, 5.85 against
16.7; README, Benchmarks), and closer to a float64 reference (`bench/levers.py`,
`tests/test_batchnorm.py`). Eval mode is one scale and shift per channel, tiled the same way.
Elsewhere (CUDA, another layout or dtype) `BatchNorm2d` is PyTorch's own; its state dict is
`nn.BatchNorm2d`'s, so checkpoints do not change.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable


def _rows(x: Tensor) -> Tensor:
    """[N, C, H, W] channels-last -> its rows [N * H, W * C] (a view when channels-last)."""
    n, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(n * h, w * c)


def _unrows(rows: Tensor, shape: torch.Size) -> Tensor:
    """The inverse of `_rows`: rows [N * H, W * C] -> [N, C, H, W] channels-last (a view)."""
    n, c, h, w = shape
    return rows.view(n, h, w, c).permute(0, 3, 1, 2)


def _channel_sums(rows: Tensor, channels: int) -> Tensor:
    """Σ over the pixels of rows [N * H, W * C] per channel -> [C] (1ᵀX, then over W)."""
    return (rows.new_ones(rows.shape[0]) @ rows).view(-1, channels).sum(0)


class _RowsBatchNorm(torch.autograd.Function):
    """Training-mode batch norm of channels-last x; also returns the batch mean and var [C]."""

    @staticmethod
    def forward(
        ctx: FunctionCtx, x: Tensor, weight: Tensor, bias: Tensor, eps: float
    ) -> tuple[Tensor, Tensor, Tensor]:
        n, c, h, w = x.shape
        rows = _rows(x)
        pixels = n * h * w
        mean = _channel_sums(rows, c) / pixels  # [C]
        centred = rows - mean.repeat(w)  # [N * H, W * C]
        var = _channel_sums(centred * centred, c) / pixels  # [C], biased
        inv_std = torch.rsqrt(var + eps)
        out = torch.addcmul(bias.repeat(w), centred, (inv_std * weight).repeat(w))
        ctx.save_for_backward(centred, inv_std, weight)
        ctx.shape = x.shape  # type: ignore[attr-defined]
        ctx.mark_non_differentiable(mean, var)
        return _unrows(out, x.shape), mean, var

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_out: Tensor, _mean: Tensor, _var: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, None]:
        centred, inv_std, weight = ctx.saved_tensors
        n, c, h, w = ctx.shape
        grad = _rows(grad_out)  # [N * H, W * C]
        pixels = n * h * w
        grad_sum = _channel_sums(grad, c)  # Σg  [C]
        grad_dot = _channel_sums(grad * centred, c)  # Σ g (x − mean)  [C]
        scale = weight * inv_std  # a
        # ∂L/∂x = a g − a Σg / M − (x − mean) a σ⁻² Σ(g (x − mean)) / M
        grad_x = torch.addcmul((-scale * grad_sum / pixels).repeat(w), grad, scale.repeat(w))
        grad_x.addcmul_(centred, (-scale * inv_std.square() * grad_dot / pixels).repeat(w))
        return _unrows(grad_x, ctx.shape), grad_dot * inv_std, grad_sum, None


def fast_applies(x: Tensor) -> bool:
    """Whether `batch_norm_train` takes the rows path for x: 4-D, CPU, float32, channels-last."""
    return (
        x.dim() == 4
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.is_contiguous(memory_format=torch.channels_last)
        and x.shape[0] * x.shape[2] * x.shape[3] > 1
    )


def batch_norm_train(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor,
    bias: Tensor,
    momentum: float,
    eps: float,
) -> Tensor:
    """`F.batch_norm(x, ..., training=True)`, on the rows path where `fast_applies(x)`.

    x: [N, C, H, W]; weight, bias, running_mean, running_var: [C]. The running statistics
    are updated in place as PyTorch does: mean and unbiased variance, blended by `momentum`.
    """
    if not fast_applies(x):
        return nn.functional.batch_norm(
            x, running_mean, running_var, weight, bias, True, momentum, eps
        )
    out, mean, var = _RowsBatchNorm.apply(x, weight, bias, eps)
    if running_mean is not None and running_var is not None:
        pixels = x.numel() // x.shape[1]
        with torch.no_grad():
            running_mean.lerp_(mean, momentum)
            running_var.lerp_(var * (pixels / (pixels - 1)), momentum)
    return out


def batch_norm_eval(
    x: Tensor, running_mean: Tensor, running_var: Tensor, weight: Tensor, bias: Tensor, eps: float
) -> Tensor:
    """Eval-mode batch norm, x [N, C, H, W] channels-last on the CPU: one scale and shift
    per channel [C], tiled along the rows. -> [N, C, H, W] channels-last."""
    w = x.shape[3]
    scale = weight * torch.rsqrt(running_var + eps)
    shift = bias - running_mean * scale
    return _unrows(torch.addcmul(shift.repeat(w), _rows(x), scale.repeat(w)), x.shape)


class BatchNorm2d(nn.BatchNorm2d):
    """`nn.BatchNorm2d` on the rows path where it applies (`fast_applies`), in training and
    in eval mode. The same parameters, buffers and state dict; other inputs are PyTorch's.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (self.affine and self.track_running_stats and fast_applies(x)):
            return super().forward(x)
        assert self.running_mean is not None and self.running_var is not None
        if not self.training:
            return batch_norm_eval(
                x, self.running_mean, self.running_var, self.weight, self.bias, self.eps
            )
        assert self.num_batches_tracked is not None
        self.num_batches_tracked.add_(1)
        momentum = self.momentum
        if momentum is None:  # a cumulative average, as nn.BatchNorm2d
            momentum = 1.0 / float(self.num_batches_tracked)
        return batch_norm_train(
            x, self.running_mean, self.running_var, self.weight, self.bias, momentum, self.eps
        )
