"""``ssvae nightly history`` and the past nights ``ssvae nightly`` reads, without Ray.

MLflow is a sqlite file in the test's folder; its nights are parent runs made by hand, each
with a ``trials.csv`` artifact. Nothing here starts Ray (the one test that drives
`run_nightly` replaces its sweep with tonight's table, written by hand).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("mlflow")

from sweep_helpers import write_spec

from ssvae_core import cli
from ssvae_core.sweep.nightly import history
from ssvae_core.sweep.nightly.compare import compare, unfit

TAGS = {"ssvae.nightly": "true", "ssvae.sweep": "tonight", "ssvae.role": "parent"}
CELLS, SEEDS = ["method"], ["train.seed"]


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory (where a default ``mlflow.db`` would land)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


def _trials(px: float = 0.5) -> pd.DataFrame:
    """A night of the grid method x train.seed, every trial ok."""
    rows = [{"tuner_run": "grid", "trial_id": f"t{i}", "method": method, "train.seed": seed,
             "status": "ok", "probe_error_px": px + seed / 100, "seconds": 1.0}
            for i, (method, seed) in enumerate((m, s) for m in ("gaussian", "untrained")
                                               for s in range(3))]  # fmt: skip
    return pd.DataFrame(rows)


def _damaged(column: str, value: str) -> pd.DataFrame:
    table = _trials()
    table[column] = table[column].astype(object)
    table.loc[1, column] = value
    return table


def _store(
    folder: Path,
    nights: list[tuple[str, pd.DataFrame]],
    experiment_name: str,
    params: dict[str, str] | None = None,
) -> str:
    """A sqlite MLflow in `folder` with finished nightlies of spec "tonight", oldest first,
    each with `params` as its parent run's; -> its URI."""
    from mlflow import MlflowClient

    from ssvae_core.sweep.tracking import experiment

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client, experiment_id = MlflowClient(uri), experiment(uri, experiment_name)
    start = int(time.time() * 1000) - 10_000
    for i, (name, table) in enumerate(nights):
        run = client.create_run(experiment_id, run_name=name, tags=TAGS, start_time=start + i)
        for key, value in (params or {}).items():
            client.log_param(run.info.run_id, key, value)
        csv = folder / "upload" / "trials.csv"
        csv.parent.mkdir(exist_ok=True)
        table.to_csv(csv, index=False)
        client.log_artifact(run.info.run_id, str(csv))
        client.set_terminated(run.info.run_id, "FINISHED")
    return uri


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under `folder`, with its size and modification time."""
    return {str(p): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in folder.rglob("*")}


# ------------------------------------------------- 1. a past night with text in a number


@pytest.mark.parametrize(("column", "value"), [("probe_error_px", "abc"), ("seconds", "x")])
def test_history_leaves_out_a_night_with_text_where_a_number_belongs(
    here: Path, caplog: pytest.LogCaptureFixture, column: str, value: str
) -> None:
    """It crashed (exit 1, ``TypeError: dtype 'str' does not support operation 'median'``)."""
    bad = ("bad", _damaged(column, value))  # the newest night's baseline
    nights = [("n1", _trials()), ("n2", _trials()), bad, ("n4", _trials(0.6))]
    uri = _store(here / "store", nights, "tonight")
    argv = ["nightly", "history", "tonight", "--tracking-uri", uri, "--out", "o"]
    assert cli.main(argv) == 0
    assert list(pd.read_csv(here / "o" / "history.csv", index_col="cell").columns) == [
        "n4", "n2", "n1"
    ]  # fmt: skip
    said = f"has a damaged trials.csv (column {column!r} holds {value!r} in row 2"
    assert "nightly bad (" in caplog.text and said in caplog.text


def test_history_on_a_full_disk_names_out_and_leaves_no_earlier_file_beside_a_new_one(
    here: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """It blamed the storage path (which history never uses) and kept the last history's
    figure beside the new table."""
    import errno

    from ssvae_core.sweep.nightly import report

    uri = _store(here / "store", [("n1", _trials()), ("n2", _trials(0.6))], "tonight")
    argv = ["nightly", "history", "tonight", "--tracking-uri", uri, "--out", "o"]
    assert cli.main(argv) == 0
    capsys.readouterr()
    real = report.write_text

    def full(path: Path, text: str) -> None:
        if Path(path).name == "history.md":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, text)

    monkeypatch.setattr(report, "write_text", full)
    assert cli.main(argv) == 3
    err = capsys.readouterr().err
    assert err == "ssvae nightly: error: --out: could not write in o: No space left on device\n"
    assert sorted(p.name for p in (here / "o").iterdir()) == ["history.csv"]  # tonight's


def test_compare_names_text_in_a_number_column_instead_of_a_type_error() -> None:
    damaged = _damaged("probe_error_px", "abc")
    why = "column 'probe_error_px' holds 'abc' in row 2, not a number"
    assert unfit(damaged, CELLS, SEEDS) == f"trials table: {why}"
    with pytest.raises(ValueError, match=why):
        compare(_trials(), damaged, [damaged], CELLS, SEEDS)
    diverged = _trials()
    diverged.loc[0, ["status", "probe_error_px"]] = ["diverged", None]  # empty: still a table
    assert unfit(diverged, CELLS, SEEDS) is None
    assert compare(_trials(), diverged, [diverged], CELLS, SEEDS).verdict == "pass"


def test_tables_leave_out_a_damaged_night_so_tonights_comparison_goes_on(here: Path) -> None:
    """What ``ssvae nightly`` reads before its verdict: `history.Tables` over MLflow."""
    from mlflow import MlflowClient

    from ssvae_core.sweep.nightly import history

    nights = [("n1", _trials()), ("n2", _trials()), ("bad", _damaged("seconds", "x"))]
    uri = _store(here / "store", nights, "tonight")
    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name("tonight").experiment_id
    runs = history.nightlies(client, experiment_id, "tonight", "FINISHED")
    tables = history.Tables(client, uri, lambda table: unfit(table, CELLS, SEEDS))
    read = [tables.read(run) for run in runs]  # newest first: bad, n2, n1
    assert read[0] is None and "column 'seconds' holds 'x'" in tables.left_out[runs[0].info.run_id]
    past = [table for table in read if table is not None]
    assert compare(_trials(), past[0], past, CELLS, SEEDS).verdict == "pass"


def test_nightly_compares_tonight_with_the_nights_before_a_damaged_one(
    here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run_nightly` from its start to its verdict, its sweep replaced by tonight's table."""
    pytest.importorskip("ray")  # run.py imports the runner; Ray itself is never started
    from ssvae_core.sweep import spec as specs
    from ssvae_core.sweep.nightly import run
    from ssvae_core.sweep.runner import SweepResult

    spec = specs.load(write_spec(here, "tonight", "grid: {method: [gaussian, untrained], "
                                 "train.seed: [0, 1, 2]}\n"
                                 "nightly: {tolerance: {abs_px: 0.2}}\n"))  # fmt: skip
    nights = [("n1", _trials()), ("n2", _trials()), ("bad", _damaged("probe_error_px", "abc"))]
    uri = _store(here / "store", nights, spec.experiment)
    directory = here / "runs" / "tonight-1"
    tags: dict[str, str] = {}

    def sweep(*args: Any, **kwargs: Any) -> SweepResult:
        tags.update(kwargs["parent_tags"])
        directory.mkdir(parents=True)
        _trials().to_csv(directory / "trials.csv", index=False)
        return SweepResult(pd.DataFrame(), _trials(), directory, "p1", uri)

    monkeypatch.setattr(run, "run_sweep", sweep)
    monkeypatch.setattr(run, "_report", lambda spec, result, comparison, *_: comparison)
    options = run.NightlyOptions(tracking_uri=uri, storage_path=here / "runs")
    comparison: Any = run.run_nightly(spec, options)
    assert comparison.verdict == "pass"  # against n2, the newest night that can be read
    assert set(comparison.nights["night"]) == {0, 1, 2}  # tonight, n2, n1
    assert comparison.tolerance.abs_px == 0.2
    written = json.loads(tags["ssvae.nightly.tolerance"])  # for `history`, judging as tonight
    assert written == {"abs_px": 0.2, "rel": 0.05, "slowdown": 1.5, "history_z": 3.0}


def test_history_draws_the_bands_of_the_newest_nights_tolerance(
    here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its spec's ``nightly.tolerance``, not the defaults: its figure showed bands other
    than those its verdict was judged by."""
    from ssvae_core.sweep.nightly import report

    uri = _store(here / "store", [("n1", _trials()), ("n2", _trials())], "tonight")
    drawn: list[Any] = []
    monkeypatch.setattr(report, "plot_cell_history", lambda comparison, _: drawn.append(
        comparison.tolerance))  # fmt: skip
    report.history_report("tonight", uri, here / "o")
    assert drawn[-1] == report.history.Tolerance()  # no tag: a night before it was written
    from mlflow import MlflowClient

    newest = report.history.nightlies(MlflowClient(uri), "1", "tonight")[0]
    tag = '{"abs_px": 0.2, "rel": 0.1, "slowdown": 2.0, "history_z": 4.0}'
    MlflowClient(uri).set_tag(newest.info.run_id, "ssvae.nightly.tolerance", tag)
    report.history_report("tonight", uri, here / "o")
    assert drawn[-1] == report.history.Tolerance(0.2, 0.1, 2.0, 4.0)


# ------------------------------------------- 2. a sqlite file that is not an MLflow database


def _not_databases(folder: Path) -> dict[str, Path]:
    folder.mkdir()
    os.mkfifo(folder / "pipe.db")
    (folder / "dir.db").mkdir()
    (folder / "empty.db").write_bytes(b"")
    (folder / "text.db").write_text("not a database\n")
    with sqlite3.connect(folder / "other.db") as db:
        db.execute("CREATE TABLE notes (x)")
    with sqlite3.connect(folder / "damaged.db") as db:  # its schema page overwritten
        db.execute("CREATE TABLE experiments (x)")
    damaged = bytearray((folder / "damaged.db").read_bytes())
    damaged[100:4096] = b"\xff" * (4096 - 100)
    (folder / "damaged.db").write_bytes(bytes(damaged))
    return {
        "does not exist": folder / "a" / "b" / "c" / "none.db",
        "is a directory": folder / "dir.db",
        "is a named pipe": folder / "pipe.db",
        "is empty": folder / "empty.db",
        "is not a SQLite database": folder / "text.db",
        "is a SQLite database without MLflow's tables": folder / "other.db",
        # was 3 lines of SQLAlchemy's (its SQL, a link), exit 3 'unreachable'
        "is damaged (database disk image is malformed)": folder / "damaged.db",
    }


def test_history_refuses_a_sqlite_path_that_is_no_mlflow_database_and_creates_nothing(
    here: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """A missing file was created (with its folders) and filled with MLflow's tables; an
    empty one filled; a directory took 106 s of MLflow's retries, a named pipe 56 s."""
    paths = _not_databases(here / "files")
    before = _listing(here)
    for why, path in paths.items():
        started = time.monotonic()
        argv = ["nightly", "history", "tonight", "--tracking-uri", f"sqlite:///{path}"]
        assert cli.main([*argv, "--out", "o"]) == 2, why
        assert time.monotonic() - started < 10, why
        err = capsys.readouterr().err
        assert f"error: --tracking-uri: {path} {why}" in err
        assert err.count("\n") == 1, err
    assert _listing(here) == before  # nothing created, nothing changed
    assert "Creating initial MLflow database tables" not in caplog.text


def test_history_with_the_default_uri_creates_no_mlflow_db(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["nightly", "history", "tonight"]) == 2
    err = capsys.readouterr().err
    assert f"--tracking-uri (default sqlite:///mlflow.db): {here / 'mlflow.db'} does not" in err
    assert list(here.iterdir()) == []


# ------------------------------------------------- 3. options that history has no use for


@pytest.mark.parametrize(
    "extra",
    [
        ["--set", "train.lr=abc"],
        ["--baseline", "nonexistent-run"],
        ["--name", "../../x"],
        ["--address", "auto"],
        ["--notify", "http://127.0.0.1:9/hook"],
        ["--storage-path", "elsewhere"],
        ["--set", "train.lr=abc", "--baseline", "nonexistent-run", "--name", "../../x"],
    ],
)
def test_history_refuses_the_options_of_a_night(
    here: Path, capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    """They were ignored, exit 0."""
    uri = _store(here / "store", [("n1", _trials())], "tonight")
    argv = ["nightly", "history", "tonight", "--tracking-uri", uri, "--out", "o"]
    assert cli.main([*argv, *extra]) == 2
    said = capsys.readouterr().err.splitlines()[-1]
    assert ": not for 'ssvae nightly history SPEC_NAME', which takes only --out" in said
    named = said.split("error: ")[1].split(": not for")[0].split(", ")
    assert sorted(named) == sorted(flag for flag in extra if flag.startswith("--"))
    assert not (here / "o").exists()
    assert cli.main(argv) == 0  # the same without them


def test_a_night_still_takes_its_options() -> None:
    argv = ["nightly", "s.yaml", "--baseline", "abc", "--set", "a=1", "--name", "n", "--address",
            "auto", "--notify", "http://h/x", "--storage-path", "s", "--history", "3",
            "--tracking-uri", "sqlite:///m.db"]  # fmt: skip
    args = cli.build_parser().parse_args(argv)
    assert (args.baseline, args.overrides, args.name, args.history) == ("abc", ["a=1"], "n", 3)
    assert cli.build_parser().parse_args(["nightly", "s.yaml"]).baseline is None  # = "last"


def test_a_night_refuses_out_which_only_history_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ssvae nightly SPEC --out DIR`` ignored --out: the night wrote elsewhere."""
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\n")
    assert cli.main(["nightly", str(spec), "--out", str(tmp_path / "o")]) == 2
    assert "--out: only for 'ssvae nightly history'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_night_reads_a_method_named_na_or_01_by_its_name(here: Path) -> None:
    """As `ssvae report` reads it (`tables.read_trials`): pandas read NaN and 1, so the
    nightly's cells were '-' and '1' where the report's were 'NA' and '01'."""
    from mlflow import MlflowClient

    from ssvae_core.sweep.nightly import history

    table = _trials().assign(method=["NA"] * 3 + ["01"] * 3)
    uri = _store(here / "store", [("n1", table)], "tonight")
    client = MlflowClient(uri)
    run = history.nightlies(client, "1", "tonight")[0]
    assert history.trials(client, run)["method"].tolist() == ["NA"] * 3 + ["01"] * 3


def test_history_of_a_search_keeps_its_cells_by_the_axes_the_night_logged(here: Path) -> None:
    """A searched key sits between ``trial_id`` and ``status`` too: read as an axis, every
    trial was a cell of its own (its lr), and no night could be paired with another."""
    from ssvae_core.sweep.nightly import report

    def searched(seed: int) -> pd.DataFrame:
        table = _trials()
        lr = np.random.default_rng(seed).uniform(0.01, 0.1, len(table))
        return table.assign(**{"train.lr": lr})[[*table.columns[:4], "train.lr",
                                                 *table.columns[4:]]]  # fmt: skip

    nights = [("n1", searched(1)), ("n2", searched(2))]
    uri = _store(here / "store", nights, "tonight", {"sweep.axes": "method,train.seed"})
    report.history_report("tonight", uri, here / "o")
    history = pd.read_csv(here / "o" / "history.csv")
    assert history["cell"].tolist() == ["gaussian", "untrained"]
    assert history[["n1", "n2"]].notna().all().all()


# ------------------------------------------------- 4. what a night cannot be judged against


def test_a_searched_spec_is_refused_before_any_compute(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It trained every trial, then crashed in the comparison (a traceback, exit 1: the status
    of a regression), leaving a nightly-tagged parent run without a verdict."""
    spec = Path(__file__).resolve().parents[2] / "sweeps" / "optuna-lr-lengthscale.yaml"
    assert cli.main(["nightly", str(spec)]) == 2
    said = capsys.readouterr().err.strip()
    assert said.startswith("ssvae nightly: error: search: a nightly pairs each grid cell")
    assert list(here.iterdir()) == []  # no MLflow database, no sweep folder


def test_a_baseline_of_another_spec_is_refused(here: Path) -> None:
    """It was paired cell by cell with tonight's (another video, other epochs): exit 0, pass."""
    from mlflow import MlflowClient

    from ssvae_core.errors import ConfigError

    uri = _store(here / "store", [("n1", _trials())], "tonight")
    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("tonight").experiment_id])
    assert history.baseline(client, run.info.run_id, "tonight").info.run_id == run.info.run_id
    with pytest.raises(ConfigError, match="is a sweep of spec 'tonight', not of 'other'"):
        history.baseline(client, run.info.run_id, "other")


def test_a_night_named_after_an_earlier_sweep_is_refused_without_resume_advice(
    here: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It said 'pass --resume to continue it', an option ssvae nightly does not have."""
    spec = Path(__file__).resolve().parents[2] / "sweeps" / "nightly-small.yaml"
    (here / "runs" / "n1").mkdir(parents=True)
    (here / "runs" / "n1" / "sweep.yaml").write_text("name: nightly-small\n")
    assert cli.main(["nightly", str(spec), "--name", "n1", "--storage-path", "runs"]) == 2
    said = capsys.readouterr().err.strip()
    assert said.startswith(f"ssvae nightly: error: --name: {here / 'runs' / 'n1'} holds a sweep")
    assert "--resume" not in said and not (here / "mlflow.db").exists()


def test_a_night_quiets_mlflows_schema_note_before_it_opens_mlflow(
    here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first night printed MLflow's 'Creating initial MLflow database tables...' above its
    own lines: the night opened MLflow before anything had quieted it."""
    import logging

    from ssvae_core.sweep import spec
    from ssvae_core.sweep.nightly.run import NightlyOptions, run_nightly
    from ssvae_core.sweep.tracking import TrackingUnavailable

    schema = logging.getLogger("mlflow.store.db.utils")
    monkeypatch.setattr(schema, "level", logging.NOTSET)  # as in a fresh process
    seen: list[int] = []

    def experiment(uri: str, name: str) -> str:
        seen.append(schema.getEffectiveLevel())
        raise TrackingUnavailable("stop here", uri)

    monkeypatch.setattr("ssvae_core.sweep.nightly.run.experiment", experiment)
    night = spec.load(Path(__file__).resolve().parents[2] / "sweeps" / "nightly-small.yaml")
    with pytest.raises(TrackingUnavailable, match="stop here"):
        run_nightly(night, NightlyOptions(storage_path=here / "runs"))
    assert seen == [logging.ERROR]
