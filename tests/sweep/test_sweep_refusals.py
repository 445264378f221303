"""What a sweep refuses before any trial runs, and how fast: nothing hangs, nothing is left
RUNNING in MLflow, and the message names the key, the address or the other driver."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytest.importorskip("mlflow")

from sweep_helpers import free_port, write_spec

from ssvae_core import cli
from ssvae_core.sweep import lock


@pytest.mark.parametrize(
    ("resources", "message"),
    [
        ("{gpu: 2}", "resources.gpu: each trial asks for 2 GPU on one node, and no node"),
        ("{cpu: 1000}", "resources.cpu: each trial asks for 1000 CPU on one node"),
    ],
)
def test_a_trial_no_node_can_hold_is_refused_at_once(
    workdir: Path, capsys: pytest.CaptureFixture[str], resources: str, message: str
) -> None:
    path = write_spec(workdir, "huge", f"grid: {{train.seed: [0]}}\nresources: {resources}\n")
    started = time.monotonic()
    assert cli.main(["sweep", str(path), "--storage-path", "runs"]) == 2
    assert time.monotonic() - started < 60  # Ray's start-up, not a wait for a node
    assert message in capsys.readouterr().err
    assert not (workdir / "mlflow.db").exists()  # refused before the parent run existed


def test_an_address_that_does_not_answer_exits_3_before_mlflow(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_spec(workdir, "far", "grid: {train.seed: [0]}\n")
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    assert cli.main(["sweep", str(path), "--address", address, "--storage-path", "runs"]) == 3
    assert time.monotonic() - started < 20
    assert f"--address {address}: nothing answers" in capsys.readouterr().err
    assert not (workdir / "mlflow.db").exists()


def test_a_ray_address_in_the_environment_is_checked_as_address_is(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ray.init joins $RAY_ADDRESS when no address is given, and retried one where nothing
    answers without end: the sweep hung (killed by timeout at 120 s)."""
    path = write_spec(workdir, "far", "grid: {train.seed: [0]}\n")
    address = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("RAY_ADDRESS", address)
    started = time.monotonic()
    assert cli.main(["sweep", str(path), "--storage-path", "runs"]) == 3
    assert time.monotonic() - started < 20
    assert f"$RAY_ADDRESS={address}: nothing answers" in capsys.readouterr().err
    assert not (workdir / "mlflow.db").exists()


@pytest.mark.parametrize("port", ["\u00b2", "99999", "0", "x"])
def test_a_port_that_is_no_port_is_refused_naming_it(
    workdir: Path, capsys: pytest.CaptureFixture[str], port: str
) -> None:
    """'²' passed str.isdigit and int() raised (a traceback); 99999 made socket raise
    OverflowError (a traceback); 'x' was taken as Ray's default port 6379."""
    path = write_spec(workdir, "far", "grid: {train.seed: [0]}\n")
    address = f"127.0.0.1:{port}"
    assert cli.main(["sweep", str(path), "--address", address, "--storage-path", "runs"]) == 2
    said = capsys.readouterr().err
    assert f"--address {address}: the port in {address!r} is not a number in 1-65535" in said
    assert not (workdir / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--address", "127.0.0.1:99999"], {}, "--address 127.0.0.1:99999: the port in"),
        ([], {"TMPDIR": "afile"}, "$TMPDIR: cannot write to afile/ray"),
    ],
)
def test_a_dry_run_refuses_what_the_run_would(
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    environ: dict[str, str],
    message: str,
) -> None:
    """--dry-run said 'nothing was run', exit 0, for input the run refused with exit 2."""
    path = write_spec(workdir, "dry", "grid: {train.seed: [0]}\n")
    (workdir / "afile").write_text("")
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["sweep", str(path), "--dry-run", "--storage-path", "runs", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("var", ["TMPDIR", "RAY_TMPDIR"])
def test_a_temp_folder_ray_cannot_use_is_named_before_ray_starts(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, var: str
) -> None:
    """A file there was exit 3 '[Errno 20] Not a directory: .../ray; once fixed, try
    --resume', after the parent run was opened (nothing had run to resume)."""
    path = write_spec(workdir, "tmp", "grid: {train.seed: [0]}\n")
    (workdir / "afile").write_text("")
    monkeypatch.setenv(var, str(workdir / "afile"))
    assert cli.main(["sweep", str(path), "--storage-path", "runs"]) == 2
    said = capsys.readouterr().err.strip().splitlines()[-1]
    assert said.startswith(f"ssvae sweep: error: ${var}: cannot write to {workdir / 'afile'}")
    assert not (workdir / "mlflow.db").exists()


def test_a_second_driver_of_the_same_name_is_refused(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_spec(workdir, "twice", "grid: {train.seed: [0]}\n")
    holder = workdir / "runs" / ".twice.lock"
    with lock.exclusive(holder, "sweep twice"):  # the first driver, still running
        assert cli.main(["sweep", str(path), "--storage-path", "runs"]) == 3
    assert "sweep twice is running already" in capsys.readouterr().err
    assert not (workdir / "mlflow.db").exists()


def test_cuda_trials_without_a_gpu_share_are_refused_before_ray(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import ray

    path = write_spec(workdir, "cuda", "grid: {train.seed: [0]}\n", {"train.device": "cuda"})
    assert cli.main(["sweep", str(path), "--storage-path", "runs"]) == 2
    assert "train.device: cuda in grid cell (train.seed=0), but resources.gpu is 0" in (
        capsys.readouterr().err
    )
    assert not ray.is_initialized()


def test_sync_of_a_sweep_that_never_ran_says_so(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_spec(workdir, "never", "grid: {train.seed: [0]}\n")
    assert cli.main(["sweep", str(path), "--storage-path", "runs", "--sync"]) == 2
    assert "--sync: no sweep has run in" in capsys.readouterr().err
    assert not (workdir / "mlflow.db").exists()


@pytest.mark.parametrize("command", ["sweep", "nightly"])
def test_a_spec_from_a_pipe_is_read_once(
    workdir: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """``ssvae sweep <(cat spec.yaml)``: the file was read twice, and the drained pipe then
    read as an empty file: every such spec was refused as not a mapping."""
    import threading

    fifo = workdir / "spec.yaml"
    os.mkfifo(fifo)
    body = "name: piped\nbase: {preset: small, train.lr: -1}\ngrid: {train.seed: [0]}\n"

    def write() -> None:
        with open(fifo, "w") as pipe:  # waits for the reader
            pipe.write(body)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    assert cli.main([command, str(fifo), "--storage-path", "runs"]) == 2
    writer.join(timeout=5)
    assert "train.lr: must be in (0, 10], got -1.0 (in base)" in capsys.readouterr().err


def test_an_empty_spec_file_is_named_in_the_message(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "empty.yaml").write_text("")
    assert cli.main(["sweep", str(workdir / "empty.yaml")]) == 2
    assert f"{workdir / 'empty.yaml'}: expected a mapping of sections, got None" in (
        capsys.readouterr().err
    )


def test_sync_beside_the_sweeps_live_driver_is_refused_with_exit_3(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--sync`` took no lock: replaying beside a live driver, both rewrote the pending file
    and the driver's queued run end was lost (the run stayed RUNNING for good)."""
    from ssvae_core.sweep import lock

    path = write_spec(workdir, "live", "grid: {train.seed: [0]}\n")
    (workdir / "runs" / "live").mkdir(parents=True)
    (workdir / "runs" / "live" / "sweep.json").write_text('{"uid": "0", "name": "live"}')
    with lock.exclusive(workdir / "runs" / ".live.lock", "sweep live"):  # the driver's
        assert cli.main(["sweep", str(path), "--storage-path", "runs", "--sync"]) == 3
    assert "sweep live is running already (pid" in capsys.readouterr().err
    assert not (workdir / "mlflow.db").exists()  # nothing replayed


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["sweep", "--tracking-uri", "bogus://x"], {}, "--tracking-uri: no MLflow store for "
         "bogus:// in bogus://x; use one of databricks, databricks-uc, file, http, https"),
        (["nightly"], {"MLFLOW_TRACKING_URI": "ftp://h/x"}, "$MLFLOW_TRACKING_URI: no MLflow "
         "store for ftp://"),
        # each of these below started Ray, then was exit 3 'unreachable'
        (["sweep"], {"MLFLOW_TRACKING_URI": " sqlite:///x.db"}, "$MLFLOW_TRACKING_URI: "
         "' sqlite:///x.db' holds a space or control character"),
        (["sweep", "--tracking-uri", "SQLITE:///up.db"], {}, "--tracking-uri: write the scheme "
         "in lower case (sqlite://...)"),
        (["sweep", "--tracking-uri", "http://"], {}, "--tracking-uri: http:// names no host"),
        # it wrote MLflow's ~60 tables into another program's database, then exit 3
        (["sweep", "--tracking-uri", "sqlite:///foreign.db"], {}, "--tracking-uri: foreign.db "
         "is a SQLite database without MLflow's tables, so not an MLflow database (left as it is)"),
        (["nightly", "--tracking-uri", "sqlite:///notes.db"], {}, "--tracking-uri: notes.db is "
         "not a SQLite database"),
    ],
)  # fmt: skip
def test_a_tracking_uri_mlflow_has_no_store_for_is_refused_before_ray(
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    environ: dict[str, str],
    message: str,
) -> None:
    import ray

    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    from ssvae_core import cli as ssvae

    path = write_spec(workdir, "uri", "grid: {train.seed: [0]}\n")
    sqlite3.connect(workdir / "foreign.db").execute("create table notes(id int)").connection.close()
    (workdir / "notes.db").write_text("hello")
    before = (workdir / "foreign.db").read_bytes()
    assert ssvae.main([argv[0], str(path), *argv[1:], "--storage-path", "runs"]) == 2
    assert message in capsys.readouterr().err
    assert not ray.is_initialized()
    assert (workdir / "foreign.db").read_bytes() == before  # untouched


def test_a_missing_or_empty_sqlite_file_or_a_folder_with_capitals_is_mlflows(
    tmp_path: Path,
) -> None:
    """A folder store whose path held a capital was refused: 'write the scheme in lower case
    (/home/alice/mlruns://...)'."""
    from ssvae_core.sweep import tracking

    (tmp_path / "empty.db").write_bytes(b"")
    (tmp_path / "link.db").symlink_to(tmp_path / "absent.db")
    for name in ("new.db", "empty.db", "link.db"):
        uri = f"sqlite:///{tmp_path / name}"
        assert tracking.default_uri(uri) == uri
    for folder in (str(tmp_path / "MyRuns"), f"file://{tmp_path / 'MyRuns'}"):
        assert tracking.default_uri(folder) == folder


@pytest.mark.parametrize(
    ("uri", "file"),
    [
        ("sqlite:///m.db", "m.db"),
        ("sqlite:////abs/m.db", "/abs/m.db"),
        ("sqlite+pysqlite:///m.db?timeout=20", "m.db"),  # was left relative, and no file
        ("sqlite:///m.db?timeout=20", "m.db"),  # was the file 'm.db?timeout=20'
        ("sqlite:///runs#1.db", "runs#1.db"),  # not a URL's fragment
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("postgresql://u@h/db", None),
    ],
)
def test_a_sqlite_uri_names_its_file_with_a_driver_or_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, uri: str, file: str | None
) -> None:
    """Trials run in other folders: each must reach the file the driver named, with the
    URI's options kept (SQLAlchemy's forms, which MLflow takes)."""
    from ssvae_core.sweep import tracking

    monkeypatch.chdir(tmp_path)
    assert tracking.sqlite_file(uri) == (None if file is None else Path(file))
    resolved = tracking.resolve_uri(uri)
    if file is None or file.startswith("/"):
        assert resolved == uri
    else:
        scheme, _, rest = uri.partition(":///")
        assert resolved == f"{scheme}:///{tmp_path / file}{rest.removeprefix(file)}"


def test_a_sqlite_uri_with_options_is_checked_for_a_writable_folder(tmp_path: Path) -> None:
    from ssvae_core.errors import ConfigError
    from ssvae_core.sweep import tracking

    uri = f"sqlite+pysqlite:///{tmp_path}/missing/m.db?timeout=1"
    with pytest.raises(ConfigError, match=r"cannot write .*/missing/m\.db \("):
        tracking.experiment(uri, "x")
    tracking.experiment(f"sqlite:///{tmp_path}/m.db?timeout=20", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.db", "m.db.lock"]


def test_the_tracking_schemes_are_those_mlflow_serves() -> None:
    """`tracking.TRACKING_SCHEMES` against MLflow's own (private) store registry: a new MLflow
    that adds or drops a scheme fails here rather than refusing a good URI."""
    from mlflow.tracking._tracking_service.utils import _tracking_store_registry

    from ssvae_core.sweep import tracking

    assert set(_tracking_store_registry._registry) == tracking.TRACKING_SCHEMES


def test_an_experiment_deleted_in_mlflow_is_named_not_unreachable(tmp_path: Path) -> None:
    """MLflow refuses runs in a deleted experiment: it was exit 3 'MLflow ... is
    unreachable', which no retry could fix."""
    from mlflow import MlflowClient

    from ssvae_core.errors import ConfigError
    from ssvae_core.sweep import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    made = tracking.experiment(uri, "tiny")
    assert tracking.experiment(uri, "tiny") == made
    MlflowClient(uri).delete_experiment(made)
    with pytest.raises(ConfigError, match=rf"experiment: 'tiny' \(id {made}\) was deleted in "):
        tracking.experiment(uri, "tiny")


def test_a_parent_run_deleted_in_mlflow_is_named_on_resume(tmp_path: Path) -> None:
    """A sweep's parent run deleted in the UI: --resume was exit 3 'cannot open the parent
    run', which no retry could fix."""
    from mlflow import MlflowClient

    from ssvae_core.errors import ConfigError
    from ssvae_core.sweep import spec
    from ssvae_core.sweep.tracking import SweepTracking

    sweep = spec.load(write_spec(tmp_path, "gone", "grid: {train.seed: [0]}\n"))
    uri, directory = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "runs" / "gone"
    first = SweepTracking(uri, directory, sweep)
    first.connect()
    parent = first.start().parent_run_id
    MlflowClient(uri).delete_run(parent)
    again = SweepTracking(uri, directory, sweep)  # --resume: the same folder
    again.connect()
    with pytest.raises(ConfigError, match=rf"--resume: the sweep's parent run {parent} was "):
        again.start()
