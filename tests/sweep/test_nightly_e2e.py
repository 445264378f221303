"""``ssvae nightly`` end to end: nights in a row against MLflow, and what it refuses.

A night of the tiny spec below (Gaussian coupling and the untrained control x 3 seeds at
nightly-small's size) takes about 10 s; the Gaussian cell reaches ~0.55 px, so a fixed
lengthscale ten times too wide (5.7 / 2.3 / 5.2 px) is a regression the rule must name, and
going back an improvement.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar
from urllib.parse import urlparse

import pandas as pd
import pytest

pytest.importorskip("ray")
pytest.importorskip("mlflow")

from sweep_helpers import free_port, write_spec

from ssvae_core import cli

TINY_NIGHT = {
    "data.n_frames": 300, "data.size": 32, "data.diameter": 6, "train.epochs": 10,
    "train.lr": 0.02, "probe.every_epochs": 5,
}  # fmt: skip
BODY = """\
grid: {method: [gaussian, untrained], train.seed: [0, 1, 2]}
max_concurrent: 2
"""


def _spec(directory: Path) -> Path:
    return write_spec(directory, "tonight", BODY, TINY_NIGHT)


def _night(spec: Path, name: str, *extra: str) -> int:
    return cli.main(["nightly", str(spec), "--name", name, "--storage-path", "runs", *extra])


def _verdict(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "nightly" / "verdict.json").read_text())


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        _Hook.received.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.slow
def test_nights_in_a_row_baseline_pass_regression_improvement(workdir: Path) -> None:
    import ray
    from mlflow import MlflowClient

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # one Ray for 4 nights
    spec, uri = _spec(workdir), f"sqlite:///{workdir / 'mlflow.db'}"
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{server.server_address[1]}/hook"

    bad_prior = ["--set", "coupling.lengthscale=0.5", "--set", "coupling.learn_lengthscale=false"]
    assert _night(spec, "n1", *bad_prior) == 0  # the first night: nothing to compare with
    first = _verdict(workdir / "runs" / "n1")
    assert first["verdict"] == "baseline" and first["baseline_run_id"] is None

    closed = f"http://127.0.0.1:{free_port()}/hook"
    assert _night(spec, "n2", "--notify", closed) == 0  # a failed notification loses nothing
    better = _verdict(workdir / "runs" / "n2")  # the fix lands: L learned from 0.05 again
    assert better["verdict"] == "improvement"
    assert better["baseline_run_id"] == first["parent_run_id"]

    assert _night(spec, "n3", "--notify", hook) == 0
    same = _verdict(workdir / "runs" / "n3")
    assert same["verdict"] == "pass" and same["baseline_run_id"] == better["parent_run_id"]
    assert [c["delta_px"] for c in same["cells"]] == [0.0, 0.0]  # deterministic on CPU
    assert [c["n_pairs"] for c in same["cells"]] == [3, 3]
    assert _Hook.received[-1]["verdict"] == "pass" and _Hook.received[-1]["night"] == "n3"

    assert _night(spec, "n4", *bad_prior) == 1  # it breaks again: beyond tolerance and history
    worse = _verdict(workdir / "runs" / "n4")
    assert worse["verdict"] == "regression"
    regressed = [f for f in worse["findings"] if f["severity"] == "regression"]
    assert [f["cell"] for f in regressed] == ["gaussian"]
    text = (workdir / "runs" / "n4" / "nightly" / "verdict.md").read_text()
    gaussian = next(c for c in worse["cells"] if c["cell"] == "gaussian")
    assert gaussian["delta_low"] > 0.05 and gaussian["history_z"] > 3
    assert f"{gaussian['delta_px']:+.3g}" in text and "regression gaussian" in text
    untrained = next(c for c in worse["cells"] if c["cell"] == "untrained")
    assert untrained["delta_px"] == 0.0  # the prior does not touch the control

    client = MlflowClient(uri)
    parent = client.get_run(worse["parent_run_id"])
    tags = parent.data.tags
    assert tags["ssvae.nightly"] == "true" and tags["ssvae.verdict"] == "regression"
    assert tags["ssvae.baseline_run_id"] == same["parent_run_id"]
    assert tags["ssvae.git_commit"] and tags["ssvae.versions.ray"].startswith("2.")
    assert tags["mlflow.note.content"].startswith("# tonight nightly n4: regression")
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "nightly")}
    assert {"nightly/verdict.md", "nightly/paired-deltas.png", "nightly/cell-history.png"} <= (
        artifacts
    )

    out = workdir / "history"
    argv = ["nightly", "history", "tonight", "--tracking-uri", uri, "--out", str(out)]
    assert cli.main(argv) == 0
    table = pd.read_csv(out / "history.csv", index_col="cell")
    assert list(table.columns) == ["n4", "n3", "n2", "n1"]
    assert table.loc["gaussian", "n4"] == table.loc["gaussian", "n1"] > table.loc["gaussian", "n3"]
    assert (out / "cell-history.png").stat().st_size > 0
    server.shutdown()

    # The spec gains an axis: no earlier night has its column. It crashed after the compute
    # (exit 1, a traceback), night after night; now each is left out, with a warning.
    axis = "train.seed: [0, 1, 2], objective.n_negatives: [8]}"
    (workdir / "wider").mkdir()
    wider = write_spec(workdir / "wider", "tonight", BODY.replace("train.seed: [0, 1, 2]}", axis),
                       TINY_NIGHT)  # fmt: skip
    assert _night(wider, "n5", "--baseline", worse["parent_run_id"]) == 2  # asked for: refused
    assert not (workdir / "runs" / "n5").exists()  # before any compute
    assert _night(wider, "n5") == 0
    assert _verdict(workdir / "runs" / "n5")["verdict"] == "baseline"
    # n5's table is lost from MLflow's artifacts: the next night leaves n5 out as well
    n5 = client.get_run(_verdict(workdir / "runs" / "n5")["parent_run_id"])
    Path(urlparse(n5.info.artifact_uri).path, "trials.csv").unlink()
    assert _night(wider, "n6") == 0
    assert _verdict(workdir / "runs" / "n6")["verdict"] == "baseline"


def _fake_running_nightly(
    uri: str, pid: int, start_time: int | None = None, recorded: str | None = None
) -> str:
    from mlflow import MlflowClient

    from ssvae_core.sweep import process
    from ssvae_core.sweep.tracking import experiment

    client = MlflowClient(uri)
    tags = {"ssvae.nightly": "true", "ssvae.sweep": "tonight", "ssvae.role": "parent",
            "ssvae.host": os.uname().nodename, "ssvae.pid": str(pid),
            "ssvae.process": recorded or process.identity(pid)}  # fmt: skip
    run = client.create_run(
        experiment(uri, "tonight"), run_name="earlier", tags=tags, start_time=start_time
    )
    return str(run.info.run_id)


def test_of_two_nightlies_that_open_their_runs_at_once_the_later_stands_down(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two hosts (or two storage paths) sharing one MLflow: both passed the check for a
    running nightly before either had opened its run, and both ran. Here the other night
    opened its run just after this one's check (`running` finds none)."""
    from mlflow import MlflowClient

    from ssvae_core.sweep.nightly import history

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    first = _fake_running_nightly(uri, os.getpid())
    monkeypatch.setattr(history, "running", lambda *_: None)
    assert _night(_spec(workdir), "n1", "--tracking-uri", uri) == 3
    assert f"nightly earlier ({first}) of tonight started at the same time" in (
        capsys.readouterr().err
    )
    client = MlflowClient(uri)
    [mine] = client.search_runs([client.get_run(first).info.experiment_id],
                                "attributes.run_name = 'n1'")  # fmt: skip
    assert mine.info.status == "KILLED" and mine.data.tags["ssvae.status"] == "overlap"
    assert client.get_run(first).info.status == "RUNNING"  # the first one goes on
    trials = client.search_runs(
        [mine.info.experiment_id], f"tags.`mlflow.parentRunId` = '{mine.info.run_id}'"
    )
    assert trials == [] and not (workdir / "runs" / "n1" / "trials.csv").exists()


def test_a_night_whose_second_look_fails_is_not_left_running(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow blinked during the look: the run stayed RUNNING, and blocked other hosts."""
    from mlflow import MlflowClient

    from ssvae_core.sweep.nightly import history

    def blink(*_: Any) -> None:
        raise ConnectionError("MLflow went away (injected)")

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    monkeypatch.setattr(history, "overlapping", blink)
    assert _night(_spec(workdir), "n1", "--tracking-uri", uri) == 3
    assert "MLflow went away (injected)" in capsys.readouterr().err
    client = MlflowClient(uri)
    [mine] = client.search_runs([client.get_experiment_by_name("tonight").experiment_id])
    assert mine.info.status == "KILLED" and mine.data.tags["ssvae.status"] == "failed"


def test_a_night_whose_clock_runs_ahead_stands_down_at_its_second_look(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Host A's clock is 4 s ahead: its run, opened first, is stamped later than B's, opened a
    second after. A's first look finds nothing and B's finds A "later": both went on. At A's
    second look both runs exist, and A stands down."""
    from mlflow import MlflowClient

    from ssvae_core.sweep import lock, spec
    from ssvae_core.sweep.nightly import run

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client, now = MlflowClient(uri), int(time.time() * 1000)
    mine = _fake_running_nightly(uri, os.getpid(), now + 4000)
    opened: list[str] = []
    monkeypatch.setattr(run.time, "sleep", lambda _s: opened.append(
        _fake_running_nightly(uri, os.getpid(), now + 1000)))  # fmt: skip
    tonight = spec.load(_spec(workdir))
    experiment_id = client.get_run(mine).info.experiment_id
    with pytest.raises(lock.Busy) as refused:
        run._claim(client, uri, experiment_id, tonight, mine)
    assert len(opened) == 1  # it found nothing at its first look
    assert f"nightly earlier ({opened[0]}) of tonight started at the same time" in str(
        refused.value
    )
    client.set_terminated(mine, "KILLED")  # as run_sweep withdraws it
    monkeypatch.setattr(run.time, "sleep", lambda _s: None)
    run._claim(client, uri, experiment_id, tonight, opened[0])  # B goes on


def test_only_the_later_of_two_running_nightlies_is_told_to_stand_down(workdir: Path) -> None:
    from mlflow import MlflowClient

    from ssvae_core.sweep.nightly import history

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = MlflowClient(uri)
    now = int(time.time() * 1000)
    starts = (now - 2000, now - 1000, now - 1000)
    runs = [client.get_run(_fake_running_nightly(uri, os.getpid(), t)) for t in starts]
    first, tied = runs[0], sorted(runs[1:], key=lambda run: run.info.run_id)
    experiment_id = first.info.experiment_id
    assert history.overlapping(client, experiment_id, "tonight", first, None) is None
    for run in tied:  # the first started earlier, and is alive (this process)
        found = history.overlapping(client, experiment_id, "tonight", run, None)
        assert found.info.run_id == first.info.run_id
    client.set_terminated(first.info.run_id, "FINISHED")  # of two that started in one ms:
    assert history.overlapping(client, experiment_id, "tonight", tied[0], None) is None
    found = history.overlapping(client, experiment_id, "tonight", tied[1], None)
    assert found.info.run_id == tied[0].info.run_id  # the run id decides


def test_an_overlapping_nightly_is_refused_with_exit_3(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    alive = _fake_running_nightly(uri, os.getpid())
    spec = _spec(workdir)
    assert _night(spec, "n1") == 3
    assert f"({alive}) of tonight is still running" in capsys.readouterr().err
    assert not (workdir / "runs" / "n1").exists()  # nothing ran
    MlflowClient(uri).set_terminated(alive, "FINISHED")
    from ssvae_core.sweep import process

    gone = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)  # fmt: skip
    recorded = process.identity(gone.pid)
    gone.communicate(b"")
    stale = _fake_running_nightly(uri, gone.pid, recorded=recorded)
    from ssvae_core.sweep.nightly import history

    client = MlflowClient(uri)
    found = history.running(client, client.get_run(stale).info.experiment_id, "tonight", None)
    assert found is None  # its process is gone: not a reason to wait
    closed = client.get_run(stale)
    assert closed.info.status == "KILLED" and closed.data.tags["ssvae.status"] == "stale"
    trial = client.create_run(closed.info.experiment_id, tags={"mlflow.parentRunId": stale})
    client.set_terminated(stale, "RUNNING")  # stale again, with a trial's run left RUNNING
    assert history.running(client, closed.info.experiment_id, "tonight", None) is None
    assert client.get_run(trial.info.run_id).info.status == "KILLED"  # was left RUNNING


def test_an_unreachable_tracking_server_exits_3_before_any_compute(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    uri = f"http://127.0.0.1:{free_port()}"
    assert _night(_spec(workdir), "n1", "--tracking-uri", uri) == 3
    assert time.monotonic() - started < 60
    assert f"MLflow at {uri} is unreachable" in capsys.readouterr().err
    assert not (workdir / "runs" / "n1").exists()


def test_history_refuses_an_out_it_cannot_write_before_asking_mlflow(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "f").write_text("")
    argv = ["nightly", "history", "smoke", "--out", str(workdir / "f" / "h")]
    assert cli.main([*argv, "--tracking-uri", f"http://127.0.0.1:{free_port()}"]) == 2
    assert f"--out: cannot write to {workdir / 'f' / 'h'}" in capsys.readouterr().err


def test_history_takes_a_spec_name_not_a_path(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``history ../../etc`` wrote its folder outside runs/nightly-history."""
    argv = ["nightly", "history", "../../etc", "--tracking-uri", f"sqlite:///{workdir}/m.db"]
    assert cli.main(argv) == 2
    assert "SPEC_NAME: expected 1-100 letters" in capsys.readouterr().err
    assert list(workdir.iterdir()) == []  # runs/nightly-history/../../etc is workdir/etc


def test_history_from_a_database_it_cannot_reach_is_exit_3_not_a_traceback(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database URI connects when the client is made (here MySQL's driver is missing)."""
    argv = ["nightly", "history", "smoke", "--tracking-uri", "mysql://bob:s3cret@127.0.0.1:1/db"]
    assert cli.main(argv) == 3
    err = capsys.readouterr().err
    assert "MLflow at mysql://bob:***@127.0.0.1:1/db is unreachable" in err
    assert "s3cret" not in err and "Traceback" not in err


def test_a_failed_notification_does_not_print_the_webhooks_secret_path(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ssvae_core.sweep.nightly.run import notify

    port = free_port()  # nothing listens there
    assert notify(f"http://127.0.0.1:{port}/services/T0/B0/s3cret", {"verdict": "pass"}) is False
    printed = capsys.readouterr().out
    assert f"notification to http://127.0.0.1:{port}/... failed: " in printed
    assert "s3cret" not in printed
    # http.client's own refusals (not OSError) are a failed notification too, not a crash
    assert notify(f"http://127.0.0.1:{port}/s3cret path", {"verdict": "pass"}) is False
    printed = capsys.readouterr().out
    assert "can't contain control characters" in printed and "s3cret" not in printed


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "train.lrr=1"], "train.lrr: unknown key"),
        (["--history", "-1"], "--history: must be >= 0"),
        (["--baseline", "0123456789abcdef"], "--baseline: no MLflow run '0123456789abcdef'"),
        (["--name", "../escape"], "--name: expected 1-100 letters"),
        (["--notify", "file:///etc/passwd"], "--notify: expected an http:// or https:// URL"),
        (["--notify", "ftp://hooks.example"], "--notify: expected an http:// or https:// URL"),
        (["--notify", "http://127.0.0.1:99999/x"], "is not a URL (Port out of range"),
        (["--notify", "https:///path"], "with a host and port 1-65535, got https:///..."),
        (["--notify", "http://127.0.0.1:0/x"], "port 1-65535, got http://127.0.0.1:0/..."),
        (["--notify", "http://TOKEN@127.0.0.1:8/x"], "a user or token before @ is not sent"),
        (["--notify", "http://127.0.0.1:8/a b"], "--notify: a space or control character at"),
        (["--notify", "http://127.0.0.1:8/a\nb"], "--notify: a space or control character at"),
    ],
)
def test_bad_input_exits_2_before_any_trial(
    workdir: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert _night(_spec(workdir), "n1", *extra) == 2
    assert message in capsys.readouterr().err
    assert not (workdir / "runs" / "n1").exists()


def test_a_night_this_machine_cannot_hold_creates_nothing_before_its_refusal(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The refusal came after the night had made the default mlflow.db and runs/."""
    spec = _spec(workdir)
    before = sorted(p.name for p in workdir.iterdir())
    assert _night(spec, "n1", "--set", "data.size=3000000") == 2
    assert "data.size: the sweep needs about" in capsys.readouterr().err
    assert sorted(p.name for p in workdir.iterdir()) == before


@pytest.mark.slow
def test_a_night_in_which_no_trial_ran_says_why_in_one_line(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A budget spent before any trial started: exit 3 with '[Errno 2] No such file or
    directory: .../trials.csv'."""
    spec = write_spec(workdir, "tonight", BODY + "budget: {time_budget_s: 1.0e-9}\n", TINY_NIGHT)
    assert _night(spec, "n1") == 2
    said = capsys.readouterr().err.strip().splitlines()[-1]
    assert said == (
        "ssvae nightly: error: budget.time_budget_s: spent before any trial started, so no "
        "trial ran and there is no verdict tonight; give the nightly a larger budget"
    )


def test_sync_while_a_night_writes_its_verdict_is_refused(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The verdict is logged to the night's parent run after the sweep's lock was released:
    a ``--sync`` then could replay the same queue beside it."""
    from ssvae_core.sweep.nightly import run

    spec, synced = _spec(workdir), []
    report = run._report

    def sync_first(*args: Any) -> Any:
        synced.append(cli.main(["sweep", str(spec), "--name", "n1", "--storage-path", "runs",
                                "--sync"]))  # fmt: skip
        return report(*args)

    monkeypatch.setattr(run, "_report", sync_first)
    assert _night(spec, "n1") == 0
    assert synced == [3]


def test_a_bad_name_is_refused_before_mlflow_is_touched(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--name ../x`` was refused only once MLflow's database and experiment existed."""
    spec = _spec(workdir)
    assert _night(spec, "../x", "--set", "train.epochs=1") == 2
    assert "--name: expected 1-100 letters" in capsys.readouterr().err
    assert sorted(p.name for p in workdir.iterdir()) == ["tonight.yaml"]


def test_an_interrupted_nightly_says_so_in_one_line_with_exit_130(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C mid-night printed a traceback, exit 1, and advised a --resume nightly lacks."""
    from ssvae_core.sweep import runner
    from ssvae_core.sweep.nightly import run

    def interrupted(*args: Any) -> None:
        raise runner.SweepInterrupted("interrupted; continue with --resume (runs/n1)")

    monkeypatch.setattr(run, "run_nightly", interrupted)
    assert _night(_spec(workdir), "n1") == 130
    err = capsys.readouterr().err
    assert "interrupted; no verdict tonight" in err and "--resume" not in err
    assert "Traceback" not in err


class _ArtifactsDown:
    """An MLflow whose runs answer but whose artifact store does not (`listed`: what it
    lists, None: listing fails too)."""

    def __init__(self, listed: list[str] | None) -> None:
        self.listed = listed

    def get_run(self, run_id: str) -> Any:  # the tracking server answers
        return SimpleNamespace(info=SimpleNamespace(run_id=run_id))

    def download_artifacts(self, *args: Any) -> str:
        raise ConnectionError("the artifact store is down (injected)")

    def list_artifacts(self, run_id: str) -> list[Any]:
        if self.listed is None:
            raise ConnectionError("the artifact store is down (injected)")
        return [SimpleNamespace(path=path) for path in self.listed]


@pytest.mark.parametrize(
    ("listed", "left_out"), [([], True), (["trials.csv"], False), (None, False)]
)
def test_a_night_is_left_out_only_if_it_has_no_table_not_if_its_store_is_down(
    workdir: Path, listed: list[str] | None, left_out: bool
) -> None:
    """With the artifact store out of reach every night was left out, and tonight passed
    for a first night (exit 0): no regression could be found."""
    from ssvae_core.sweep.nightly.history import Tables
    from ssvae_core.sweep.tracking import TrackingUnavailable

    night = SimpleNamespace(info=SimpleNamespace(run_id="r1", run_name="n1"))
    tables = Tables(_ArtifactsDown(listed), "http://mlflow")
    if left_out:
        assert tables.read(night) is None and tables.why == "has no trials.csv"
    else:
        with pytest.raises(TrackingUnavailable, match="http://mlflow"):
            tables.read(night)


def test_history_labels_nights_of_one_name_apart_and_leaves_out_one_without_a_table(
    workdir: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """``history`` crashed (exit 1, a traceback) on two finished nights of one name (the same
    ``--name`` on two storage paths) and on a night without ``trials.csv``."""
    from mlflow import MlflowClient

    from ssvae_core.sweep.tracking import experiment

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client, experiment_id = MlflowClient(uri), experiment(uri, "tonight")
    tags = {"ssvae.nightly": "true", "ssvae.sweep": "tonight", "ssvae.role": "parent"}
    start = int(time.time() * 1000) - 10_000
    ids = {}
    nights = [("night", 0.5), ("night", 0.6), ("broken", None), ("n3", 0.7), ("old", 0.8)]
    for i, (name, px) in enumerate(nights):
        run = client.create_run(experiment_id, run_name=name, tags=tags, start_time=start + i)
        if px is not None:
            rows = [{"tuner_run": "grid", "trial_id": f"t{seed}", "method": "gaussian",
                     "train.seed": seed, "status": "ok", "probe_error_px": px + seed / 100,
                     "seconds": 1.0}
                    for seed in range(3)]  # fmt: skip
            table = pd.DataFrame(rows)
            if name == "old":  # the newest, but from before tables had "seconds"
                table = table.drop(columns="seconds")
            table.to_csv(workdir / "trials.csv", index=False)
            client.log_artifact(run.info.run_id, str(workdir / "trials.csv"))
        client.set_terminated(run.info.run_id, "FINISHED")
        ids[name, px] = run.info.run_id
    out = workdir / "history"
    argv = ["nightly", "history", "tonight", "--tracking-uri", uri, "--out", str(out)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    table = pd.read_csv(out / "history.csv", index_col="cell")
    first, second = (f"night [{ids['night', px][:8]}]" for px in (0.5, 0.6))
    assert list(table.columns) == ["n3", second, first]  # newest first; "broken" left out
    assert table.loc["gaussian", first] == pytest.approx(0.51)
    assert f"nightly broken ({ids['broken', None]}) left out: it has no trials.csv" in caplog.text
    assert f"nightly old ({ids['old', 0.8]}) left out: it cannot be compared" in caplog.text
    assert cli.main([*argv, "--history", "2"]) == 0  # 3 nights: the 2 left out do not count
    assert list(pd.read_csv(out / "history.csv", index_col="cell").columns) == ["n3", second, first]
