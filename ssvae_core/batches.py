"""Which frames one SSL step sees: the sampler `train` and `elbo` share.

Section 4 of the paper: each step draws B consecutive pairs (base frame t, target t + 1); the
targets of the other pairs are the negatives. `ObjectiveConfig.n_negatives` changes that: fewer
than B - 1 keeps a random subset per anchor, more adds N - (B - 1) random frames.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from ssvae_core.objectives import negative_mask


def extra_negatives(batch: int, n_negatives: int | None) -> int:
    """K: the random frames a step adds beyond the batch's own B - 1 negatives, for N of them
    (None: the batch's own)."""
    return max(0, (n_negatives or batch - 1) - (batch - 1))


def frames_per_step(mode: str, batch: int, n_negatives: int | None) -> int:
    """The frames one training step encodes, at most (a frame drawn twice is encoded once):
    2B + K for ``ssl`` (`ssl_batches`), B for ``supervised``, 0 for ``untrained`` (no step)."""
    return {"ssl": 2 * batch + extra_negatives(batch, n_negatives), "supervised": batch}.get(
        mode, 0
    )


def ssl_batches(
    n_frames: int, batch: int, n_negatives: int | None, generator: torch.Generator
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """One epoch of SSL batches drawn from `generator` (deterministic given its state).

    Yields (index [2B + K], keep [B, B] or None): B base frames of shuffled consecutive
    pairs, their targets (base + 1) and K = N - (B - 1) extra random frames when N > B - 1;
    `keep` masks the in-batch negatives down to N when N < B - 1 (`ObjectiveConfig`).
    """
    n_neg = n_negatives or batch - 1
    order = torch.randperm(n_frames - 1, generator=generator)
    for start in range(0, len(order) - batch + 1, batch):
        base = order[start : start + batch]
        extra = torch.randint(0, n_frames, (extra_negatives(batch, n_neg),), generator=generator)
        keep = negative_mask(batch, n_neg, generator) if n_neg < batch - 1 else None
        yield torch.cat([base, base + 1, extra]), keep
