"""The driver killed after the first checkpoints, then ``--resume``: one MLflow run per trial."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("ray")
pytest.importorskip("mlflow")

from sweep_helpers import (
    SMOKE,
    descendants,
    kill_pids,
    metric_points,
    metric_steps,
    sweep_command,
    sweep_runs,
    wait_for,
)

from ssvae_core import cli


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_into_the_same_mlflow_runs(workdir: Path) -> None:
    log = open(workdir / "driver.log", "w")  # noqa: SIM115 - closed below
    driver = subprocess.Popen(
        sweep_command(str(SMOKE), "--storage-path", "runs"),
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        found = wait_for(lambda: list(workdir.glob("runs/smoke/grid/*/checkpoint_*")), 240, 0.1)
        assert found, (workdir / "driver.log").read_text()[-3000:]
        assert driver.poll() is None, "the driver finished before it could be interrupted"
    finally:
        below = descendants(driver.pid)  # its local Ray: GCS, raylet, workers, agents
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        kill_pids(below)
        log.close()

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    [parent], before = sweep_runs(uri, "smoke")
    assert parent.info.status == "RUNNING" and before  # interrupted mid-sweep
    assert not (workdir / "runs" / "smoke" / "results.csv").exists()

    assert cli.main(["sweep", str(SMOKE), "--storage-path", "runs", "--resume"]) == 0
    parents, children = sweep_runs(uri, "smoke")
    assert [p.info.run_id for p in parents] == [parent.info.run_id]  # the same parent
    assert len(children) == 4  # exactly one run per trial
    assert {c.info.run_id for c in before} <= {c.info.run_id for c in children}
    assert {run.info.status for run in [*parents, *children]} == {"FINISHED"}
    for child in children:
        assert metric_steps(uri, child.info.run_id, "probe_error_px") == [0, 1, 2]
        # the epoch redone after the restored checkpoint is not logged a second time
        assert metric_points(uri, child.info.run_id, "epoch_seconds") == [0, 1, 2]
        assert metric_points(uri, child.info.run_id, "loss") == [1, 2]
    trials = pd.read_csv(workdir / "runs" / "smoke" / "trials.csv")
    assert sorted(trials["status"]) == ["ok"] * 4
    assert set(trials["mlflow_run_id"]) == {c.info.run_id for c in children}
