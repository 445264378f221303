"""The rows path of batch norm (`ssvae_core.batchnorm`) against PyTorch's and float64."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from ssvae_core.batchnorm import BatchNorm2d, _RowsBatchNorm, fast_applies

CL = torch.channels_last


def _frames(*shape: int, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    # an offset mean, as after a convolution with a bias: the variance must not cancel
    return (torch.randn(shape, generator=g) * 2 + 3).contiguous(memory_format=CL)


def _pair(channels: int, momentum: float | None = 0.1) -> tuple[nn.BatchNorm2d, BatchNorm2d]:
    native, ours = (
        nn.BatchNorm2d(channels, momentum=momentum),
        BatchNorm2d(channels, momentum=momentum),
    )
    with torch.no_grad():
        native.weight.uniform_(0.5, 2.0)
        native.bias.normal_()
    ours.load_state_dict(native.state_dict())
    return native, ours


def _forward_backward(bn: nn.Module, x: Tensor, grad: Tensor) -> list[Tensor]:
    x = x.detach().clone().requires_grad_()
    out = bn(x)
    out.backward(grad)
    return [out, x.grad, bn.weight.grad, bn.bias.grad]  # type: ignore[list-item]


@pytest.mark.parametrize("channels", [3, 6])
def test_training_step_matches_float64_better_than_pytorchs_own(channels: int) -> None:
    x, grad = _frames(12, channels, 16, 20), _frames(12, channels, 16, 20, seed=1)
    native, ours = _pair(channels)
    assert fast_applies(x)
    reference = nn.BatchNorm2d(channels).double()
    reference.load_state_dict(native.state_dict())
    exact = _forward_backward(reference, x.double(), grad.double())
    theirs, mine = _forward_backward(native, x, grad), _forward_backward(ours, x, grad)
    names = ["out", "dx", "dweight", "dbias"]
    for name, want, got, pytorch in zip(names, exact, mine, theirs, strict=True):
        scale = want.abs().max()
        err = (got.double() - want).abs().max()
        pytorch_err = (pytorch.double() - want).abs().max()
        assert err <= 5e-5 * scale, name  # dweight sums 3840 terms of either sign
        assert err <= max(pytorch_err, 1e-7 * scale), name  # no worse than the native kernel
    assert mine[0].is_contiguous(memory_format=CL) and mine[1].is_contiguous(memory_format=CL)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_running_statistics_and_eval_mode_as_pytorchs(momentum: float | None) -> None:
    native, ours = _pair(6, momentum)
    for seed in range(3):
        x = _frames(8, 6, 10, 12, seed=seed)
        native(x), ours(x)
    for key, value in native.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value, rtol=1e-5, atol=1e-6)
    assert int(ours.num_batches_tracked) == 3
    native.eval(), ours.eval()
    x = _frames(5, 6, 10, 12, seed=9)
    torch.testing.assert_close(ours(x), native(x), rtol=1e-5, atol=1e-5)
    assert ours(x).is_contiguous(memory_format=CL)


def test_other_inputs_take_pytorchs_kernel_exactly() -> None:
    native, ours = _pair(6)
    x = _frames(4, 6, 8, 8).contiguous()  # NCHW: not the rows path
    assert not fast_applies(x) and not fast_applies(x.double().contiguous(memory_format=CL))
    assert torch.equal(ours(x), native(x))
    assert torch.equal(ours.running_var, native.running_var)


def test_rows_backward_passes_gradcheck() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 4, 5, 6, generator=g, dtype=torch.float64).contiguous(memory_format=CL)
    weight = torch.rand(4, generator=g, dtype=torch.float64) + 0.5
    bias = torch.randn(4, generator=g, dtype=torch.float64)
    inputs = (x.requires_grad_(), weight.requires_grad_(), bias.requires_grad_())

    def out(*args: Tensor) -> Tensor:
        return _RowsBatchNorm.apply(*args, 1e-5)[0]  # type: ignore[no-any-return]

    assert torch.autograd.gradcheck(out, inputs)
