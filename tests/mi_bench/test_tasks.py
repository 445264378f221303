"""Tasks of known MI (mi_bench.tasks): the analytic MI, samplers and optimal critics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ssvae_core.mi_bench.tasks import (
    TASKS,
    TRANSFORMS,
    Task,
    mi_for_rho,
    rho_for_mi,
    sample_correlated,
    student_t_offset,
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


def test_student_t_mi_matches_a_monte_carlo_of_scipy_densities() -> None:
    """The closed form (Gaussian term + c(nu, d, d)) against E log p(x,y)/p(x)p(y) by scipy."""
    stats = pytest.importorskip("scipy.stats")
    dim, dof, mi = 2, 3, 1.0
    task = Task(dof=dof)
    rho = task.rho(mi, dim)
    x, y = task.sample(40_000, mi, dim, torch.Generator().manual_seed(0))
    joint = np.concatenate([x.numpy(), y.numpy()], axis=1).astype(np.float64)
    scale = np.block([[np.eye(dim), rho * np.eye(dim)], [rho * np.eye(dim), np.eye(dim)]])
    log_joint = stats.multivariate_t(np.zeros(2 * dim), scale, df=dof).logpdf(joint)
    marginal = stats.multivariate_t(np.zeros(dim), np.eye(dim), df=dof)
    log_ratio = log_joint - marginal.logpdf(joint[:, :dim]) - marginal.logpdf(joint[:, dim:])
    assert log_ratio.mean() == pytest.approx(mi, abs=0.03)
    # and the torch critic of the task computes the same log-ratio
    ours = task.log_ratio(x[:500], y[:500], mi).diagonal().double().numpy()
    np.testing.assert_allclose(ours, log_ratio[:500], rtol=1e-4, atol=1e-4)


def test_student_t_offset_is_positive_and_shrinks_with_dof() -> None:
    assert 0 < student_t_offset(30, 20) < student_t_offset(5, 20) < student_t_offset(3, 20)
    assert student_t_offset(3, 1) < student_t_offset(3, 20)
    with pytest.raises(ValueError, match="at least"):
        Task(dof=3).rho(0.1, 20)  # below the offset: no correlation gives so little MI


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_transforms_are_invertible(name: str) -> None:
    forward, inverse = TRANSFORMS[name]
    values = torch.linspace(-6, 6, 101, dtype=torch.float64)
    torch.testing.assert_close(inverse(forward(values)), values)
    assert bool((forward(values).diff() > 0).all())  # strictly monotone: MI is unchanged


@pytest.mark.parametrize("name", ["gaussian-halfcube", "student_t-asinh"])
def test_a_transformed_task_has_the_base_tasks_optimal_critic(name: str) -> None:
    task = TASKS[name]
    base = Task(dof=task.dof)
    x, y = task.sample(64, 4.0, 20, torch.Generator().manual_seed(2))
    raw_x, raw_y = base.sample(64, 4.0, 20, torch.Generator().manual_seed(2))
    forward = TRANSFORMS[task.transform][0]
    torch.testing.assert_close(x, forward(raw_x))
    torch.testing.assert_close(
        task.log_ratio(x, y, 4.0), base.log_ratio(raw_x, raw_y, 4.0), rtol=1e-3, atol=1e-3
    )
