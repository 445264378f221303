"""The smoke sweep end to end on a local Ray and sqlite MLflow; a diverged trial mid-sweep."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("ray")
pytest.importorskip("mlflow")

from sweep_helpers import SMOKE, artifact_names, metric_steps, sweep_runs, write_spec

from ssvae_core import cli
from ssvae_core.sweep import spec, ui


@pytest.mark.slow
def test_smoke_sweep_end_to_end_with_sqlite(workdir: Path) -> None:
    """One parent, one FINISHED child per trial with config, epochs and figures; tables."""
    assert cli.main(["sweep", str(SMOKE), "--storage-path", "runs"]) == 0
    uri = f"sqlite:///{workdir / 'mlflow.db'}"  # the default: what `mlflow ui` here reads
    [parent], children = sweep_runs(uri, "smoke")
    assert len(children) == 4
    assert {run.info.status for run in [parent, *children]} == {"FINISHED"}
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {c.data.tags["ssvae.status"] for c in children} == {"ok"}
    colours = {c.data.params["sweep.method"]: c.data.tags["mlflow.runColor"] for c in children}
    assert colours == {"gaussian": ui.PALETTE[0], "bilinear": ui.PALETTE[1]}  # one per cell
    assert parent.data.tags["mlflow.runColor"] == ui.PARENT_COLOUR
    assert {c.info.run_name for c in children} == {
        f"{m} s{s}" for m in ("gaussian", "bilinear") for s in (0, 1)
    }  # short: MLflow's runs table cuts long names
    for child in children:
        params = child.data.params
        assert params["data.size"] == "32" and params["train.epochs"] == "2"
        assert params["coupling.kind"] == params["sweep.method"]
        assert metric_steps(uri, child.info.run_id, "probe_error_px") == [0, 1, 2]  # 0: init
        assert child.data.metrics["probe_error_px"] > 0
        assert {"fig1b.png", "fig1de.png", "history.csv"} <= artifact_names(uri, child.info.run_id)
    assert parent.data.tags["ssvae.git_commit"] and parent.data.tags["ssvae.version"]
    assert parent.data.tags["ssvae.versions.torch"].startswith("2.")
    assert parent.data.params["sweep.n_trials"] == "4"
    # the parent carries the results: the study's table as its description, medians as metrics
    assert "| gaussian |" in parent.data.tags["mlflow.note.content"]
    assert parent.data.metrics["gaussian.probe_error_px_median"] > 0
    from mlflow import MlflowClient

    tags = MlflowClient(uri).get_experiment_by_name("smoke").tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert set(ui.saved_views(spec.load(SMOKE), now_ms=0)) <= set(tags)  # MLflow's saved views
    assert {"sweep.yaml", "search_space.json", "results.csv", "results.parquet", "fig1c.png"} <= (
        artifact_names(uri, parent.info.run_id)
    )
    cells = pd.read_csv(workdir / "runs" / "smoke" / "results.csv")
    assert cells["cell"].tolist() == ["gaussian", "bilinear"]
    assert cells["trials"].tolist() == [2, 2] and cells["n_error"].sum() == 0
    assert (cells["probe_error_px_mean"] > 0).all()
    trials = pd.read_parquet(workdir / "runs" / "smoke" / "trials.parquet")
    assert sorted(trials["status"]) == ["ok"] * 4
    assert set(trials["mlflow_run_id"]) == {c.info.run_id for c in children}
    kept = [
        sorted(c.name[-1] for c in trial.glob("checkpoint_*"))
        for trial in (workdir / "runs" / "smoke" / "grid").glob("train_trial_*")
    ]
    assert kept == [["2", "3"]] * 4  # each trial's last (epochs 0-2, its end) and the one before


@pytest.mark.slow
def test_diverged_trials_are_recorded_and_the_optuna_asha_sweep_goes_on(workdir: Path) -> None:
    """Two grid cells, each an Optuna study of 2 trials with ASHA; one cell always diverges."""
    body = """\
        methods: {diverge: {train.mode: ssl, coupling.kind: gaussian, train.lr: 10.0}}
        grid: {method: [diverge, gaussian]}
        search:
          num_samples: 2
          space: {coupling.lengthscale: {dist: loguniform, low: 0.02, high: 0.5}}
        scheduler: {kind: asha, grace_period: 1, reduction_factor: 2}
        max_concurrent: 2
        """
    path = write_spec(workdir, "diverge", body, {"train.epochs": 3})
    assert cli.main(["sweep", str(path), "--storage-path", "runs"]) == 0
    trials = pd.read_csv(workdir / "runs" / "diverge" / "trials.csv")
    assert trials["tuner_run"].tolist() == ["cell-000"] * 2 + ["cell-001"] * 2
    by_method = trials.groupby("method")["status"].agg(set)
    assert by_method["diverge"] == {"diverged"}
    assert by_method["gaussian"] <= {"ok", "stopped"} and "ok" in by_method["gaussian"]
    assert trials["coupling.lengthscale"].between(0.02, 0.5).all()
    cells = pd.read_csv(workdir / "runs" / "diverge" / "results.csv").set_index("cell")
    assert cells.loc["diverge", "n_diverged"] == 2 and cells.loc["gaussian", "n_diverged"] == 0
    assert 0.02 <= cells.loc["gaussian", "best.coupling.lengthscale"] <= 0.5
    # the search's choice, trained again on a second video: validation and test apart
    chosen = pd.read_csv(workdir / "runs" / "diverge" / "selected.csv").set_index("cell")
    assert list(chosen.index) == ["gaussian"]  # the diverged cell has nothing to select
    assert chosen.loc["gaussian", "validation_px"] == cells.loc["gaussian", "probe_error_px_best"]
    assert (
        chosen.loc["gaussian", "test_px"] > 0
        and chosen.loc["gaussian", "test_px"] == (cells.loc["gaussian", "test_px"])
    )
    assert chosen.loc["gaussian", "bias_px"] == pytest.approx(
        chosen.loc["gaussian", "validation_px"] - chosen.loc["gaussian", "test_px"]
    )
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    _, children = sweep_runs(uri, "diverge")
    assert len(children) == 4 and "RUNNING" not in {c.info.status for c in children}
    for child in children:
        status = child.data.tags["ssvae.status"]
        assert child.info.status == ("KILLED" if status == "stopped" else "FINISHED")
        if child.data.params["sweep.method"] == "diverge":
            assert status == "diverged"
            assert "loss became nan" in child.data.tags["ssvae.message"]
