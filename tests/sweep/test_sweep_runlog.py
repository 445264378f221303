"""RunLog: what MLflow cannot take is kept, in order, and replayed; a run is never duplicated."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mlflow")

from mlflow import MlflowClient
from sweep_helpers import SMOKE

from ssvae_core.sweep import runlog as runlog_module
from ssvae_core.sweep.runlog import PENDING_FILE, RUN_ID_FILE, RunLog


class _Down:
    """An MLflow client whose every call fails as with a server that is down."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> None:
            raise ConnectionError("MLflow is down (injected)")

        return fail


@pytest.fixture
def uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _declare(runlog: RunLog, experiment_id: str) -> None:
    runlog.declare(experiment_id, "sweep-uid/cell-000", "trial 0", {"a": "b"}, {"train.lr": 0.1})


def test_an_outage_keeps_operations_pending_and_a_flush_replays_them_once(
    uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment_id = MlflowClient(uri).create_experiment("e")
    trial_dir = tmp_path / "checkpoint"
    with monkeypatch.context() as patched:
        patched.setattr(runlog_module, "client", lambda uri: _Down())
        down = RunLog(uri, trial_dir)
        _declare(down, experiment_id)
        assert not down.log("status", status="RUNNING")
        assert not down.metrics({"loss": 1.0, "probe_error_px": 3.0, "name": "x"}, step=1)
        assert not down.metrics({"loss": 0.5, "probe_error_px": float("nan")}, step=2)
        assert not down.log("status", status="FINISHED")
        assert down.run_id is None and len(down.pending()) == 4

    # The directory travels (a checkpoint restored elsewhere); MLflow is back.
    moved = tmp_path / "restored"
    shutil.copytree(trial_dir, moved)
    restored = RunLog(uri, moved)
    assert restored.flush()
    assert (moved / PENDING_FILE).read_text() == "" and restored.run_id is not None
    shutil.copytree(moved, trial_dir, dirs_exist_ok=True)  # as Ray writes a checkpoint over
    assert RunLog(uri, trial_dir).pending() == []  # an older one: its backlog does not stay
    client = MlflowClient(uri)
    [run] = client.search_runs([experiment_id])
    assert run.info.status == "FINISHED" and run.data.params == {"train.lr": "0.1"}
    assert run.data.tags["ssvae.key"] == "sweep-uid/cell-000" and run.data.tags["a"] == "b"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "probe_error_px")] == [1]

    # A restart from scratch (no run id file) finds the same run by its key.
    (moved / RUN_ID_FILE).unlink()
    again = RunLog(uri, moved)
    assert again.log("status", status="RUNNING")
    assert again.run_id == run.info.run_id
    assert len(client.search_runs([experiment_id])) == 1


def test_a_run_created_just_before_an_outage_gets_its_params_when_found_again(
    uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server went down between creating the run and logging its params (a flaky CI
    failure of test_mlflow_outage_mid_sweep_is_replayed_by_sync: a child without params)."""
    experiment_id = MlflowClient(uri).create_experiment("e")
    real = MlflowClient.log_batch

    def down_for_params(self: MlflowClient, run_id: str, **kwargs: Any) -> None:
        if kwargs.get("params"):
            raise ConnectionError("MLflow went down (injected)")
        real(self, run_id, **kwargs)

    first = RunLog(uri, tmp_path / "trial")
    _declare(first, experiment_id)
    with monkeypatch.context() as patched:
        patched.setattr(MlflowClient, "log_batch", down_for_params)
        assert not first.log("status", status="RUNNING")
    assert first.run_id is None  # created, but its id never written
    assert first.flush(force=True)  # MLflow is back
    [run] = MlflowClient(uri).search_runs([experiment_id])
    assert run.data.params == {"train.lr": "0.1"} and run.info.run_id == first.run_id


def test_a_partial_replay_keeps_the_rest_in_order(
    uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment_id = MlflowClient(uri).create_experiment("e")
    runlog = RunLog(uri, tmp_path / "d")
    _declare(runlog, experiment_id)
    assert runlog.log("status", status="RUNNING")
    calls = {"n": 0}
    real = runlog_module.OPS["metrics"]

    def flaky(*args: Any) -> None:  # the second metrics write fails
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConnectionError("dropped")
        real(*args)

    monkeypatch.setitem(runlog_module.OPS, "metrics", flaky)
    assert runlog.metrics({"loss": 1.0}, step=1)
    assert not runlog.metrics({"loss": 2.0}, step=2)
    assert not runlog.metrics({"loss": 3.0}, step=3)  # within RETRY_AFTER_S: only queued
    assert [op["step"] for op in runlog.pending()] == [2, 3]
    assert runlog.flush(force=True)
    steps = MlflowClient(uri).get_metric_history(str(runlog.run_id), "loss")
    assert [(m.step, m.value) for m in steps] == [(1, 1.0), (2, 2.0), (3, 3.0)]


def test_an_epoch_mlflow_already_holds_is_not_logged_twice(tmp_path: Path) -> None:
    from ssvae_core.sweep import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = tracking.experiment(uri, "x")
    first = RunLog(uri, tmp_path / "trial")
    first.declare(experiment, "uid/cell-000", "gaussian s0", {}, {})
    for epoch in (0, 1, 2):
        tracking.log_epoch(first, {"epoch": epoch, "epoch_seconds": 1.0, "loss": 2.0 - epoch})
    again = RunLog(uri, tmp_path / "trial")  # a restored trial: the same run, epochs 2, 3
    again.logged_until = again.last_step(tracking.EVERY_EPOCH)
    assert again.logged_until == 2
    for epoch in (2, 3):
        tracking.log_epoch(again, {"epoch": epoch, "epoch_seconds": 1.0, "loss": 2.0 - epoch})
    from mlflow import MlflowClient

    steps = [m.step for m in MlflowClient(uri).get_metric_history(again.run_id, "loss")]
    assert sorted(steps) == [0, 1, 2, 3]  # step 2 once


def test_a_trial_restored_at_its_end_does_not_send_its_final_metrics_twice(
    tmp_path: Path,
) -> None:
    """Killed after its last epoch and its final metrics were sent, before Ray saved its end,
    a trial is restored from its last checkpoint and finishes again: "seconds" (this life's
    fit only) got a second point at the last step."""
    from ssvae_core.sweep import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = tracking.experiment(uri, "x")
    history = [{"epoch": 0, "epoch_seconds": 0.1}, {"epoch": 1, "epoch_seconds": 0.2}]
    first = RunLog(uri, tmp_path / "trial")
    first.declare(experiment, "uid/cell-000", "gaussian s0", {}, {})
    for row in history:
        tracking.log_epoch(first, row)
    assert tracking.log_final(first, history, {"seconds": 0.409, "elbo": 1.5})
    again = RunLog(uri, tmp_path / "trial")  # restored from the last checkpoint
    again.logged_until = again.last_step(tracking.EVERY_EPOCH)
    assert tracking.log_final(again, history, {"seconds": 0.106, "elbo": 1.5, "late": 2.0})
    from mlflow import MlflowClient

    mlflow = MlflowClient(uri)
    points = {key: [(m.step, m.value) for m in mlflow.get_metric_history(again.run_id, key)]
              for key in ("seconds", "elbo", "late")}  # fmt: skip
    assert points == {"seconds": [(1, 0.409)], "elbo": [(1, 1.5)], "late": [(1, 2.0)]}
    fresh = RunLog(uri, tmp_path / "other")  # a run not restored: every final metric sent
    fresh.declare(experiment, "uid/cell-001", "gaussian s1", {}, {})
    assert tracking.log_final(fresh, history, {"seconds": 0.3})
    assert [m.value for m in mlflow.get_metric_history(fresh.run_id, "seconds")] == [0.3]


def test_a_trial_error_is_recorded_as_plain_text() -> None:
    from ray.exceptions import RayTaskError

    from ssvae_core.sweep.runner import plain_error

    header = "\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=123, ip=127.0.0.1)"
    wrapped = RayTaskError("train", f"{header}\nTraceback ...", ValueError("data.size: too small"))
    error = wrapped.as_instanceof_cause()
    assert "\x1b[" in str(error) or "ray::" in str(error)  # what the table used to hold
    assert plain_error(error) == "ValueError: data.size: too small"
    assert plain_error(KeyError("lost")) == "KeyError: 'lost'"


def test_an_outage_is_logged_without_the_servers_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow's client names the URL it failed on; the warning (a log a night keeps) must not
    carry its password. Port 1: nothing listens, and the client gives up at once."""
    import logging

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    runlog = RunLog("http://alice:s3cret@127.0.0.1:1", tmp_path)
    _declare(runlog, "0")
    with caplog.at_level(logging.WARNING, logger=runlog_module.__name__):
        assert not runlog.log("status", status="RUNNING")
    said = " ".join(record.getMessage() for record in caplog.records)
    assert "operation(s) pending" in said and "alice:***@127.0.0.1:1" in said
    assert "s3cret" not in said


def _started(uri: str, directory: Path) -> Any:
    """The smoke sweep's tracking at `uri`, its parent run open, its record in `directory`."""
    from ssvae_core.sweep import spec as specs
    from ssvae_core.sweep.tracking import SweepTracking

    tracker = SweepTracking(uri, directory, specs.load(SMOKE))
    tracker.connect()
    tracker.start()
    return tracker


def test_an_operation_cut_short_by_a_full_disk_is_left_out_not_a_crash(
    uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An append the disk could not finish left half a JSON line: every later flush (the
    run's end, --resume, --sync) raised JSONDecodeError on it."""
    experiment_id = MlflowClient(uri).create_experiment("e")
    with monkeypatch.context() as patched:
        patched.setattr(runlog_module, "client", lambda uri: _Down())
        down = RunLog(uri, tmp_path / "trial")
        _declare(down, experiment_id)
        assert not down.log("status", status="RUNNING")
    with open(tmp_path / "trial" / PENDING_FILE, "a") as fh:
        fh.write('{"op": "metrics", "values": {"lo')  # the disk filled up here
    with monkeypatch.context() as patched:  # the next operation starts a line of its own
        patched.setattr(runlog_module, "client", lambda uri: _Down())
        assert not RunLog(uri, tmp_path / "trial").log("status", status="FINISHED")
    back = RunLog(uri, tmp_path / "trial")
    assert [op["status"] for op in back.pending()] == ["RUNNING", "FINISHED"]
    assert back.flush()
    [run] = MlflowClient(uri).search_runs([experiment_id])
    assert run.info.status == "FINISHED"


def test_a_sweep_that_cannot_queue_its_failure_still_marks_its_parent_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk broke the sweep off, and the parent's FAILED could not be queued either:
    the parent and its trials' runs stayed RUNNING."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = _started(uri, tmp_path / "smoke")
    client = MlflowClient(uri)
    trial = client.create_run(
        tracker.experiment_id, tags={"mlflow.parentRunId": tracker.parent.run_id}
    )

    def full(*args: Any, **kwargs: Any) -> bool:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tracker.parent, "log", full)
    tracker.fail()
    assert client.get_run(tracker.parent.run_id).info.status == "FAILED"
    assert client.get_run(trial.info.run_id).info.status == "KILLED"


def test_a_sweep_resumed_against_another_mlflow_names_the_one_it_started_with(
    tmp_path: Path,
) -> None:
    """--resume from another folder reaches another default sqlite store, where the parent
    run is not: the message said only that it could not be opened."""
    import json

    from ssvae_core.errors import ConfigError
    from ssvae_core.sweep import spec as specs
    from ssvae_core.sweep.tracking import SweepTracking

    first, second = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    _started(first, tmp_path / "smoke")
    assert json.loads((tmp_path / "smoke" / "sweep.json").read_text())["tracking_uri"] == first
    elsewhere = SweepTracking(second, tmp_path / "smoke", specs.load(SMOKE))
    elsewhere.connect()
    with pytest.raises(ConfigError, match=rf"started with MLflow at {first}\)"):
        elsewhere.start()


def test_runs_whose_end_is_still_pending_are_left_for_sync(tmp_path: Path) -> None:
    """MLflow out of reach at the end: finished trials whose end was still queued were
    closed KILLED, 'stopped' (a later --sync set them right); stopped or errored trials log
    no end, so they are closed now."""
    import pandas as pd

    from ssvae_core.sweep import runner

    trials = pd.DataFrame(
        {
            "trial_id": ["ok-pending", "ok-sent", "stopped-pending", "diverged-pending"],
            "status": ["ok", "ok", "stopped", "diverged"],
            "mlflow_pending": [3, 0, 2, ""],
        }
    )
    assert runner._unsent(trials) == {"ok-pending"}
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = _started(uri, tmp_path / "smoke")
    client = MlflowClient(uri)
    runs = {
        trial: client.create_run(
            tracker.experiment_id,
            tags={"mlflow.parentRunId": tracker.parent.run_id or "", "ray.trial_id": trial},
        ).info.run_id
        for trial in trials["trial_id"]
    }
    tracker.reconcile({}, runner._unsent(trials))
    status = {trial: client.get_run(run).info.status for trial, run in runs.items()}
    assert status == {
        "ok-pending": "RUNNING",  # its end comes with --sync
        "ok-sent": "KILLED",
        "stopped-pending": "KILLED",
        "diverged-pending": "KILLED",  # nothing pending ("" in the table)
    }
