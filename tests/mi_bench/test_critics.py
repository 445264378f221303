"""mi_bench.critics: critics trained on pairs of known MI, and the estimators at the optimum."""

from __future__ import annotations

import math

import pytest

from ssvae_core.mi_bench.critics import OPTIMAL, optimal_rows, staircase, train_estimator
from ssvae_core.mi_bench.problems import synthetic
from ssvae_core.mi_bench.tables import markdown_table


def test_infonce_with_concat_critic_recovers_two_nats() -> None:
    """The issue's acceptance check: batch 64, concat_mlp critic, I = 2 nats."""
    estimate = train_estimator(
        "infonce", "concat_mlp", synthetic("gaussian", 2.0), steps=1500, batch=64, seed=0
    )
    assert estimate < math.log(64)
    assert abs(estimate - 2.0) < 0.5


def test_training_is_deterministic_given_seed() -> None:
    problem = synthetic("gaussian", 4.0)
    first = train_estimator("dv", "separable_mlp", problem, steps=10, seed=5)
    assert train_estimator("dv", "separable_mlp", problem, steps=10, seed=5) == first


def test_staircase_table_shape() -> None:
    problems = [synthetic("gaussian", 2), synthetic("gaussian", 4)]
    results = staircase(problems, ["infonce", "nwj"], ["gaussian", "cosine"], steps=3, seeds=(0,))
    assert list(results.columns) == ["task", "estimator", "coupling", "true_mi", "seed", "estimate"]
    assert len(results) == 2 * 3 * 2  # (2 couplings + the true log-ratio) x 2 estimators x 2 MIs
    table = markdown_table(results).splitlines()
    assert table[0] == "| estimator | coupling | I = 2 | I = 4 |"
    assert len(table) == 2 + 6
    assert table[4].startswith(f"| infonce | {OPTIMAL} |")


def test_staircase_rejects_unknown_names_before_training() -> None:
    problems = [synthetic("gaussian", 2)]
    with pytest.raises(ValueError, match="infonce"):
        staircase(problems, ["mine"], ["gaussian"], steps=1)
    with pytest.raises(ValueError, match="gaussian"):
        staircase(problems, ["infonce"], ["rbf"], steps=1)
    with pytest.raises(ValueError, match="student_t"):
        synthetic("cauchy", 2.0)


def test_each_estimator_reads_the_true_mi_at_its_optimal_critic() -> None:
    """NWJ is tight at f = 1 + log p/q; at f = log p/q it would read I - 1/e."""
    problems = [synthetic("gaussian", 2.0), synthetic("student_t", 2.0)]
    rows = optimal_rows(problems, ["nwj", "dv"], [0])
    assert len(rows) == 4
    for row in rows:
        assert row["estimate"] == pytest.approx(2.0, abs=0.15), row
