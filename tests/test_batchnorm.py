"""Batch norm's two paths (`ssvae_core.batchnorm`: the C kernels on NCHW, the rows path on
channels-last) against PyTorch's kernel and float64, with and without the fused ReLU."""

from __future__ import annotations

import os

import pytest
import torch
from torch import Tensor, nn

from ssvae_core import batchnorm
from ssvae_core import native as switch
from ssvae_core.batchnorm import BatchNorm2d, _RowsBatchNorm, fast_applies, native_applies

CL = torch.channels_last
NCHW = torch.contiguous_format


@pytest.fixture
def kernels() -> None:
    """The C path's tests need the kernels: skipped without a compiler, failed in CI."""
    if batchnorm.library() is None and not os.environ.get("SSVAE_CI"):
        pytest.skip("no C compiler: the C kernels could not be built")


def _frames(*shape: int, seed: int = 0, layout: torch.memory_format = CL) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    # an offset mean, as after a convolution with a bias: the variance must not cancel
    return (torch.randn(shape, generator=g) * 2 + 3).contiguous(memory_format=layout)


def _pair(channels: int, momentum: float | None = 0.1) -> tuple[nn.BatchNorm2d, BatchNorm2d]:
    native, ours = (
        nn.BatchNorm2d(channels, momentum=momentum),
        BatchNorm2d(channels, momentum=momentum),
    )
    g = torch.Generator().manual_seed(0)  # not the global RNG: its seed varies per run
    with torch.no_grad():
        native.weight.uniform_(0.5, 2.0, generator=g)
        native.bias.normal_(generator=g)
    ours.load_state_dict(native.state_dict())
    return native, ours


def _forward_backward(bn: nn.Module, x: Tensor, grad: Tensor, relu: bool = False) -> list[Tensor]:
    x = x.detach().clone().requires_grad_()
    if not relu:
        out = bn(x)
    elif isinstance(bn, BatchNorm2d):
        out = bn.forward_relu(x)
    else:
        out = torch.relu(bn(x))
    out.backward(grad)
    return [out, x.grad, bn.weight.grad, bn.bias.grad]  # type: ignore[list-item]


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize(
    ("layout", "shape"),
    [(CL, (12, 6, 16, 20)), (NCHW, (12, 6, 16, 20)), (NCHW, (5, 3, 7, 9)), (CL, (5, 3, 7, 9))],
)
def test_training_step_matches_float64_better_than_pytorchs_own(
    layout: torch.memory_format,
    shape: tuple[int, int, int, int],
    relu: bool,
    request: pytest.FixtureRequest,
) -> None:
    """Both paths; 7 × 9 pixels leave the C kernels a tail of 7 floats after each 8."""
    if layout == NCHW:
        request.getfixturevalue("kernels")
    channels = shape[1]
    x = _frames(*shape, layout=layout)
    grad = _frames(*shape, seed=1, layout=layout)
    native, ours = _pair(channels)
    assert fast_applies(x) if layout == CL else native_applies(x, ours.weight, ours.bias)
    reference = nn.BatchNorm2d(channels).double()
    reference.load_state_dict(native.state_dict())
    exact = _forward_backward(reference, x.double(), grad.double(), relu)
    theirs = _forward_backward(native, x, grad, relu)
    mine = _forward_backward(ours, x, grad, relu)
    names = ["out", "dx", "dweight", "dbias"]
    for name, want, got, pytorch in zip(names, exact, mine, theirs, strict=True):
        scale = want.abs().max()
        err = (got.double() - want).abs().max()
        pytorch_err = (pytorch.double() - want).abs().max()
        assert err <= 5e-5 * scale, name  # dweight sums 3840 terms of either sign
        # no worse than the native kernel, but for one rounding of an output (5.96e-8)
        assert err <= max(pytorch_err, 1.5e-7 * scale), name
    assert mine[0].is_contiguous(memory_format=layout)
    assert mine[1].is_contiguous(memory_format=layout)
    path = "_NativeBatchNorm" if layout == NCHW else "_RowsBatchNorm"
    assert path in type(mine[0].grad_fn).__name__ or path in str(mine[0].grad_fn.next_functions)


def test_the_fused_relu_is_the_relu_of_the_output_to_the_bit(kernels: None) -> None:
    x = _frames(6, 6, 10, 11, layout=NCHW)
    _, ours = _pair(6)
    ours.bias.data[:3] = -3.0  # many zeros: the mask matters
    fused = ours.forward_relu(x)
    assert torch.equal(fused, torch.relu(ours(x)))
    assert 0.3 < float((fused == 0).float().mean()) < 0.9


def test_the_same_bits_at_any_thread_count(kernels: None) -> None:
    x, grad = _frames(9, 6, 33, 40, layout=NCHW), _frames(9, 6, 33, 40, seed=2, layout=NCHW)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            _, ours = _pair(6)
            results.append([*_forward_backward(ours, x, grad, relu=True), ours.running_var])
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other, strict=True))


def test_what_the_kernels_would_misread_is_left_to_pytorch(kernels: None) -> None:
    """Every pointer the C code is given is checked first."""
    x, weight, bias = torch.rand(2, 3, 8, 8), torch.rand(3), torch.rand(3)
    assert native_applies(x, weight, bias)
    refused = {
        "channels-last x": (x.contiguous(memory_format=CL), weight, bias),
        "a strided x": (torch.rand(2, 3, 8, 16)[..., ::2], weight, bias),
        "float64 x": (x.double(), weight.double(), bias.double()),
        "float64 bias": (x, weight, bias.double()),
        "short weight": (x, weight[:2], bias),
        "long bias": (x, weight, torch.rand(4)),
        "bias elsewhere": (x, weight, torch.empty(3, device="meta")),
        "one pixel per channel": (x[:1, :, :1, :1].contiguous(), weight, bias),
        "3-D x": (x[0], weight, bias),
        "float64 running variance": (x, weight, bias, torch.zeros(3), torch.ones(3).double()),
        "short running mean": (x, weight, bias, torch.zeros(2), torch.ones(3)),
    }
    for name, args in refused.items():
        assert not native_applies(*args), name
    assert native_applies(x, weight, bias, torch.zeros(3), torch.ones(3))


def test_eval_mode_with_float64_running_statistics_is_refused_as_pytorch_does(
    kernels: None,
) -> None:
    """Buffers the C code would misread as float32 (float64, as after `.double()` on them
    alone) go to PyTorch's kernel, which raises, rather than to C."""
    theirs, ours = _pair(6)
    x = _frames(3, 6, 8, 8, layout=NCHW)
    for norm in (theirs, ours):
        norm.running_mean = norm.running_mean.double() + 0.5  # type: ignore[operator]
        norm.running_var = norm.running_var.double() * 2  # type: ignore[operator]
        norm.eval()
        with torch.no_grad(), pytest.raises(RuntimeError, match="Double"):
            norm(x)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_c_running_statistics_and_eval_mode_as_pytorchs(
    kernels: None, momentum: float | None, relu: bool
) -> None:
    theirs, ours = _pair(6, momentum)
    for seed in range(3):
        x = _frames(8, 6, 10, 12, seed=seed, layout=NCHW)
        theirs(x), ours.forward_relu(x) if relu else ours(x)
    for key, value in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value, rtol=1e-6, atol=1e-7)
    theirs.eval(), ours.eval()
    x = _frames(5, 6, 10, 12, seed=9, layout=NCHW)
    want = torch.relu(theirs(x)) if relu else theirs(x)
    with torch.no_grad():  # the C kernels (no gradient wanted)
        got = ours.forward_relu(x) if relu else ours(x)
        assert got.grad_fn is None and got.is_contiguous()
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    with_grad = ours.forward_relu(x) if relu else ours(x)  # PyTorch's, for autograd
    torch.testing.assert_close(with_grad, want, rtol=1e-6, atol=1e-6)


def test_input_of_the_wrong_rank_is_refused_as_pytorch_does() -> None:
    with pytest.raises(ValueError, match="expected 4D input"):
        BatchNorm2d(6)(torch.rand(4, 6, 5))


def test_switched_off_is_pytorchs_kernel(kernels: None, monkeypatch: pytest.MonkeyPatch) -> None:
    x = _frames(4, 6, 8, 8, layout=NCHW)
    native, ours = _pair(6)
    monkeypatch.setenv(switch.DISABLE_ENV, "0")
    assert not native_applies(x, ours.weight, ours.bias)
    assert torch.equal(ours(x), native(x))


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
    x = _frames(4, 6, 8, 8).double().contiguous()  # float64 NCHW: neither path
    native, ours = native.double(), ours.double()
    assert not fast_applies(x) and not native_applies(x, ours.weight, ours.bias)
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
