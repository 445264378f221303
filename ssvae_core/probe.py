"""The paper's metric: a linear decoder from z to the true ball centres (Fig. 1B, 1C).

A closed-form least-squares map with bias, fitted on a random train split of the frames and
scored on the held-out frames: `probe_error_px` is the mean Euclidean distance, in pixels,
between decoded and true centres over held-out frames and balls; `r2` the coefficient of
determination over all held-out coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ProbeResult:
    """A fitted probe and its held-out score.

    weights: [D + 1, 2K] (last row is the bias); predicted: [T, K, 2] decoded centres for every
    frame; test_index: [T_test] the held-out frames.
    """

    probe_error_px: float
    r2: float
    weights: np.ndarray
    predicted: np.ndarray
    test_index: np.ndarray


def split_frames(n_frames: int, train_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of frame indices into (train [T_train], test [T_test])."""
    order = np.random.default_rng(seed).permutation(n_frames)
    n_test = round(n_frames * (1.0 - train_fraction))
    n_train = n_frames - n_test
    return np.sort(order[:n_train]), np.sort(order[n_train:])


def fit_probe(
    z: np.ndarray, positions: np.ndarray, train_fraction: float = 0.8, seed: int = 0
) -> ProbeResult:
    """Least-squares linear decoder z -> centres, scored on held-out frames.

    z: [T, D] representations; positions: [T, K, 2] true centres in pixels.
    """
    n_frames, n_balls, _ = positions.shape
    features = np.concatenate([z.astype(np.float64), np.ones((n_frames, 1))], axis=1)  # [T, D+1]
    targets = positions.reshape(n_frames, 2 * n_balls).astype(np.float64)  # [T, 2K]
    train, test = split_frames(n_frames, train_fraction, seed)
    if not np.isfinite(features).all():  # a diverged run: NaN, in the shapes of a fitted one
        weights = np.full((features.shape[1], 2 * n_balls), np.nan)
        predicted = np.full((n_frames, n_balls, 2), np.nan, dtype=np.float32)
        return ProbeResult(float("nan"), float("nan"), weights, predicted, test)
    weights, *_ = np.linalg.lstsq(features[train], targets[train], rcond=None)  # [D+1, 2K]
    predicted = features @ weights  # [T, 2K]
    residual = (predicted[test] - targets[test]).reshape(len(test), n_balls, 2)
    error_px = float(np.linalg.norm(residual, axis=2).mean())
    total = ((targets[test] - targets[test].mean(axis=0)) ** 2).sum()
    r2 = float(1.0 - (residual**2).sum() / total)
    return ProbeResult(
        probe_error_px=error_px,
        r2=r2,
        weights=weights,
        predicted=predicted.reshape(n_frames, n_balls, 2).astype(np.float32),
        test_index=test,
    )
