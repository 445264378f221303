"""sweep/tables.py: statistics over seeds per grid cell; diverged and stopped trials apart."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from ssvae_core.sweep import tables
from ssvae_core.sweep.reports.common import probe_error_by_cell


def _trials() -> pd.DataFrame:
    rows = [
        ("gaussian", 0, "ok", 1.0, 0.9, 0.05, 10.0),
        ("gaussian", 1, "ok", 3.0, 1.1, 0.07, 12.0),
        ("gaussian", 2, "diverged", math.nan, math.nan, math.nan, 2.0),
        ("bilinear", 0, "ok", 6.0, 0.01, math.nan, 8.0),
        ("bilinear", 1, "stopped", 9.0, 0.01, math.nan, 4.0),
    ]
    columns = ["method", "train.seed", "status", "probe_error_px", "mi_estimate"]
    columns += ["lengthscale", "seconds"]
    return pd.DataFrame(rows, columns=columns)


def test_cells_aggregate_finished_trials_over_seeds() -> None:
    cells = tables.cell_table(_trials(), ["method"]).set_index("cell")
    assert list(cells.index) == ["gaussian", "bilinear"]  # grid order
    gaussian, bilinear = cells.loc["gaussian"], cells.loc["bilinear"]
    assert gaussian["trials"] == 3 and gaussian["n_diverged"] == 1 and gaussian["n_ok"] == 2
    assert gaussian["probe_error_px_mean"] == pytest.approx(2.0)
    assert gaussian["probe_error_px_std"] == pytest.approx(math.sqrt(2.0))
    assert gaussian["probe_error_px_best"] == 1.0
    assert gaussian["mi_estimate_mean"] == pytest.approx(1.0)
    assert gaussian["lengthscale_mean"] == pytest.approx(0.06)
    assert gaussian["seconds_mean"] == pytest.approx(8.0)
    assert bilinear["n_stopped"] == 1 and bilinear["probe_error_px_mean"] == 6.0
    assert math.isnan(bilinear["probe_error_px_std"])  # one finished seed: no spread


def test_search_cells_carry_the_best_trials_values() -> None:
    trials = _trials().assign(**{"train.lr": [0.1, 0.01, 5.0, 0.2, 0.3]})
    cells = tables.cell_table(trials, ["method"], searched=["train.lr"]).set_index("cell")
    assert cells.loc["gaussian", "best.train.lr"] == 0.1
    assert cells.loc["bilinear", "best.train.lr"] == 0.2


def test_tables_and_figure_are_written(tmp_path: Path) -> None:
    trials = _trials()
    cells = tables.cell_table(trials, ["method"])
    paths = tables.write(trials, cells, tmp_path)
    assert {p.name for p in paths} == {
        "trials.csv", "trials.parquet", "results.csv", "results.parquet",
    }  # fmt: skip
    assert pd.read_parquet(tmp_path / "results.parquet")["n_diverged"].tolist() == [1, 0]
    figure = probe_error_by_cell(trials, ["method"], tmp_path / "fig1c.png", "t")
    assert figure.stat().st_size > 0
    assert "gaussian" in tables.format_cells(cells)
