"""Shared fixtures: a tiny video and a tiny config so core tests run in seconds."""

from __future__ import annotations

import pytest
import torch

from ssvae_core import config, loader
from ssvae_core.balls import Video, simulate

torch.set_num_threads(1)

TINY_OVERRIDES = {
    "data": {"n_frames": 120, "size": 32, "diameter": 6},
    "train": {"epochs": 2, "batch_size": 10, "device": "cpu"},
    "probe": {"every_epochs": 1},
}


@pytest.fixture
def tiny_cfg() -> config.RunConfig:
    return loader.from_dict(TINY_OVERRIDES, config.PRESETS["small"])


@pytest.fixture
def tiny_video(tiny_cfg: config.RunConfig) -> Video:
    return simulate(tiny_cfg.data, tiny_cfg.data.seed)
