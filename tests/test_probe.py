from __future__ import annotations

import numpy as np

from ssvae_core.probe import fit_probe, split_frames


def test_exact_on_linear_data() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 6))
    weights = rng.normal(size=(6, 6))
    positions = (z @ weights + np.arange(6)).reshape(200, 3, 2)
    result = fit_probe(z, positions, 0.8, seed=1)
    assert result.probe_error_px < 1e-9
    assert abs(result.r2 - 1.0) < 1e-12
    np.testing.assert_allclose(result.weights[:6], weights, atol=1e-9)
    np.testing.assert_allclose(result.weights[6], np.arange(6), atol=1e-9)


def test_error_is_mean_euclidean_distance_on_held_out_frames() -> None:
    # z carries no information: the probe predicts (about) the train mean, so the error is the
    # mean distance of held-out centres to that mean, computed here by hand.
    rng = np.random.default_rng(1)
    positions = rng.uniform(0, 64, size=(500, 2, 2))
    z = np.zeros((500, 1))
    result = fit_probe(z, positions, 0.6, seed=3)
    train, test = split_frames(500, 0.6, seed=3)
    mean = positions[train].mean(axis=0)
    expected = np.linalg.norm(positions[test] - mean, axis=2).mean()
    assert abs(result.probe_error_px - expected) < 1e-6
    assert result.r2 < 0.0 + 0.05


def test_split_is_seeded_disjoint_and_complete() -> None:
    train, test = split_frames(100, 0.8, seed=5)
    assert len(train) == 80 and len(test) == 20
    assert set(train).isdisjoint(test) and set(train) | set(test) == set(range(100))
    again = split_frames(100, 0.8, seed=5)
    np.testing.assert_array_equal(train, again[0])


def test_non_finite_representation_gives_nan_not_an_exception() -> None:
    z = np.full((50, 2), np.nan)
    result = fit_probe(z, np.zeros((50, 1, 2)), 0.8, seed=0)
    assert np.isnan(result.probe_error_px)
    assert result.weights.shape == (3, 2) and result.predicted.shape == (50, 1, 2)  # as fitted
