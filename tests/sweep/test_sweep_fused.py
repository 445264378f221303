"""``resources: {fuse: K}``: grid cells of one shape as one fused Ray trial, each cell still its
own MLflow run, checkpoint state and result row, with the numbers it gets alone."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("ray")
pytest.importorskip("mlflow")

from sweep_helpers import artifact_names, metric_steps, sweep_runs, write_spec

from ssvae_core import cli
from ssvae_core.balls import simulate
from ssvae_core.errors import ConfigError
from ssvae_core.sweep import spec
from ssvae_core.train import fit

SMOKE_GRID = "grid:\n  method: [gaussian, bilinear]\n  train.seed: [0, 1]\n"


def test_cells_of_one_shape_are_grouped_up_to_fuse(tmp_path: Path) -> None:
    path = write_spec(tmp_path, "g", SMOKE_GRID + "resources: {fuse: 4}\n")
    assert spec.load(path).groups == ((0, 1, 2, 3),)  # the couplings and seeds differ only
    path = write_spec(tmp_path, "g3", SMOKE_GRID + "resources: {fuse: 3}\n")
    assert spec.load(path).groups == ((0, 1, 2), (3,))
    path = write_spec(tmp_path, "g1", SMOKE_GRID)
    assert spec.load(path).groups == ((0,), (1,), (2,), (3,))  # the default: one cell a trial
    shapes = "grid:\n  train.batch_size: [8, 10]\n  train.seed: [0, 1]\nresources: {fuse: 4}\n"
    assert spec.load(write_spec(tmp_path, "shapes", shapes)).groups == ((0, 1), (2, 3))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("resources: {fuse: 0}", "resources.fuse: must be >= 1, got 0"),
        (
            "resources: {fuse: 2}\nscheduler: {kind: asha}",
            "resources.fuse: fuses cells that train together; a scheduler (ASHA) stops",
        ),
        (
            "resources: {fuse: 2}\nsearch:\n  num_samples: 2\n"
            "  space: {train.lr: {dist: loguniform, low: 0.001, high: 0.01}}",
            "resources.fuse: fuses grid cells into one trial; a search (Optuna) proposes",
        ),
    ],
    ids=["zero", "asha", "optuna"],
)
def test_fuse_is_refused_where_it_cannot_work(
    workdir: Path, capsys: pytest.CaptureFixture[str], body: str, message: str
) -> None:
    path = write_spec(workdir, "refused", SMOKE_GRID + body + "\n")
    with pytest.raises(ConfigError, match=r"resources\.fuse"):
        spec.load(path)
    assert cli.main(["sweep", str(path), "--storage-path", "runs"]) == 2
    assert message in capsys.readouterr().err
    assert not (workdir / "mlflow.db").exists()  # before Ray and MLflow


@pytest.mark.slow
def test_a_fused_smoke_sweep_gives_every_cell_its_own_run_row_and_numbers(workdir: Path) -> None:
    path = write_spec(workdir, "fused", SMOKE_GRID + "resources: {cpu: 1, fuse: 4}\n")
    assert cli.main(["sweep", str(path), "--storage-path", "runs"]) == 0
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    [parent], children = sweep_runs(uri, "fused")
    assert len(children) == 4 and {r.info.status for r in [parent, *children]} == {"FINISHED"}
    assert len({c.data.tags["ray.trial_id"] for c in children}) == 1  # one Ray trial
    assert {c.info.run_name for c in children} == {
        f"{m} s{s}" for m in ("gaussian", "bilinear") for s in (0, 1)
    }
    for child in children:
        assert child.data.tags["ssvae.status"] == "ok"
        assert metric_steps(uri, child.info.run_id, "probe_error_px") == [0, 1, 2]
        assert {"fig1b.png", "fig1de.png", "history.csv"} <= artifact_names(uri, child.info.run_id)
    trials = pd.read_parquet(workdir / "runs" / "fused" / "trials.parquet")
    assert sorted(trials["status"]) == ["ok"] * 4 and set(trials["fused"]) == {4}
    assert set(trials["mlflow_run_id"]) == {c.info.run_id for c in children}
    # each row is the number of that configuration trained alone (the 1 %)
    loaded = spec.load(path)
    video = simulate(loaded.cells[0].config.data.balls, loaded.cells[0].config.data.seed)
    by_run = {c.info.run_id: c for c in children}
    for _, row in trials.iterrows():
        child = by_run[row["mlflow_run_id"]]
        cell = next(
            c for c in loaded.cells
            if dict(c.params) == {"method": row["method"], "train.seed": int(row["train.seed"])}
        )  # fmt: skip
        alone = fit(cell.config, video=video)
        assert row["probe_error_px"] == pytest.approx(alone.probe_error_px, rel=0.01)
        assert child.data.metrics["probe_error_px"] == pytest.approx(row["probe_error_px"])
    cells = pd.read_csv(workdir / "runs" / "fused" / "results.csv")
    assert cells["trials"].tolist() == [2, 2] and cells["n_error"].sum() == 0


def test_a_fused_trials_progress_line_names_every_member_it_averages(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It printed 'train.seed=0 +2 fused | ok: 3.18 px' while seed 0 alone read 5.06 px:
    the figure was the members' mean under the first member's label."""
    from types import SimpleNamespace

    from ssvae_core.sweep.progress import Progress

    sweep = spec.load(write_spec(workdir, "f", """
        grid: {method: [gaussian], train.seed: [0, 1, 2]}
        resources: {fuse: 3}
    """))  # fmt: skip
    trial = SimpleNamespace(config={"cell": 0}, trial_id="t0", last_result={})
    Progress(sweep, "grid").on_trial_result(0, [trial], trial, {"epoch": 1, "loss": 1.5})
    line = capsys.readouterr().out
    assert "| method=gaussian, train.seed=0|1|2 (fused: the mean of 3) | epoch 1 |" in line
