"""Against a real ``mlflow server`` over HTTP: the smoke sweep, and an outage mid-sweep.

The outage is made by a TCP proxy between the sweep and the server (`TcpProxy`): once the first
trial has checkpointed, the proxy refuses and cuts every connection; trials go on and keep what
they cannot log in their checkpoints; with the proxy back, ``ssvae sweep FILE --sync`` replays
it all and the server ends up as if nothing had happened.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("ray")
pytest.importorskip("mlflow")

from sweep_helpers import (
    SMOKE,
    MlflowServer,
    TcpProxy,
    artifact_names,
    metric_steps,
    sweep_runs,
    wait_for,
    write_spec,
)

from ssvae_core import cli


def _assert_complete(uri: str, experiment: str, n_trials: int) -> None:
    """One FINISHED parent; one FINISHED child per trial with every epoch and its figures."""
    [parent], children = sweep_runs(uri, experiment)
    assert len(children) == n_trials
    assert {run.info.status for run in [parent, *children]} == {"FINISHED"}
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    for child in children:
        assert metric_steps(uri, child.info.run_id, "probe_error_px") == [0, 1, 2]
        assert child.data.params["data.size"] == "32"
        assert {"fig1b.png", "history.csv"} <= artifact_names(uri, child.info.run_id)
    assert {"results.csv", "fig1c.png", "sweep.yaml"} <= artifact_names(uri, parent.info.run_id)


@pytest.mark.slow
def test_smoke_sweep_against_a_real_mlflow_server(
    workdir: Path, mlflow_server: MlflowServer
) -> None:
    args = ["sweep", str(SMOKE), "--tracking-uri", mlflow_server.uri, "--storage-path", "runs"]
    assert cli.main(args) == 0
    _assert_complete(mlflow_server.uri, "smoke", 4)
    assert not (workdir / "mlflow.db").exists()  # nothing went to the default store


@pytest.mark.slow
@pytest.mark.parametrize("fuse", [1, 2], ids=["trials", "fused"])
def test_mlflow_outage_mid_sweep_is_replayed_by_sync(
    workdir: Path, mlflow_server: MlflowServer, fuse: int
) -> None:
    """Fused: two Ray trials of two cells each, whose backlogs sit in ``cell-NNN/``."""
    proxy = TcpProxy(mlflow_server.port)
    uri = f"http://127.0.0.1:{proxy.port}"
    body = "grid: {method: [gaussian, bilinear], train.seed: [0, 1]}\nmax_concurrent: 2"
    body += f"\nresources: {{cpu: 1, fuse: {fuse}}}"
    name = "outage" if fuse == 1 else "outage-fused"  # one server: an experiment each
    spec = write_spec(workdir, name, body)

    def cut_after_first_checkpoint() -> None:
        if wait_for(lambda: list(workdir.glob(f"runs/{name}/grid/*/checkpoint_*")), 240, 0.05):
            proxy.down()

    cutter = threading.Thread(target=cut_after_first_checkpoint, daemon=True)
    cutter.start()
    args = ["sweep", str(spec), "--tracking-uri", uri, "--storage-path", "runs"]
    assert cli.main(args) == 0  # the trials went on without MLflow
    cutter.join(timeout=1)
    trials = pd.read_csv(workdir / "runs" / name / "trials.csv")
    assert sorted(trials["status"]) == ["ok"] * 4
    assert trials["mlflow_pending"].sum() > 0  # kept in the trials' checkpoints
    assert (workdir / "runs" / name / "mlflow_pending.jsonl").read_text()  # the parent's

    proxy.up()
    assert (
        cli.main(["sweep", str(spec), "--sync", "--tracking-uri", uri, "--storage-path", "runs"])
        == 0
    )
    _assert_complete(mlflow_server.uri, name, 4)
    assert {p.read_text() for p in workdir.glob("runs/**/mlflow_pending.jsonl")} == {""}
    proxy.down()
