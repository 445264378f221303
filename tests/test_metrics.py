"""ssvae_core.metrics: the metric names, and the measures computed on a run's outputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ssvae_core.metrics import (
    METRICS,
    SEARCHABLE,
    finite_numbers,
    json_ready,
    position_step,
    representation_step,
)


def test_representation_step_is_the_rms_change_between_frames() -> None:
    z = np.array([[0.0, 0.0], [0.3, 0.0], [0.3, 0.4]])  # steps (0.3, 0) and (0, 0.4)
    assert representation_step(z) == pytest.approx(math.sqrt((0.09 + 0.16) / 4))


def test_position_step_is_the_rms_displacement_in_encoder_units() -> None:
    positions = np.zeros((3, 1, 2), dtype=np.float32)
    positions[1, 0] = [4.0, 0.0]  # moves 4 px in x, then back: steps (4, 0) and (-4, 0)
    # RMS over (x, y) of 4 px -> sqrt(8) px; one pixel is 2/64 encoder units
    assert position_step(positions, 64) == pytest.approx(math.sqrt(8) * 2 / 64)


def test_searchable_metrics_have_a_direction() -> None:
    assert SEARCHABLE == {"probe_error_px": "min", "probe_r2": "max", "mi_estimate": "max",
                          "loss": "min"}  # fmt: skip
    assert set(SEARCHABLE) < set(METRICS)


def test_non_finite_values_become_null_or_are_left_out() -> None:
    values = {"a": 1.5, "b": math.nan, "c": math.inf, "d": "ok", "e": True, "f": 2, "g": None}
    assert json_ready(values) == {**values, "b": None, "c": None}
    assert finite_numbers(values) == {"a": 1.5, "f": 2.0}
    assert finite_numbers({"huge": 10**400}) == {}
