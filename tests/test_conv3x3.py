"""The C kernels of Fig. 2's convolutions (`ssvae_core.conv3x3`) against float64 PyTorch."""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ssvae_core import conv3x3, native
from ssvae_core.batchnorm import BatchNorm2d, relu_input
from ssvae_core.encoder import CentreOfMassEncoder


@pytest.fixture(autouse=True)
def built() -> None:
    """The kernels; without a C compiler they cannot run (a failure in CI, which has one)."""
    if conv3x3.library() is None:
        if os.environ.get("SSVAE_CI"):
            pytest.fail("conv3x3.c did not build on the CI machine")
        pytest.skip("no C compiler: conv3x3.c is not built")


def _tensor(*shape: int, seed: int) -> Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _both(
    x: Tensor, weight: Tensor, bias: Tensor | None, grad: Tensor, groups: int
) -> tuple[list[Tensor], list[Tensor]]:
    """(float64 PyTorch, float32 C kernels): output and the gradients of x, weight, bias."""
    results = []
    for dtype, conv in ((torch.float64, F.conv2d), (torch.float32, None)):
        leaves = [t.detach().to(dtype).requires_grad_() for t in (x, weight)]
        b = None if bias is None else bias.detach().to(dtype).requires_grad_()
        if conv is None:
            assert conv3x3.applies(leaves[0], leaves[1], b, groups)
            out = conv3x3.conv2d(leaves[0], leaves[1], b, groups)
            assert type(out.grad_fn).__name__ == "_Conv3x3Backward"  # the C path ran
        else:
            out = conv(leaves[0], leaves[1], b, padding=1, groups=groups)
        out.backward(grad.to(dtype))
        found = [out, *(t.grad for t in leaves)]
        results.append(found + ([] if b is None else [b.grad]))
    return results[0], results[1]  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("n", "ci", "co", "height", "width", "groups", "bias"),
    [
        (4, 3, 6, 16, 16, 1, True),  # Fig. 2's first layer
        (4, 6, 3, 16, 16, 1, True),  # and its second
        (3, 6, 3, 9, 17, 1, True),  # a width that is not a multiple of 8
        (2, 3, 6, 5, 3, 1, True),  # narrower than one register
        (2, 2, 2, 1, 1, 1, True),  # one pixel: only the centre tap sees the image
        (2, 3, 11, 7, 12, 1, True),  # more output channels than one block (8)
        (3, 3, 6, 7, 8, 4, True),  # grouped, as fused runs
        (2, 6, 3, 8, 10, 1, False),  # no bias
    ],
)
def test_forward_and_gradients_match_float64(
    n: int, ci: int, co: int, height: int, width: int, groups: int, bias: bool
) -> None:
    x = _tensor(n, groups * ci, height, width, seed=0)
    weight = _tensor(groups * co, ci, 3, 3, seed=1)
    b = _tensor(groups * co, seed=2) if bias else None
    grad = _tensor(n, groups * co, height, width, seed=3)
    exact, ours = _both(x, weight, b, grad, groups)
    for name, want, got in zip(["out", "dx", "dweight", "dbias"], exact, ours, strict=False):
        assert got.dtype == torch.float32 and got.shape == want.shape, name
        # float32 sums of up to n * H * W terms of either sign
        assert (got.double() - want).abs().max() <= 2e-5 * want.abs().max(), name


def test_weight_gradient_is_closer_to_float64_than_onednns() -> None:
    """Each image summed on its own, then the blocks in float64: on Fig. 2's first layer at
    `small`'s size the weight gradient is many times closer to the exact one than oneDNN's."""
    x, grad = _tensor(60, 3, 64, 64, seed=0), _tensor(60, 6, 64, 64, seed=1)
    exact = torch.nn.grad.conv2d_weight(x, (6, 3, 3, 3), grad, padding=1)
    cl = torch.channels_last
    x_cl, grad_cl = (t.float().contiguous(memory_format=cl) for t in (x, grad))
    onednn = torch.nn.grad.conv2d_weight(x_cl, (6, 3, 3, 3), grad_cl, padding=1)
    ours, _ = conv3x3.weight_grad(x.float(), grad.float(), ci=3)
    assert (ours.double() - exact).abs().max() * 5 < (onednn.double() - exact).abs().max()


def test_the_same_numbers_at_any_thread_count() -> None:
    """9 images of 128 × 128 px: three blocks of the weight gradient, over 1 to 3 threads."""
    x, grad = _tensor(9, 6, 128, 128, seed=0).float(), _tensor(9, 3, 128, 128, seed=1).float()
    assert conv3x3.BLOCK_PIXELS // (128 * 128) == 4
    weight, bias = _tensor(3, 6, 3, 3, seed=2).float(), _tensor(3, seed=3).float()
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            results.append([conv3x3.forward(x, weight, bias), *conv3x3.weight_grad(x, grad, 6)])
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other, strict=True))


@pytest.mark.parametrize(
    "case", ["channels_last", "float64", "stride", "padding", "kernel", "dilation", "reflect"]
)
def test_other_inputs_and_layers_are_pytorchs(case: str) -> None:
    """`Conv2d` takes the C kernels only where they compute the same convolution."""
    settings = {
        "stride": {"stride": 2},
        "padding": {"padding": 2},
        "kernel": {"kernel_size": 5, "padding": 2},
        "dilation": {"dilation": 2, "padding": 2},
        "reflect": {"padding_mode": "reflect"},
    }.get(case, {})
    theirs = nn.Conv2d(3, 6, **{"kernel_size": 3, "padding": 1, **settings})  # type: ignore[arg-type]
    ours = conv3x3.Conv2d(3, 6, **{"kernel_size": 3, "padding": 1, **settings})  # type: ignore[arg-type]
    ours.load_state_dict(theirs.state_dict())
    x = _tensor(2, 3, 10, 10, seed=0).float()
    if case == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    if case == "float64":
        x, theirs, ours = x.double(), theirs.double(), ours.double()
    out = ours(x)
    assert type(out.grad_fn).__name__ != "_Conv3x3Backward"
    assert torch.equal(out, theirs(x))


def test_what_the_kernels_would_misread_is_left_to_pytorch() -> None:
    """Every pointer the C code is given is checked first: a bias of another dtype, length or
    device, a weight elsewhere, or a non-contiguous input goes to `F.conv2d` (which raises
    where the input is wrong, rather than reading past a buffer)."""
    x, weight, bias = torch.rand(2, 3, 8, 8), torch.rand(6, 3, 3, 3), torch.rand(6)
    assert conv3x3.applies(x, weight, bias)
    refused = {
        "float64 bias": (x, weight, bias.double()),
        "short bias": (x, weight, bias[:5]),
        "bias elsewhere": (x, weight, torch.empty(6, device="meta")),
        "weight elsewhere": (x, torch.empty(6, 3, 3, 3, device="meta"), None),
        "float64 weight": (x, weight.double(), None),
        "channels-last x": (x.contiguous(memory_format=torch.channels_last), weight, None),
        "5x5 weight": (x, torch.rand(6, 3, 5, 5), None),
        "wrong groups": (x, torch.rand(6, 1, 3, 3), None),
        "empty batch": (x[:0], weight, None),
    }
    for name, args in refused.items():
        assert not conv3x3.applies(*args), name
    with pytest.raises(RuntimeError):  # PyTorch's own error, not a read past the bias
        conv3x3.conv2d(x, weight, bias[:5])


def test_float32_gradients_under_a_float64_default_dtype() -> None:
    x, grad = torch.rand(3, 3, 9, 9), torch.rand(3, 6, 9, 9)
    want = conv3x3.weight_grad(x, grad, ci=3)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        got = conv3x3.weight_grad(x, grad, ci=3)
    finally:
        torch.set_default_dtype(default)
    assert all(torch.equal(a, b) for a, b in zip(want, got, strict=True))


def test_the_c_path_in_fig2_and_its_state_dict_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    encoder = CentreOfMassEncoder()
    convs = [m for m in encoder.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 2 and all(isinstance(m, conv3x3.Conv2d) for m in convs)
    plain = nn.Conv2d(3, 6, kernel_size=3, padding=1)
    assert convs[0].state_dict().keys() == plain.state_dict().keys()
    frames = torch.rand(4, 3, 16, 16)
    maps = encoder.maps(frames)
    assert type(maps.grad_fn.next_functions[0][0].next_functions[0][0]).__name__ == (
        "_Conv3x3Backward"
    )  # sigmoid <- batch norm <- the C kernels
    monkeypatch.setenv(native.DISABLE_ENV, "0")  # the same network on PyTorch's kernels
    theirs = encoder.maps(frames)
    assert "_Conv3x3" not in str(theirs.grad_fn.next_functions[0][0].next_functions[0][0])
    assert torch.allclose(maps, theirs, atol=1e-6)


def test_layout_follows_the_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert conv3x3.memory_format(cpu) == torch.contiguous_format
    monkeypatch.setenv(native.DISABLE_ENV, "0")
    assert conv3x3.memory_format(cpu) == torch.channels_last
    x, weight = torch.rand(1, 3, 8, 8), torch.rand(6, 3, 3, 3)
    assert not conv3x3.applies(x, weight)


def test_a_forked_child_convolves_as_pytorchs_own_ops_do() -> None:
    """The kernels run on PyTorch's OpenMP threads, whose pool does not survive a fork: a
    forked child computes on one thread, as PyTorch's own ops need there (DataLoader workers
    set it), and gets the parent's numbers."""
    x, weight = torch.rand(8, 3, 128, 128), torch.rand(6, 3, 3, 3)
    norm = BatchNorm2d(6)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        want = norm.forward_relu(conv3x3.forward(x, weight, None))  # the pool in use
        pid = os.fork()
        if pid == 0:  # the child: exit 0 only with the same numbers
            torch.set_num_threads(1)
            got = norm.forward_relu(conv3x3.forward(x, weight, None))
            os._exit(0 if torch.equal(got, want) else 1)
        deadline = time.monotonic() + 20
        while (done := os.waitpid(pid, os.WNOHANG)) == (0, 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        if done == (0, 0):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child's convolution hung")
        assert os.waitstatus_to_exitcode(done[1]) == 0
    finally:
        torch.set_num_threads(threads)


def test_a_strided_bias_is_read_while_its_copy_is_alive() -> None:
    """`forward` keeps the contiguous copy of a strided bias until C has read it (a bare
    address of a freed copy read the next allocation's bytes)."""
    x, weight = torch.rand(4, 3, 16, 16), torch.rand(6, 3, 3, 3)
    bias = (torch.rand(12) + 100)[::2]
    assert conv3x3.applies(x, weight, bias)
    for _ in range(20):
        torch.testing.assert_close(
            conv3x3.conv2d(x, weight, bias), F.conv2d(x, weight, bias, padding=1)
        )


def _bn_relu_then_conv(
    x: Tensor, weight: Tensor, grad: Tensor, groups: int, described: bool
) -> tuple[list[Tensor], int]:
    """BN + ReLU (C kernels) then a C convolution, fwd + bwd; with or without `input_from`.
    -> (output and every gradient, the bytes the convolution's backward keeps)."""
    torch.manual_seed(3)
    bn = BatchNorm2d(x.shape[1])
    with torch.no_grad():
        bn.bias.uniform_(-1, 1, generator=torch.Generator().manual_seed(4))
    leaf = x.detach().clone().requires_grad_()
    w = weight.detach().clone().requires_grad_()
    hidden = bn.forward_relu(leaf)
    out = conv3x3.conv2d(hidden, w, None, groups, relu_input(hidden) if described else None)
    node = out.grad_fn
    kept = sum(t.untyped_storage().nbytes() for t in node.saved_tensors)  # type: ignore[union-attr]
    out.backward(grad)
    return [out, leaf.grad, w.grad, bn.weight.grad, bn.bias.grad], kept  # type: ignore[list-item]


@pytest.mark.parametrize(("groups", "width"), [(1, 20), (2, 13), (1, 8)])
def test_a_batch_norms_output_read_from_its_input_gives_the_same_bits(
    groups: int, width: int
) -> None:
    x = (_tensor(5, 6 * groups, 11, width, seed=0) + 0.3).float()
    weight = _tensor(3 * groups, 6, 3, 3, seed=1).float()
    grad = _tensor(5, 3 * groups, 11, width, seed=2).float()
    kept, kept_bytes = _bn_relu_then_conv(x, weight, grad, groups, described=False)
    read, read_bytes = _bn_relu_then_conv(x, weight, grad, groups, described=True)
    assert all(torch.equal(a, b) for a, b in zip(kept, read, strict=True))
    # what the backward keeps: the batch norm's input (kept by it anyway) instead of its output
    assert kept_bytes == x.numel() * 4 + weight.numel() * 4
    assert read_bytes == x.numel() * 4 + weight.numel() * 4 + 3 * x.shape[1] * 4


def test_a_wrong_description_gives_another_weight_gradient() -> None:
    # the check above cannot pass by accident: the kernel reads what the description says
    g = torch.Generator().manual_seed(0)
    source = torch.randn(3, 6, 9, 10, generator=g)
    grad = torch.randn(3, 3, 9, 10, generator=g)
    centre, scale, shift = torch.zeros(6), torch.ones(6), torch.zeros(6)
    y = torch.relu(source)
    described = conv3x3.BatchNormReLU(source, centre, scale, shift)
    right = conv3x3.weight_grad(described, grad, 6)
    plain = conv3x3.weight_grad(y, grad, 6)
    assert all(torch.equal(a, b) for a, b in zip(right, plain, strict=True))
    shifted = conv3x3.BatchNormReLU(source, centre, scale, shift + 0.5)
    assert not torch.equal(conv3x3.weight_grad(shifted, grad, 6)[0], right[0])
    # a description the kernels cannot read is not used: x is kept as it is
    assert not conv3x3.BatchNormReLU(source.double(), centre, scale, shift).describes(y)
    assert not conv3x3.BatchNormReLU(source, centre[:3], scale, shift).describes(y)
