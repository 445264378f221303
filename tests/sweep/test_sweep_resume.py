"""The driver killed after the first checkpoints, then ``--resume``: one MLflow run per trial."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

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
from ssvae_core.errors import ConfigError
from ssvae_core.sweep import checkpoints, progress, runner, spec, storage

STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


def test_a_stop_before_ray_is_ready_aborts_and_after_it_is_graceful() -> None:
    """Ctrl-C in the first ms of a Tuner run, before Ray's SIGUSR1 handler is in place, sent
    SIGUSR1 to a process whose default for it is to die (exit 138, no word, Ray left
    running); now it aborts as a second Ctrl-C does. Once Ray's handler is there, Ctrl-C and
    SIGTERM (which dumped Ray's C++ stack, exit 134) ask Ray to stop gracefully."""
    before = {signum: signal.getsignal(signum) for signum in STOPS}
    with pytest.raises(KeyboardInterrupt), runner._catch_interrupt():
        os.kill(os.getpid(), signal.SIGINT)
    asked: list[int] = []
    for stop in (signal.SIGINT, signal.SIGTERM):
        with runner._catch_interrupt() as interrupted:
            signal.signal(
                signal.SIGUSR1, lambda signum, frame, stop=stop: asked.append(stop)
            )  # Ray's
            os.kill(os.getpid(), stop)
        assert interrupted.is_set()
    assert asked == [signal.SIGINT, signal.SIGTERM]  # each asked Ray to stop
    assert {signum: signal.getsignal(signum) for signum in STOPS} == before


def test_a_tuner_run_that_saved_only_its_tuner_pkl_starts_again(tmp_path: Path) -> None:
    """A driver killed between ``tuner.pkl`` and the trials' state: Ray's ``can_restore``
    says yes, and restored one trial with no config (a KeyError per --resume, for ever)."""
    (tmp_path / "tuner.pkl").write_bytes(b"")
    assert not runner._restorable(tmp_path)
    (tmp_path / "experiment_state-2026-12-07_08-00-00.json").write_text("{}")
    assert runner._restorable(tmp_path)


def test_a_tuner_run_whose_state_was_cut_short_is_refused_by_name(tmp_path: Path) -> None:
    """Ray restored from an ``experiment_state`` cut short by a full disk as if it held
    nothing: one trial with no config, a KeyError per --resume, for ever."""
    grid = tmp_path / "smoke" / "grid"
    grid.mkdir(parents=True)
    state = grid / "experiment_state-2026-12-07_08-00-00.json"
    state.write_text('{"trial_data": [["{\\"trial_id')
    assert storage.damaged(grid) == (
        f"{state.name}: Unterminated string starting at: line 1 column 18 (char 17)"
    )
    with pytest.raises(ConfigError, match=r"is damaged \(experiment_state-.*another --name"):
        storage.check_state(spec.load(SMOKE), tmp_path / "smoke", resume=True)  # before Ray
    (grid / "experiment_state-2026-12-07_07-00-00.json").write_text("{")
    state.write_text("{}")  # an older one cut short does not count: Ray reads the newest
    assert storage.damaged(grid) is None
    state.write_text("[" * 200_000)  # was a RecursionError traceback
    assert storage.damaged(grid) == f"{state.name}: nested too deeply"


def test_a_tuner_runs_state_that_is_a_pipe_is_refused_not_waited_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused_not_waited: Any
) -> None:
    from ssvae_core import safe_yaml

    monkeypatch.setattr(safe_yaml, "PIPE_WAIT_S", 0.5)
    state = tmp_path / "experiment_state-2026-12-07_08-00-00.json"
    os.mkfifo(state)
    message = refused_not_waited(state, lambda: _raise_if_damaged(tmp_path))
    assert f"{state.name}: {state}: a pipe nothing was written to within 0.5 s" in message


def _raise_if_damaged(path: Path) -> None:
    if (why := storage.damaged(path)) is not None:
        raise ConfigError(why)


def test_progress_counts_a_trial_once_whether_ray_marked_it_finished_or_not() -> None:
    """The error callback comes after Ray marks the trial finished: it read '5 of 4 done'."""
    done, running = (
        SimpleNamespace(is_finished=lambda: True),
        SimpleNamespace(is_finished=lambda: False),
    )
    assert progress._done([done, running], done) == 1
    assert progress._done([done, running], running) == 2


def _checkpointed(workdir: Path) -> bool:
    return bool(list(workdir.glob("runs/smoke/grid/*/checkpoint_*")))


@contextmanager
def _smoke_driver(
    workdir: Path, ready: Callable[[Path], bool] = _checkpointed, interval: float = 0.1
) -> Iterator[subprocess.Popen[bytes]]:
    """The smoke sweep's driver in a process of its own, logging to driver.log, once it is
    `ready` (by default its first checkpoints are written; still running); killed by PID on
    the way out if it still runs, with its local Ray (GCS, raylet, workers, agents)."""
    log = open(workdir / "driver.log", "w")  # noqa: SIM115 - closed below
    driver = subprocess.Popen(
        sweep_command(str(SMOKE), "--storage-path", "runs"),
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        found = wait_for(lambda: ready(workdir), 240, interval)
        assert found, (workdir / "driver.log").read_text()[-3000:]
        assert driver.poll() is None, "the driver finished before it could be interrupted"
        yield driver
    finally:
        below = descendants(driver.pid)
        if driver.poll() is None:
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait()
        kill_pids(below)
        log.close()


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_into_the_same_mlflow_runs(workdir: Path) -> None:
    with _smoke_driver(workdir):
        pass  # killed on the way out, mid-sweep
    grid = workdir / "runs" / "smoke" / "grid"
    planted = 0  # a checkpoint taken after Ray last saved its state, holding a stale file
    for trial_id, index in checkpoints.saved(grid).items():
        if index < 3:  # the trial's last is checkpoint_000003 (epochs 0-2, its end)
            [trial] = grid.glob(f"*_{trial_id}_*")
            (trial / "checkpoint_000003").mkdir(exist_ok=True)
            (trial / "checkpoint_000003" / "stale").write_text("")
            planted += 1
    assert planted

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
    assert not list(grid.glob("*/checkpoint_*/stale"))  # removed before Ray wrote over it


@pytest.mark.slow
def test_sigterm_stops_a_sweep_as_ctrl_c_does_and_resume_finishes_it(workdir: Path) -> None:
    """systemd's stop or a Kubernetes deadline: once exit 134, Ray's C++ stack dump, the
    parent FAILED; now Ray saves its state and the driver says how to go on (exit 130)."""
    with _smoke_driver(workdir) as driver:
        os.kill(driver.pid, signal.SIGTERM)
        assert driver.wait(timeout=120) == 130
    said = (workdir / "driver.log").read_text()
    assert "interrupted; continue with --resume" in said
    assert "Traceback" not in said and "SIGTERM received" not in said
    assert cli.main(["sweep", str(SMOKE), "--storage-path", "runs", "--resume"]) == 0
    trials = pd.read_csv(workdir / "runs" / "smoke" / "trials.csv")
    assert sorted(trials["status"]) == ["ok"] * 4


@pytest.mark.slow
def test_sigterm_just_after_ray_starts_is_one_line_not_rays_stack(workdir: Path) -> None:
    """Between ``ray.init`` and the first Tuner run (the parent run opened, the videos
    simulated) SIGTERM met Ray's C++ handler: ``*** SIGTERM received`` and a stack, exit 15.
    Now the command's own handler holds there: one line, exit 143."""

    def ray_started(folder: Path) -> bool:
        return "Ray: started" in (folder / "driver.log").read_text()

    with _smoke_driver(workdir, ray_started, interval=0.01) as driver:
        os.kill(driver.pid, signal.SIGTERM)
        code = driver.wait(timeout=120)
    said = (workdir / "driver.log").read_text()
    assert "SIGTERM received" not in said and "Traceback" not in said, said[-3000:]
    assert code in (143, 130), said[-3000:]  # 130: it landed in the Tuner run, stopped gracefully


@pytest.mark.slow
def test_sigterm_after_ray_shuts_down_reaches_the_commands_handler(workdir: Path) -> None:
    """Ray's shutdown reset SIGTERM below Python, which still listed the command's handler:
    a SIGTERM while the tables and the report were written ended the driver silently (exit
    143 with no line, the parent run left RUNNING, no trials.csv)."""
    script = (
        "import os, signal, sys, time\n"
        "from ssvae_core.sweep import cluster\n"
        "def mine(signum, frame):\n"
        "    print('handled', flush=True)\n"
        "    sys.exit(143)\n"
        "signal.signal(signal.SIGTERM, mine)\n"
        "cluster.connect(None)\n"
        "cluster.disconnect()\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "time.sleep(10)\n"
        "print('not handled', flush=True)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=workdir, capture_output=True, text=True, timeout=180
    )
    assert done.stdout.splitlines()[-1:] == ["handled"], done.stdout + done.stderr[-3000:]
    assert done.returncode == 143
