"""ssvae_core.batches: the frames each SSL step sees."""

from __future__ import annotations

import pytest
import torch

from ssvae_core.batches import frames_per_step, ssl_batches


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


@pytest.mark.parametrize("n_negatives", [None, 1, 3, 9, 12, 30])
@pytest.mark.parametrize("mode", ["ssl", "supervised"])
def test_frames_per_step_counts_what_a_step_encodes(mode: str, n_negatives: int | None) -> None:
    """The count the cost model and the memory check use (`train.relative_cost`,
    `preflight.run_bytes`), against the frames `train.Run.step_index` gives the encoder."""
    from ssvae_core.loader import load
    from ssvae_core.train import Run, video_on_device

    overrides = [f"train.mode={mode}", "train.batch_size=10", "data.n_frames=41"]
    overrides += [] if n_negatives is None else [f"objective.n_negatives={n_negatives}"]
    cfg = load("small", overrides=overrides)
    run = Run(cfg, *video_on_device(cfg, None))
    steps = ssl_batches(41, 10, cfg.objective.n_negatives, torch.Generator().manual_seed(0))
    encoded = {len(run.step_index(index)) for index, _ in steps}
    assert encoded == {frames_per_step(mode, 10, n_negatives)}
    assert frames_per_step("untrained", 10, n_negatives) == 0  # it trains no step
