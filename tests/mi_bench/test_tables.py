"""mi_bench.tables: the markdown tables, and redrawing them from the rows."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from ssvae_core.mi_bench.critics import COLUMNS, OPTIMAL, staircase
from ssvae_core.mi_bench.problems import synthetic
from ssvae_core.mi_bench.tables import markdown_table, markdown_tables, with_optimal_recomputed


def test_suite_tables_have_one_section_per_task() -> None:
    problems = [synthetic("gaussian", 2), synthetic("student_t", 2)]
    results = staircase(problems, ["infonce"], ["bilinear"], steps=2, seeds=(0,))
    assert list(results["task"].unique()) == ["gaussian", "student_t"]
    text = markdown_tables(results)
    assert text.count("### ") == 2 and "### student_t" in text


def test_tables_count_diverged_runs_instead_of_hiding_them() -> None:
    rows = [("gaussian", "nwj", "bilinear", 2.0, seed, value)
            for seed, value in enumerate([1.0, 3.0, math.nan])]  # fmt: skip
    rows += [("gaussian", "js", "bilinear", 2.0, 0, -math.inf)]
    table = markdown_table(pd.DataFrame(rows, columns=COLUMNS)).splitlines()
    assert table[2] == "| nwj | bilinear | 2.00 ± 1.41 (1 of 3 NaN/inf) |"
    assert table[3] == "| js | bilinear | NaN/inf (1 of 1) |"


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
