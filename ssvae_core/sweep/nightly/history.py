"""The nightlies of a spec in MLflow: the baseline, the history, and one still running.

A nightly is a sweep's parent run tagged ``ssvae.nightly=true`` and ``ssvae.sweep=NAME``; its
trials table is its ``trials.csv`` artifact, so the history needs MLflow alone. A nightly that
still shows RUNNING blocks the next one (`running`), unless it is stale: its process is gone
(where this machine can tell, `process.alive`), or it started longer ago than its time budget
plus an hour. Two that start at once both open their runs; the later run stands down
(`overlapping`).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow import MlflowClient

from ssvae_core.errors import ConfigError
from ssvae_core.sweep import process
from ssvae_core.sweep.nightly.compare import Tolerance, not_numbers
from ssvae_core.sweep.tables import read_trials
from ssvae_core.sweep.tracking import PROCESS_TAG, STATUS_TAG, TrackingUnavailable

log = logging.getLogger(__name__)

NIGHTLY_TAG = "ssvae.nightly"
VERDICT_TAG = "ssvae.verdict"
BASELINE_TAG = "ssvae.baseline_run_id"
TOLERANCE_TAG = "ssvae.nightly.tolerance"  # the night's `Tolerance`, as JSON
STALE_MARGIN_S = 3600.0  # a RUNNING nightly older than its budget by this much is dead
STALE_WITHOUT_BUDGET_S = 24 * 3600.0


def nightlies(
    client: MlflowClient, experiment_id: str, name: str, status: str | None = None
) -> list[Any]:
    """The spec's nightly parent runs, newest first (optionally only those in `status`)."""
    filters = [f"tags.`{NIGHTLY_TAG}` = 'true'", f"tags.`ssvae.sweep` = '{name}'"]
    if status is not None:
        filters.append(f"attributes.status = '{status}'")
    return list(
        client.search_runs(
            [experiment_id], " and ".join(filters), order_by=["attributes.start_time DESC"]
        )
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(run: Any, budget_s: float | None, now: float | None = None) -> bool:
    """Whether a RUNNING nightly is dead: older than its budget plus `STALE_MARGIN_S`, or its
    driver's process gone, where this machine can tell (`process.alive` on the run's
    ``ssvae.process``; a run without it, from before it was recorded, by its host and PID)."""
    limit = STALE_WITHOUT_BUDGET_S if budget_s is None else budget_s + STALE_MARGIN_S
    age = (now if now is not None else time.time()) - run.info.start_time / 1000
    if age > limit:
        return True
    tags = run.data.tags
    if recorded := tags.get(PROCESS_TAG):  # "" where the driver had no /proc: as before
        alive = process.alive(recorded)
        return alive is False
    pid = tags.get("ssvae.pid", "")
    if not (pid.isascii() and pid.isdigit() and len(pid) <= 9):  # not "²", not 10**20: no PID
        return False
    return tags.get("ssvae.host") == socket.gethostname() and not _alive(int(pid))


def running(
    client: MlflowClient, experiment_id: str, name: str, budget_s: float | None
) -> Any | None:
    """A nightly of this spec that is still running, or None. Stale ones are closed KILLED
    (tag ``ssvae.status=stale``), so that the UI stops showing them as running."""
    for run in nightlies(client, experiment_id, name, status="RUNNING"):
        if not is_stale(run, budget_s):
            return run
        log.warning("closing stale nightly run %s (its driver is gone)", run.info.run_id)
        children = client.search_runs(
            [experiment_id],
            f"tags.`mlflow.parentRunId` = '{run.info.run_id}' and attributes.status = 'RUNNING'",
        )
        for stale in [*children, run]:  # its trials' runs too: none is left RUNNING
            client.set_tag(stale.info.run_id, STATUS_TAG, "stale")
            client.set_terminated(stale.info.run_id, "KILLED")
    return None


def overlapping(
    client: MlflowClient, experiment_id: str, name: str, own: Any, budget_s: float | None
) -> Any | None:
    """The first live nightly of this spec opened before run `own` (by start time, then run
    id), or None. Two nights (two hosts, one MLflow) can both pass `running` before either has its
    run; once each has one, both ask this, and only the later one is told to stand down."""
    order = (own.info.start_time, own.info.run_id)
    for run in reversed(nightlies(client, experiment_id, name, status="RUNNING")):  # oldest first
        if (run.info.start_time, run.info.run_id) < order and not is_stale(run, budget_s):
            return run
    return None


def tolerance(run: Any) -> Tolerance:
    """The tolerance night `run` was judged by (`TOLERANCE_TAG`); the default where the tag
    is missing (a night before it was written) or is not one."""
    try:
        return Tolerance(**json.loads(run.data.tags[TOLERANCE_TAG]))
    except (KeyError, TypeError, ValueError):
        return Tolerance()


def baseline(client: MlflowClient, choice: str, name: str) -> Any:
    """``--baseline RUN_ID``: the parent run with that id of a sweep of spec `name` (else a
    `ConfigError`: another spec's cells, video or epochs are not tonight's to pair with).
    The default, ``last``, is the newest night with a trials table (`run.run_nightly`)."""
    try:
        run = client.get_run(choice)
    except Exception:
        raise ConfigError(f"--baseline: no MLflow run {choice!r}") from None
    if run.data.tags.get("ssvae.role") != "parent":
        raise ConfigError(f"--baseline: run {choice} is not a sweep's parent run")
    if (spec := run.data.tags.get("ssvae.sweep")) != name:
        raise ConfigError(
            f"--baseline: run {choice} is a sweep of spec {spec!r}, not of {name!r}: its cells "
            "are not tonight's to pair with"
        )
    return run


def history(
    client: MlflowClient, experiment_id: str, name: str, limit: int, before: Any | None
) -> list[Any]:
    """Up to `limit` FINISHED nightlies of the spec, newest first, from `before` back."""
    finished = nightlies(client, experiment_id, name, status="FINISHED")
    if before is not None:
        start = before.info.start_time
        finished = [run for run in finished if run.info.start_time <= start]
    return finished[:limit]


def trials(client: MlflowClient, run: Any) -> pd.DataFrame:
    """A nightly's trials table, from its ``trials.csv`` artifact."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bar per night
    with tempfile.TemporaryDirectory(prefix="ssvae-night-") as folder:
        path = client.download_artifacts(run.info.run_id, "trials.csv", folder)
        return read_trials(Path(path))


class Tables:
    """Nights' trials tables, each downloaded once. A night whose table cannot be read (its
    artifact gone or damaged: not a CSV, or text where `compare` needs a number, whose median
    would be a TypeError) or does not fit the grid it is read against (`fits`: what is wrong,
    or None; the spec gained or lost an axis since) is left out, with one warning naming it
    and why (`why`, of the last night read); only an MLflow that no longer answers is an
    error (`TrackingUnavailable`)."""

    def __init__(
        self,
        mlflow: Any,
        uri: str,
        fits: Callable[[pd.DataFrame], str | None] | None = None,
        against: str = "tonight's grid",
    ) -> None:
        self.mlflow, self.uri, self.fits, self.against = mlflow, uri, fits, against
        self.tables: dict[str, pd.DataFrame | None] = {}
        self.left_out: dict[str, str] = {}  # run id -> why
        self.why = ""

    def read(self, run: Any) -> pd.DataFrame | None:
        """`run`'s trials table, or None (it is left out)."""
        run_id = run.info.run_id
        if run_id not in self.tables:
            self.tables[run_id] = self._download(run)
        table = self.tables[run_id]
        problem = None
        if table is not None and self.fits is not None and run_id not in self.left_out:
            problem = self.fits(table)
        if problem is not None:
            self._leave_out(run, f"cannot be compared with {self.against} ({problem})")
        self.why = self.left_out.get(run_id, "")
        return None if run_id in self.left_out else table

    def _download(self, run: Any) -> pd.DataFrame | None:
        try:
            table = trials(self.mlflow, run)
        except ValueError as err:  # downloaded, but not a table (pandas' errors, UTF-8)
            self._leave_out(
                run, f"has a damaged trials.csv ({type(err).__name__}: {str(err)[:200]})"
            )
        except Exception as err:
            self._check_missing(run, err)
            self._leave_out(run, "has no trials.csv")
        else:  # a table, but text where a number belongs: its medians were a TypeError
            if (problem := not_numbers(table)) is None:
                return table
            self._leave_out(run, f"has a damaged trials.csv ({problem})")
        return None

    def _leave_out(self, run: Any, why: str) -> None:
        self.left_out[run.info.run_id] = why
        log.warning("nightly %s (%s) left out: it %s", run.info.run_name, run.info.run_id, why)

    def _check_missing(self, run: Any, err: Exception) -> None:
        """A download that failed: fine if the run has no ``trials.csv`` (a night that broke
        off, an artifact removed); if it has one, or its artifacts cannot be listed, MLflow
        or its artifact store is out of reach (`TrackingUnavailable`), and a night that
        left out every earlier one would pass for a first night."""
        try:
            listed = {item.path for item in self.mlflow.list_artifacts(run.info.run_id)}
        except Exception as gone:
            raise TrackingUnavailable(f"MLflow at {self.uri}: {gone}", self.uri) from gone
        if "trials.csv" in listed:
            raise TrackingUnavailable(
                f"MLflow at {self.uri}: trials.csv of run {run.info.run_id} cannot be "
                f"downloaded ({str(err)[:200]})",
                self.uri,
            ) from err
