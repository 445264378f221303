"""``ssvae nightly history SPEC_NAME``: the history of a spec's nightlies, from MLflow alone.

The newest finished nightly is compared again with the ones before it (`compare`), and the
cells' medians per night are written as ``history.csv`` and ``history.md`` beside the
figure of each cell's history (``cell-history.png``) and the verdict of every night. It only
reads: a sqlite URI must name an MLflow database that exists (`check_database`, exit 2).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from ssvae_core.errors import ConfigError, first_line, url_shown
from ssvae_core.files import write_text
from ssvae_core.sweep.database import not_a_database
from ssvae_core.sweep.nightly import history
from ssvae_core.sweep.nightly.compare import LOOKBACK, compare, unfit
from ssvae_core.sweep.nightly.verdict import plot_cell_history
from ssvae_core.sweep.reports.common import markdown
from ssvae_core.sweep.runlog import client
from ssvae_core.sweep.sections import SEED_AXES
from ssvae_core.sweep.tracking import TrackingUnavailable, resolve_uri, sqlite_file

DEFAULT_NIGHTS = LOOKBACK


def check_database(uri: str, where: str = "--tracking-uri") -> None:
    """A sqlite `uri` must name an MLflow database that exists: MLflow would create a missing
    one (and its folders), fill an empty one with its tables, and retry a directory or a named
    pipe for minutes; the history only reads. A `ConfigError` naming `where` and the path;
    other URIs (a server, another database) pass, and are asked by `_nights`."""
    path = sqlite_file(uri)
    if path is None:
        return  # another store, or a database in memory: nothing on disk
    why = not_a_database(path)
    if why is not None:
        raise ConfigError(
            f"{where}: {path} {why}; 'ssvae nightly history' reads an MLflow database that "
            "exists, and creates none"
        )  # a sqlite URI: no password


def _nights(uri: str, name: str) -> list[Any]:
    """The spec's finished nightlies in every experiment, newest first."""
    try:
        mlflow = client(uri)  # a database URI connects here: no server, no driver
        experiments = [e.experiment_id for e in mlflow.search_experiments()]
        runs = [
            run
            for experiment in experiments
            for run in history.nightlies(mlflow, experiment, name, status="FINISHED")
        ]
    except Exception as err:
        raise TrackingUnavailable(
            f"MLflow at {uri} is unreachable: {first_line(err)}", uri
        ) from err
    runs.sort(key=lambda run: run.info.start_time, reverse=True)
    return runs


HISTORY_FILES = ("history.csv", "history.md", "cell-history.png")


def history_report(
    name: str, uri: str, out: Path, nights: int | None = None, where: str = "--tracking-uri"
) -> list[Path]:
    """Write the history of spec `name` into `out`; the paths. ConfigError: no nightly, or a
    sqlite `uri` (given as `where`) that names no MLflow database (`check_database`)."""
    uri = resolve_uri(uri)
    check_database(uri, where)
    runs = _nights(uri, name)
    if not runs:
        raise ConfigError(f"{name}: no finished nightly of this spec at {url_shown(uri)}")
    runs, tables = _tables(runs, uri, 1 + (DEFAULT_NIGHTS if nights is None else nights))
    if not runs:
        raise ConfigError(f"{name}: no finished nightly of this spec at {url_shown(uri)} has a "
                          "trials table (see the warnings above)")  # fmt: skip
    cells, seeds = _axes(tables[0], runs[0])
    with warnings.catch_warnings():  # an inf in a past night: numpy's 'invalid value'
        warnings.simplefilter("ignore", RuntimeWarning)
        comparison = compare(
            tables[0], tables[1] if len(tables) > 1 else None, tables[1:], cells, seeds,
            history.tolerance(runs[0]), lookback=len(tables) - 1,  # the newest night's bands
        )  # fmt: skip
    names = dict(enumerate(_labels(runs)))
    table = comparison.nights.assign(night=comparison.nights["night"].map(names))
    wide = table.pivot(index="cell", columns="night", values="median_px")
    wide = wide[[names[i] for i in range(len(runs)) if names[i] in wide.columns]]
    wide = wide.reindex([c for c in comparison.cells["cell"] if c in wide.index])  # grid order
    verdicts = pd.DataFrame(
        {"night": [names[i] for i in range(len(runs))],
         "verdict": [run.data.tags.get(history.VERDICT_TAG, "-") for run in runs],
         "run_id": [run.info.run_id for run in runs]}
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    files = [out / name for name in HISTORY_FILES]
    for stale in files:  # none from an earlier history beside a new one, if a write fails
        stale.unlink(missing_ok=True)
    write_text(out / "history.csv", wide.to_csv())
    text = f"# {name}: nightly history (median probe error, px; newest first)\n\n"
    text += markdown(wide.reset_index()) + "\n\n" + markdown(verdicts) + "\n"
    write_text(out / "history.md", text)
    plot_cell_history(comparison, out / "cell-history.png")
    return files


def _tables(runs: list[Any], uri: str, limit: int) -> tuple[list[Any], list[pd.DataFrame]]:
    """Up to `limit` nights whose tables can be read and compared with the newest such one,
    and their tables (a night that cannot is left out with a warning, as ``ssvae nightly``
    does, and the next older one read in its place)."""
    reader = history.Tables(client(uri), uri, _fits(), against="the newest night's grid")
    read: list[tuple[Any, pd.DataFrame]] = []
    for run in runs:
        try:
            table = reader.read(run)
        except TrackingUnavailable:
            raise
        except Exception as err:  # MLflow went away between the calls
            raise TrackingUnavailable(f"MLflow at {uri}: {err}", uri) from err
        if table is not None and not read:  # the newest: the others are read against it
            reader.fits = _fits(*_axes(table, run))
            if (table := reader.read(run)) is None:  # not even its own grid's columns
                reader.fits = _fits()
        if table is not None:
            read.append((run, table))
        if len(read) == limit:
            break
    return [run for run, _ in read], [table for _, table in read]


def _fits(
    cells: list[str] | None = None, seeds: list[str] | None = None
) -> Callable[[pd.DataFrame], str | None]:
    """What is wrong with a night's trials table (None: nothing): the columns around its grid
    missing; given the newest night's axes, a grid that cannot be compared with it."""

    def problem(trials: pd.DataFrame) -> str | None:
        if not {"trial_id", "status"} <= set(trials.columns):
            return "no trial_id and status columns"
        return None if cells is None else unfit(trials, cells, seeds or [])

    return problem


def _labels(runs: list[Any]) -> list[str]:
    """Each night's column: its run name, with its run id's start where names repeat (the
    same ``--name`` on two storage paths; two default names stamped in one second)."""
    names = [run.info.run_name for run in runs]
    return [
        name if names.count(name) == 1 else f"{name} [{run.info.run_id[:8]}]"
        for name, run in zip(names, runs, strict=True)
    ]


def _axes(trials: pd.DataFrame, run: Any) -> tuple[list[str], list[str]]:
    """A night's cell axes and seed axes: its grid's axes, as its parent run logged them
    (``sweep.axes``), else (a night before that was logged) `_grid_columns`."""
    logged = run.data.params.get("sweep.axes")
    axes = [a for a in logged.split(",") if a] if logged is not None else _grid_columns(trials)
    if not set(axes) <= set(trials.columns):  # not this table's: read it from the columns
        axes = _grid_columns(trials)
    seeds = [a for a in SEED_AXES if a in axes]
    return [a for a in axes if a not in seeds], seeds


def _grid_columns(trials: pd.DataFrame) -> list[str]:
    """The columns between a trials table's ``trial_id`` and ``status``: its grid axes, and
    a search's searched keys (`runner.trial_rows`)."""
    columns = list(trials.columns)
    return columns[columns.index("trial_id") + 1 : columns.index("status")]
