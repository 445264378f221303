"""Correlated-Gaussian tasks of ssvae_core.gaussians: known MI, and a trained critic recovers it."""

from __future__ import annotations

import math

import pytest
import torch

from ssvae_core.gaussians import (
    OPTIMAL,
    markdown_table,
    mi_for_rho,
    rho_for_mi,
    sample_correlated,
    staircase,
    train_estimator,
    true_log_ratio,
)
from ssvae_core.objectives import ESTIMATORS


@pytest.mark.parametrize("dim", [1, 5, 20])
@pytest.mark.parametrize("mi_nats", [0.0, 0.5, 2.0, 10.0])
def test_rho_for_mi_inverts_the_analytic_mi(mi_nats: float, dim: int) -> None:
    rho = rho_for_mi(mi_nats, dim)
    assert 0.0 <= rho < 1.0
    # 1 - rho^2 cancels catastrophically near rho = 1 (exp(-20) at I = 10, d = 1): rel 1e-6
    assert -dim / 2 * math.log(1 - rho**2) == pytest.approx(mi_nats, rel=1e-6, abs=1e-12)
    assert mi_for_rho(rho, dim) == pytest.approx(mi_nats, rel=1e-6, abs=1e-12)


@pytest.mark.parametrize("mi_nats", [2.0, 6.0, 10.0])
def test_samples_have_the_requested_correlation_and_mi(mi_nats: float) -> None:
    x, y = sample_correlated(20_000, mi_nats, dim=20, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (20_000, 20)
    rho = rho_for_mi(mi_nats, 20)
    x_centred, y_centred = x - x.mean(0), y - y.mean(0)
    correlation = (x_centred * y_centred).mean(0) / (x_centred.std(0) * y_centred.std(0))
    assert correlation.mean().item() == pytest.approx(rho, abs=0.005)
    assert y.var(0).mean().item() == pytest.approx(1.0, abs=0.02)
    assert mi_for_rho(correlation.mean().item(), 20) == pytest.approx(mi_nats, rel=0.05)


def test_sampling_is_deterministic_given_generator() -> None:
    first = sample_correlated(8, 2.0, generator=torch.Generator().manual_seed(3))
    second = sample_correlated(8, 2.0, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_true_log_ratio_gives_the_known_mi_on_average() -> None:
    x, y = sample_correlated(4_000, 4.0, generator=torch.Generator().manual_seed(1))
    log_ratio = true_log_ratio(x[:2_000], y[:2_000], 4.0)
    assert log_ratio.diagonal().mean().item() == pytest.approx(4.0, abs=0.15)  # E_joint log r
    assert ESTIMATORS["dv"](log_ratio).item() == pytest.approx(4.0, abs=0.3)


def test_infonce_with_concat_critic_recovers_two_nats() -> None:
    """The issue's acceptance check: batch 64, concat_mlp critic, I = 2 nats."""
    estimate = train_estimator("infonce", "concat_mlp", 2.0, steps=1500, batch=64, seed=0)
    assert estimate < math.log(64)
    assert abs(estimate - 2.0) < 0.5


def test_training_is_deterministic_given_seed() -> None:
    first = train_estimator("dv", "separable_mlp", 4.0, steps=10, seed=5)
    assert train_estimator("dv", "separable_mlp", 4.0, steps=10, seed=5) == first


def test_staircase_table_shape() -> None:
    results = staircase(["infonce", "nwj"], ["gaussian", "cosine"], mis=(2, 4), steps=3, seeds=(0,))
    assert list(results.columns) == ["estimator", "coupling", "true_mi", "seed", "estimate"]
    assert len(results) == 2 * 3 * 2  # (2 couplings + the true log-ratio) x 2 estimators x 2 MIs
    table = markdown_table(results).splitlines()
    assert table[0] == "| estimator | coupling | I = 2 | I = 4 |"
    assert len(table) == 2 + 6
    assert table[4].startswith(f"| infonce | {OPTIMAL} |")


def test_staircase_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="infonce"):
        staircase(["mine"], ["gaussian"], steps=1)
    with pytest.raises(ValueError, match="gaussian"):
        staircase(["infonce"], ["rbf"], steps=1)
