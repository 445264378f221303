"""Correlated-Gaussian tasks of ssvae_core.gaussians: known MI, and a trained critic recovers it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ssvae_core.gaussians import (
    COLUMNS,
    OPTIMAL,
    TASKS,
    TRANSFORMS,
    Task,
    main,
    markdown_table,
    markdown_tables,
    mi_for_rho,
    rho_for_mi,
    sample_correlated,
    staircase,
    student_t_offset,
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
    assert list(results.columns) == ["task", "estimator", "coupling", "true_mi", "seed", "estimate"]
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


# ---------------------------------------------------------------- the task suite


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


def test_suite_tables_have_one_section_per_task(tmp_path: Path) -> None:
    results = staircase(
        ["infonce"], ["bilinear"], mis=(2,), steps=2, seeds=(0,), tasks=("gaussian", "student_t")
    )
    assert list(results["task"].unique()) == ["gaussian", "student_t"]
    text = markdown_tables(results)
    assert text.count("### ") == 2 and "### student_t" in text


def test_command_writes_tables_rows_and_figure(tmp_path: Path) -> None:
    out, csv, png = tmp_path / "t.md", tmp_path / "t.csv", tmp_path / "t.png"
    argv = ["--smoke-test", "--tasks", "gaussian,student_t-asinh", "--estimators", "infonce",
            "--couplings", "bilinear", "--mis", "2", "--out", str(out), "--csv", str(csv),
            "--figure", str(png)]  # fmt: skip
    main(argv)
    assert "### student_t-asinh" in out.read_text()
    assert len(pd.read_csv(csv)) == 2 * 2  # (bilinear + the true log-ratio) x 2 tasks
    assert png.stat().st_size > 0


def test_command_rejects_an_unknown_task_with_exit_2() -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--smoke-test", "--tasks", "cauchy"])
    assert exit_info.value.code == 2


def test_tables_count_diverged_runs_instead_of_hiding_them() -> None:
    rows = [("gaussian", "nwj", "bilinear", 2.0, seed, value)
            for seed, value in enumerate([1.0, 3.0, math.nan])]  # fmt: skip
    rows += [("gaussian", "js", "bilinear", 2.0, 0, -math.inf)]
    table = markdown_table(pd.DataFrame(rows, columns=COLUMNS)).splitlines()
    assert table[2] == "| nwj | bilinear | 2.00 ± 1.41 (1 of 3 NaN/inf) |"
    assert table[3] == "| js | bilinear | NaN/inf (1 of 1) |"


def test_tables_can_be_redrawn_from_the_rows(tmp_path: Path) -> None:
    csv, out, png = tmp_path / "rows.csv", tmp_path / "t.md", tmp_path / "t.png"
    main(["--smoke-test", "--estimators", "infonce", "--couplings", "bilinear", "--mis", "2",
          "--csv", str(csv)])  # fmt: skip
    main(["--from-csv", str(csv), "--out", str(out), "--figure", str(png)])
    assert "| infonce | bilinear |" in out.read_text() and png.exists()
