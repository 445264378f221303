"""What MLflow's UI is told about a sweep (`sweep.ui`): colours per cell, saved views, link.

The browser side (MLflow drawing these) is tests/e2e/test_mlflow_ui.py; here the values.
"""

from __future__ import annotations

import json
from pathlib import Path

from sweep_helpers import REPO, SMOKE, write_spec

from ssvae_core.sweep import spec, ui


def test_trials_of_a_cell_share_a_colour_and_cells_differ() -> None:
    smoke = spec.load(SMOKE)  # method x train.seed: cells are the methods
    colours = {
        (dict(cell.params)["method"], dict(cell.params)["train.seed"]): ui.cell_colour(smoke, i)
        for i, cell in enumerate(smoke.cells)
    }
    assert colours[("gaussian", 0)] == colours[("gaussian", 1)] == ui.PALETTE[0]
    assert colours[("bilinear", 0)] == colours[("bilinear", 1)] == ui.PALETTE[1]
    assert ui.PARENT_COLOUR not in ui.PALETTE


def test_a_grid_of_more_cells_than_colours_cycles_the_palette(tmp_path: Path) -> None:
    n = len(ui.PALETTE) + 2
    path = write_spec(
        tmp_path, "many", f"grid: {{train.lr: {[0.001 * (k + 1) for k in range(n)]}}}"
    )
    sweep = spec.load(path)
    colours = [ui.cell_colour(sweep, i) for i in range(n)]
    assert colours[: len(ui.PALETTE)] == list(ui.PALETTE)
    assert colours[len(ui.PALETTE) :] == list(ui.PALETTE[:2])


def _views(sweep: spec.SweepSpec) -> dict[str, dict]:
    tags = ui.saved_views(sweep, now_ms=1_700_000_000_000)
    assert set(tags) == {ui.VIEW_TAG_PREFIX + ui.RUNS_VIEW, ui.VIEW_TAG_PREFIX + ui.CELLS_VIEW}
    views = {}
    for key, value in tags.items():
        envelope = json.loads(value)  # MLflow's envelope: name and times plain, state as text
        assert set(envelope) == {"name", "createdAt", "updatedAt", "state"}
        assert envelope["createdAt"] == envelope["updatedAt"] == 1_700_000_000_000
        assert envelope["name"].startswith("ssvae: ")
        views[key.removeprefix(ui.VIEW_TAG_PREFIX)] = json.loads(envelope["state"])
    return views


def test_the_views_show_the_probe_error_and_the_axes_and_group_by_cell() -> None:
    views = _views(spec.load(SMOKE))
    for state in views.values():
        assert state["selectedColumns"] == [
            "metrics.`probe_error_px`", "metrics.`mi_estimate`",
            "params.`sweep.method`", "params.`sweep.train.seed`",
        ]  # fmt: skip
        assert state["columnOrder"] == ["duration", *state["selectedColumns"]]
        assert state["columnWidths"]["metrics.`probe_error_px`"] >= 120
        assert state["orderByKey"] == "attributes.start_time"  # MLflow nests only this way
        assert state["searchFilter"] == ""
    assert views[ui.RUNS_VIEW]["groupBy"] is None
    assert views[ui.CELLS_VIEW]["groupBy"] == {
        "aggregateFunction": "average",
        "groupByKeys": [{"mode": "param", "groupByData": "sweep.method"}],  # not the seed
    }


def test_a_searched_key_and_a_searched_metric_become_columns(tmp_path: Path) -> None:
    body = """\
        grid: {method: [gaussian], train.seed: [0]}
        search:
          metric: probe_r2
          mode: max
          num_samples: 2
          space: {train.lr: {dist: loguniform, low: 1.0e-4, high: 0.1}}
        """
    views = _views(spec.load(write_spec(tmp_path, "search", body)))
    columns = views[ui.RUNS_VIEW]["selectedColumns"]
    assert "metrics.`probe_r2`" in columns and "params.`sweep.train.lr`" in columns


def test_every_shipped_sweep_groups_by_its_table_cells() -> None:
    for path in sorted((REPO / "sweeps").glob("*.yaml")):
        sweep = spec.load(path)
        keys = _views(sweep)[ui.CELLS_VIEW]["groupBy"]["groupByKeys"]
        assert [k["groupByData"] for k in keys] == [f"sweep.{a}" for a in sweep.group_axes], path


def test_the_link_opens_the_training_runs_in_the_view() -> None:
    served = ui.link("http://mlflow-host:5000/", "7")
    assert served == (
        "http://mlflow-host:5000/#/experiments/7/runs"
        "?workflowType=machine_learning&viewStateShareKey=ssvae-runs"
    )
    assert ui.link("https://bob:s3cret@mlflow-host/ml", "7").startswith(
        "https://mlflow-host/ml/#/experiments/7/runs?"
    )  # printed at the end of every sweep: no password in a log
    local = ui.link("sqlite:////tmp/mlflow.db", "1", ui.CELLS_VIEW)
    assert local.startswith(ui.LOCAL_UI + "/#/experiments/1/runs?")
    assert local.endswith("viewStateShareKey=ssvae-cells")


def test_a_grid_of_seeds_only_is_one_cell_and_is_not_grouped(tmp_path: Path) -> None:
    sweep = spec.load(write_spec(tmp_path, "seeds", "grid: {train.seed: [0, 1, 2]}"))
    assert {ui.cell_colour(sweep, i) for i in range(3)} == {ui.PALETTE[0]}
    assert _views(sweep)[ui.CELLS_VIEW]["groupBy"] is None
