"""Activations computed again in the backward (`ssvae_core.recompute`): what autograd keeps,
and that the gradients do not change by a bit."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import Tensor

from ssvae_core import encoder as encoder_module
from ssvae_core.batchnorm import BatchNorm2d, library, relu_rebuild
from ssvae_core.encoder import CentreOfMassEncoder
from ssvae_core.recompute import rebuilt


def _sin_of_double(x: Tensor, rebuild: object) -> tuple[Tensor, weakref.ref[Tensor], list[int]]:
    """z = sin(2x), whose backward needs y = 2x; with y rebuilt by `rebuild(x)`."""
    calls: list[int] = []

    def again() -> Tensor:
        calls.append(1)
        return rebuild(x.detach())  # type: ignore[operator]

    y = x * 2  # its own backward keeps nothing of y
    with rebuilt(y, again):
        z = y.sin()  # keeps y for cos(y)
    kept = weakref.ref(y)
    del y
    return z, kept, calls


def test_the_tensor_is_not_kept_and_the_gradient_is_the_same() -> None:
    x = torch.linspace(-2, 2, 101, requires_grad=True)
    z, kept, calls = _sin_of_double(x, lambda v: v * 2)
    gc.collect()
    assert kept() is None  # freed after the forward: autograd holds the rebuild instead
    z.sum().backward()
    assert calls == [1]
    assert torch.equal(x.grad, 2 * torch.cos(2 * x.detach()))  # type: ignore[arg-type]


def test_the_backward_uses_what_the_rebuild_gives() -> None:
    # the check above cannot pass by accident: a wrong rebuild gives a wrong gradient
    x = torch.linspace(-2, 2, 101, requires_grad=True)
    z, _, calls = _sin_of_double(x, lambda v: v * 2 + 1)
    z.sum().backward()
    assert calls == [1]
    assert not torch.allclose(x.grad, 2 * torch.cos(2 * x.detach()))  # type: ignore[arg-type]


def test_without_a_rebuild_or_gradients_nothing_changes() -> None:
    x = torch.linspace(-2, 2, 11, requires_grad=True)
    y = x * 2
    with rebuilt(y, None):
        z = y.sin()
    kept = weakref.ref(y)
    del y
    assert kept() is not None  # kept by autograd as usual
    z.sum().backward()
    with torch.no_grad(), rebuilt(x * 2, lambda: pytest.fail("no backward, no rebuild")):
        (x * 2).sin()


@pytest.fixture
def kernels() -> None:
    if library() is None:
        pytest.skip("no C compiler: the C kernels could not be built")


def test_the_c_batch_norms_relu_output_is_rebuilt_to_the_bit(kernels: None) -> None:
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(4, 6, 9, 11, generator=g) + 0.5).requires_grad_()
    bn = BatchNorm2d(6)
    y = bn.forward_relu(x)
    rebuild = relu_rebuild(y)
    assert rebuild is not None
    assert torch.equal(rebuild(), y.detach())
    assert relu_rebuild(bn(x)) is None  # no ReLU: not this kernel's output
    assert relu_rebuild(torch.relu(x)) is None
    assert relu_rebuild(bn.forward_relu(x.contiguous(memory_format=torch.channels_last))) is None


def _step(monkeypatch: pytest.MonkeyPatch, rebuild: bool) -> list[Tensor]:
    if not rebuild:
        monkeypatch.setattr(encoder_module, "relu_rebuild", lambda y: None)
    torch.manual_seed(0)
    net = CentreOfMassEncoder()
    g = torch.Generator().manual_seed(1)
    frames = torch.rand(5, 3, 24, 20, generator=g)
    z = net(frames)
    (z * torch.arange(6.0)).sum().backward()
    return [z.detach(), *(p.grad for p in net.parameters())]  # type: ignore[misc]


def test_fig2_gradients_are_the_same_bits_with_the_rebuild(
    kernels: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    called: list[int] = []
    original = encoder_module.relu_rebuild

    def counted(y: Tensor) -> object:
        rebuild = original(y)
        assert rebuild is not None
        return lambda: (called.append(1), rebuild())[1]

    with monkeypatch.context() as patch:
        patch.setattr(encoder_module, "relu_rebuild", counted)
        with_rebuild = _step(patch, rebuild=True)
    without = _step(monkeypatch, rebuild=False)
    assert called == [1]  # the second convolution's weight gradient took the rebuilt maps
    assert all(torch.equal(a, b) for a, b in zip(with_rebuild, without, strict=True))
