"""ssvae_core.batches: the frames each SSL step sees."""

from __future__ import annotations

import pytest
import torch

from ssvae_core.batches import ssl_batches


@pytest.mark.parametrize(("n_negatives", "extra"), [(None, 0), (3, 0), (12, 3)])
def test_batches_hold_pairs_extra_frames_and_masks(n_negatives: int | None, extra: int) -> None:
    batches = list(ssl_batches(41, 10, n_negatives, torch.Generator().manual_seed(0)))
    assert len(batches) == 4  # 40 pairs in batches of 10
    bases = torch.cat([index[:10] for index, _ in batches])
    assert sorted(bases.tolist()) == list(range(40))  # every pair once, shuffled
    for index, keep in batches:
        assert len(index) == 20 + extra
        assert torch.equal(index[10:20], index[:10] + 1)  # targets are the next frames
        if n_negatives is not None and n_negatives < 9:
            assert keep is not None and keep.sum(1).tolist() == [n_negatives + 1] * 10
        else:
            assert keep is None
