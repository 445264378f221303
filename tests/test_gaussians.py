"""ssvae_core.gaussians: critics trained on known-MI tasks, the tables and the command."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from ssvae_core.gaussians import (
    COLUMNS,
    OPTIMAL,
    main,
    markdown_table,
    markdown_tables,
    optimal_rows,
    staircase,
    train_estimator,
    with_optimal_recomputed,
)


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


def test_each_estimator_reads_the_true_mi_at_its_optimal_critic() -> None:
    """NWJ is tight at f = 1 + log p/q; at f = log p/q it would read I - 1/e."""
    rows = optimal_rows(["gaussian", "student_t"], ["nwj", "dv"], [2.0], [0])
    for row in rows:
        assert row["estimate"] == pytest.approx(2.0, abs=0.15), row


def test_redrawing_recomputes_only_the_optimal_rows() -> None:
    trained = [("gaussian", "nwj", "bilinear", 2.0, 0, 1.25)]
    stale = [("gaussian", "nwj", OPTIMAL, 2.0, 0, 1.63)]
    redrawn = with_optimal_recomputed(pd.DataFrame(trained + stale, columns=COLUMNS))
    assert redrawn["estimate"].iloc[0] == 1.25
    assert redrawn["estimate"].iloc[1] == pytest.approx(2.0, abs=0.15)


def test_a_cell_with_no_runs_reads_as_a_dash() -> None:
    rows = [
        ("gaussian", "dv", "bilinear", 2.0, 0, 1.0),
        ("gaussian", "dv", "gaussian", 6.0, 0, 5.0),
    ]
    table = markdown_table(pd.DataFrame(rows, columns=COLUMNS)).splitlines()
    assert table[2] == "| dv | bilinear | 1.00 | - |"
