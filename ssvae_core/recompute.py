"""Activations computed again in the backward pass instead of kept from the forward.

Autograd keeps every tensor a backward formula needs from the forward until that backward
runs, so a training step's memory peaks at the start of its backward. Fig. 2 keeps 21 maps
per frame there (the frames, 6 + 6 + 3 + 3 maps); at the paper's 256 px, 58 distinct frames a
step, that is 305 MiB. Six of them, the output of the first batch norm and its ReLU, are kept
only for the second convolution's weight gradient, and are a function of what the batch
norm's own backward keeps anyway (its input and a few numbers per channel): computing them
again costs one pass over memory in the backward and keeps 87 MiB less per step.

`rebuilt(y, rebuild)`: inside the block, where autograd would keep y it keeps `rebuild`,
which the backward calls when it needs y (PyTorch's ``saved_tensors_hooks``). `rebuild`
must give y to the bit, so that no gradient changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor


class _Rebuild:
    """What autograd keeps in y's place: the function that computes y again."""

    __slots__ = ("rebuild",)

    def __init__(self, rebuild: Callable[[], Tensor]) -> None:
        self.rebuild = rebuild


def _identity(t: Tensor) -> tuple[object, ...]:
    """Same storage, offset, shape, strides and dtype: the same numbers."""
    return (t.data_ptr(), t.dtype, t.device, tuple(t.shape), t.stride())


@contextmanager
def rebuilt(y: Tensor, rebuild: Callable[[], Tensor] | None) -> Iterator[None]:
    """Within the block, the tensors autograd saves for the backward are kept as they are,
    except y: in its place autograd keeps `rebuild` and calls it when the backward needs y.

    rebuild: a function giving y to the bit, from tensors the graph keeps anyway (holding a
    tensor that would otherwise be freed saves nothing); None leaves y kept as usual.
    """
    if rebuild is None or not (torch.is_grad_enabled() and y.requires_grad):
        yield
        return
    kept, token = _identity(y), _Rebuild(rebuild)  # not y itself: the block must not hold it

    def pack(t: Tensor) -> Tensor | _Rebuild:
        return token if _identity(t) == kept else t

    def unpack(saved: Tensor | _Rebuild) -> Tensor:
        return saved.rebuild() if isinstance(saved, _Rebuild) else saved

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        yield
