"""The 3×3 convolutions of Fig. 2 at twice PyTorch's speed on the CPU (C kernels, NCHW).

Fig. 2's layers have 3 and 6 channels. oneDNN, PyTorch's CPU convolution, blocks channels by
8 or 16 and runs these at a small fraction of the CPU's speed; ``conv3x3.c`` instead runs along
the image rows, eight pixels per register, one register per output channel. Measured on one
`small` step ([60, 3, 64, 64] -> 6 -> 3 maps, forward + backward) at one thread against oneDNN
in channels-last, its fastest layout (`make bench` on 2026-12-06 at 1ad14bc; README,
Benchmarks; `bench/levers.py`): 9.65 against 19.18 ms (1.99×; 1.80× in the run before), and
weight gradients 7.5e-8 from float64 against 1.2e-5, relative to their largest entry (each
image is summed on its own).

The kernels read and write contiguous NCHW, so on the CPU the frames and Fig. 2 run in that
layout wherever the kernels load (`memory_format`); elsewhere (CUDA, no C compiler,
``SSVAE_NATIVE=0``) `Conv2d` is PyTorch's own, in channels-last, and a model's state dict is
`nn.Conv2d`'s either way, so checkpoints do not change.

Memory: a convolution that follows the C batch norm and its ReLU (Fig. 2's second) need not
keep its input for the weight gradient. Given the batch norm's input and its three numbers
per channel (`conv2d`'s ``input_from``, from `batchnorm.relu_input`), the backward keeps those
(the batch norm keeps its input anyway), and the weight gradient applies the batch norm and
ReLU to each row as it reads it, rounded as ``batchnorm.c`` rounds them: the same gradient to
the bit, 87 MiB less per step at 256 px (6 maps of 58 frames). `make bench` at 85cd46d
(`bench/levers.py`, ``relu_input``, allocator on): a paper-size step 585.0 against 585.9 ms,
its own peak 330 against 417 MiB. Against 1ad14bc, side by side (`bench/trainer.py`'s loop
at `paper`, a `/tmp` script): no difference with the allocator on, as `ssvae` runs (94.7 to
97.8 against 95.2 to 97.8 pairs/s), about 3.5 % slower with glibc's defaults (47.3 to 48.6
against 49.2 to 50.4; the kernel computes each row three times, once per output row).

Threads: images are split over `torch.get_num_threads()` of PyTorch's own OpenMP threads
(`native`); the weight gradient is summed over fixed blocks of images in float64, so it is the
same to the bit at any thread count.
"""

from __future__ import annotations

import ctypes
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

from ssvae_core import native

LANES = 8  # partial sums per weight (conv3x3.c: LANES)
BLOCK_PIXELS = 2**16  # the weight gradient's images are summed in blocks of at least this


def library() -> ctypes.CDLL | None:
    """The built kernels with their signatures, or None (`native.load`)."""
    lib = native.load("conv3x3")
    if lib is not None and lib.conv3x3_forward.argtypes is None:  # set last, below
        p, n, i = ctypes.c_void_p, ctypes.c_long, ctypes.c_int
        lib.conv3x3_forward.restype = lib.conv3x3_weight_grad.restype = ctypes.c_int
        lib.conv3x3_weight_grad.argtypes = [p, p, p, n, n, n, n, n, n, n, p, p, p, i]
        lib.conv3x3_forward.argtypes = [p, p, p, p, n, n, n, n, n, n, i]
    return lib


def memory_format(device: torch.device) -> torch.memory_format:
    """The layout of frames and Fig. 2 on `device`: contiguous NCHW on the CPU where the C
    kernels load, else channels-last (oneDNN's and cuDNN's faster one for these layers)."""
    if device.type == "cpu" and library() is not None:
        return torch.contiguous_format
    return torch.channels_last


def applies(x: Tensor, weight: Tensor, bias: Tensor | None = None, groups: int = 1) -> bool:
    """Whether the C kernels take conv(x, weight, bias): all float32 on the CPU, x
    [N, groups * ci, H, W] contiguous NCHW, weight [groups * co, ci, 3, 3], bias None or
    [groups * co], and the kernels built. The C code checks nothing: every pointer it is given
    is checked here."""
    return (
        x.dim() == 4
        and weight.dim() == 4
        and x.device.type == weight.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and x.is_contiguous()
        and weight.shape[2:] == (3, 3)
        and x.shape[1] == groups * weight.shape[1]
        and weight.shape[0] % groups == 0
        and x.numel() > 0
        and (bias is None or _bias_fits(bias, weight))
        and library() is not None  # None with SSVAE_NATIVE=0 (`native.load`)
    )


def _bias_fits(bias: Tensor, weight: Tensor) -> bool:
    """A float32 CPU bias of one number per output channel of `weight`."""
    return (
        bias.device.type == "cpu" and bias.dtype == torch.float32 and bias.shape == weight.shape[:1]
    )


class BatchNormReLU(NamedTuple):
    """A convolution's input x as relu((source − centre) · scale + shift) per channel, which
    the backward computes again as it reads x (`conv2d`'s ``input_from``) rather than keep x:
    the weight gradient's rows are the batch norm's output, to the bit (the C kernels round as
    ``batchnorm.c``'s forward does). source: x's shape; the rest float32 [channels]."""

    source: Tensor
    centre: Tensor
    scale: Tensor
    shift: Tensor

    def describes(self, x: Tensor) -> bool:
        """Whether the C kernels can read x this way: source like x, NCHW contiguous; one
        contiguous float32 number per channel in each of the rest."""
        return (
            self.source.shape == x.shape
            and self.source.dtype == torch.float32
            and self.source.device.type == "cpu"
            and self.source.is_contiguous()
            and all(
                t.shape == x.shape[1:2]
                and t.dtype == torch.float32
                and t.device.type == "cpu"
                and t.is_contiguous()
                for t in (self.centre, self.scale, self.shift)
            )
        )


def _check(code: int) -> None:
    if code:
        raise MemoryError("conv3x3.c could not allocate its scratch rows")


def forward(x: Tensor, weight: Tensor, bias: Tensor | None, groups: int = 1) -> Tensor:
    """conv2d(x, weight, bias, padding=1, groups) where `applies`, no autograd.

    x: [N, groups * ci, H, W], weight: [groups * co, ci, 3, 3], bias: [groups * co] or None.
    -> [N, groups * co, H, W] contiguous.
    """
    lib = library()
    assert lib is not None
    n, _, h, w = x.shape
    co, ci = weight.shape[0] // groups, weight.shape[1]
    weight = weight.contiguous()
    bias = None if bias is None else bias.contiguous()  # held until C returns, not a bare address
    b = None if bias is None else bias.data_ptr()
    y = x.new_empty(n, groups * co, h, w)
    threads = torch.get_num_threads()
    shape = (n, groups, ci, co, h, w, threads)
    _check(lib.conv3x3_forward(x.data_ptr(), weight.data_ptr(), b, y.data_ptr(), *shape))
    return y


def weight_grad(
    x: Tensor | BatchNormReLU, grad: Tensor, ci: int, groups: int = 1
) -> tuple[Tensor, Tensor]:
    """∂L/∂weight [groups * co, ci, 3, 3] and ∂L/∂bias [groups * co] of `forward` from x (or
    how to compute it: `BatchNormReLU`) and grad [N, groups * co, H, W] (contiguous), summed
    in float64 over fixed image blocks."""
    lib = library()
    assert lib is not None
    bn = (None, None, None)
    if isinstance(x, BatchNormReLU):
        bn = tuple(t.data_ptr() for t in x[1:])  # type: ignore[assignment]
        x = x.source
    n, _, h, w = x.shape
    co = grad.shape[1] // groups
    weights = groups * co * ci * 9
    per_block = max(1, BLOCK_PIXELS // (h * w))
    blocks = -(-n // per_block)
    parts = torch.empty(blocks, weights + groups * co, LANES, dtype=torch.float32)
    shape = (n, per_block, groups, ci, co, h, w, *bn, torch.get_num_threads())
    _check(lib.conv3x3_weight_grad(x.data_ptr(), grad.data_ptr(), parts.data_ptr(), *shape))
    total = parts.double().sum(dim=(0, 2)).float()
    return total[:weights].view(groups * co, ci, 3, 3), total[weights:]


def flipped(weight: Tensor, groups: int = 1) -> Tensor:
    """The weight whose `forward` is the input gradient: each group's [co, ci, 3, 3] turned
    to [ci, co, 3, 3] and rotated by 180°. [groups * co, ci, 3, 3] -> [groups * ci, co, 3, 3]."""
    out, ci = weight.shape[0], weight.shape[1]
    grouped = weight.reshape(groups, out // groups, ci, 3, 3).transpose(1, 2)
    return grouped.flip(3, 4).reshape(groups * ci, out // groups, 3, 3).contiguous()


class _Conv3x3(torch.autograd.Function):
    """conv2d(x, weight, bias, padding=1, groups) by the C kernels, with its gradients; with
    `input_from` (a `BatchNormReLU` describing x), that is kept for the backward, not x."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        groups: int,
        input_from: BatchNormReLU | None,
    ) -> Tensor:
        ctx.save_for_backward(weight, *(input_from or (x,)))
        ctx.groups = groups  # type: ignore[attr-defined]
        ctx.has_bias = bias is not None  # type: ignore[attr-defined]
        return forward(x, weight, bias, groups)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        weight, *kept = ctx.saved_tensors
        x = kept[0] if len(kept) == 1 else BatchNormReLU(*kept)
        grad = grad.contiguous()
        assert grad.dtype == torch.float32 and grad.shape[0] == kept[0].shape[0]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = forward(grad, flipped(weight, ctx.groups), None, ctx.groups)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            grad_w, grad_b = weight_grad(x, grad, weight.shape[1], ctx.groups)
        return grad_x, grad_w, grad_b if ctx.has_bias else None, None, None


def conv2d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    groups: int = 1,
    input_from: BatchNormReLU | None = None,
) -> Tensor:
    """`F.conv2d(x, weight, bias, padding=1, groups=groups)` for 3×3 weights, by the C kernels
    where they apply (`applies`), else by PyTorch. x: [N, groups * ci, H, W].

    input_from: how x was computed from a tensor the graph keeps anyway (a batch norm's input:
    `batchnorm.relu_input`). Where the C kernels take it, the backward keeps that in x's place,
    so x itself is freed once the caller drops it (at 256 px, 87 MiB less per step) and the
    weight gradient computes each row of x again as it reads it; the same gradients to the
    bit. Ignored (x kept) elsewhere."""
    if applies(x, weight, bias, groups):
        if input_from is not None and not input_from.describes(x):
            input_from = None
        return _Conv3x3.apply(x, weight, bias, groups, input_from)
    return nn.functional.conv2d(x, weight, bias, padding=1, groups=groups)


class Conv2d(nn.Conv2d):
    """`nn.Conv2d` whose 3×3, stride-1, zero-padded-by-1 convolutions take the C kernels
    where they apply (`applies`); every other configuration and input is PyTorch's. The same
    parameters and state dict."""

    def fits(self) -> bool:
        """3×3, stride 1, zero padding 1, no dilation: the convolution the kernels compute."""
        return (
            self.kernel_size == (3, 3)
            and self.stride == (1, 1)
            and self.padding == (1, 1)
            and self.dilation == (1, 1)
            and self.padding_mode == "zeros"
        )

    def forward(self, x: Tensor, input_from: BatchNormReLU | None = None) -> Tensor:
        """The convolution of x; input_from: as `conv2d` takes it."""
        if self.fits():  # `conv2d`'s fallback is then this layer's own convolution
            return conv2d(x, self.weight, self.bias, self.groups, input_from)
        return super().forward(x)
