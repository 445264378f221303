"""One night: find the baseline, run the sweep, compare, write and send the verdict.

Order (what can refuse comes first, before any compute): MLflow reached (else exit 3); no
other nightly of the spec running (an MLflow run still RUNNING, or this machine's lock on the
spec: exit 3); the baseline and the history read from MLflow (an unknown ``--baseline`` is
exit 2). Then the sweep runs as ``ssvae sweep`` runs it (its parent tagged ``ssvae.nightly``),
tonight's trials are compared with the baseline's (`compare`), and the verdict goes to
``DIR/nightly/`` (``verdict.md``, ``verdict.json``, two figures), to the parent run (its
artifacts, its description, the tags ``ssvae.verdict`` and ``ssvae.baseline_run_id``) and,
with ``--notify URL``, as JSON in a POST. A failed notification is logged; the verdict stays.

Exit status: 0 baseline / pass / improvement, 1 regression, 2 bad input, 3 infrastructure
(MLflow unreachable, an overlapping nightly, trials that errored, logging left pending).
"""

from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.request
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ssvae_core.errors import EXIT_FAILED, EXIT_INFRA, EXIT_OK, ConfigError, url_shown
from ssvae_core.files import write_text
from ssvae_core.metrics import finite_or_none
from ssvae_core.preflight import writable_dir
from ssvae_core.sweep import lock
from ssvae_core.sweep.cluster import quiet_libraries
from ssvae_core.sweep.nightly import history
from ssvae_core.sweep.nightly.compare import Comparison, Tolerance, compare, unfit
from ssvae_core.sweep.nightly.verdict import verdict_markdown, write_verdict
from ssvae_core.sweep.preflight import check_sweep
from ssvae_core.sweep.runlog import RunLog, client
from ssvae_core.sweep.runner import SweepResult, driving, run_sweep
from ssvae_core.sweep.sections import SEED_AXES
from ssvae_core.sweep.spec import SweepSpec
from ssvae_core.sweep.storage import DEFAULT_STORAGE
from ssvae_core.sweep.tables import read_trials
from ssvae_core.sweep.tracking import (
    DEFAULT_TRACKING_URI,
    TrackingUnavailable,
    experiment,
    resolve_uri,
)

log = logging.getLogger(__name__)

NOTIFY_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class NightlyOptions:
    """The command's options (``ssvae nightly --help``)."""

    baseline: str = "last"  # or a parent run id
    history: int | None = None  # nights of history; None: the spec's nightly.history
    tracking_uri: str = DEFAULT_TRACKING_URI
    address: str | None = None
    storage_path: str | Path = DEFAULT_STORAGE
    name: str | None = None  # default: SPEC_NAME-YYYYmmdd-HHMMSS
    notify: str | None = None


@dataclass(frozen=True)
class Night:
    """What a night left: its verdict, the exit status, where the files are."""

    verdict: str
    exit_code: int
    comparison: Comparison
    sweep: SweepResult
    files: list[Path]
    notified: bool | None  # None: no --notify


def run_nightly(spec: SweepSpec, options: NightlyOptions) -> Night:
    """One night of `spec` (see the module doc)."""
    check_sweep(spec, options.address)  # this machine's refusals before MLflow or a folder
    quiet_libraries()  # MLflow's schema creation on a first night, before Ray says it
    root = writable_dir(Path(options.storage_path).resolve(), "--storage-path")
    root.mkdir(parents=True, exist_ok=True)  # for the lock
    with lock.exclusive(
        root / f".nightly-{spec.name}.lock",
        f"a nightly of {spec.name}",
    ):
        uri = resolve_uri(options.tracking_uri)
        experiment_id = experiment(uri, spec.experiment)  # TrackingUnavailable: exit 3
        mlflow = client(uri)
        lookback = spec.nightly.history if options.history is None else options.history
        seeds = [axis for axis in SEED_AXES if axis in dict(spec.axes)]
        tables = history.Tables(mlflow, uri, lambda table: unfit(table, spec.group_axes, seeds))
        try:
            busy = history.running(mlflow, experiment_id, spec.name, spec.budget.time_budget_s)
            if options.baseline == "last":
                finished = history.nightlies(mlflow, experiment_id, spec.name, "FINISHED")
                recent = finished[: max(lookback, 1)]  # a spec changed: read the recent only
                base = next((run for run in recent if tables.read(run) is not None), None)
            else:
                base = history.baseline(mlflow, options.baseline, spec.name)
                if tables.read(base) is None:
                    raise ConfigError(f"--baseline: run {options.baseline} {tables.why}")
            past = history.history(mlflow, experiment_id, spec.name, lookback, base)
            base_trials = tables.read(base) if base is not None else None
            past_trials = [t for t in map(tables.read, past) if t is not None]
        except (ConfigError, TrackingUnavailable):
            raise
        except Exception as err:  # MLflow went away between the calls
            raise TrackingUnavailable(f"MLflow at {uri}: {err}", uri) from err
        if busy is not None:
            raise lock.Busy(
                f"nightly {busy.info.run_name} ({busy.info.run_id}) of {spec.name} is still "
                "running; nightlies of one spec never overlap"
            )
        base_id = base.info.run_id if base is not None else ""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        tags = {history.NIGHTLY_TAG: "true", history.BASELINE_TAG: base_id}
        tolerance = Tolerance.of(spec.nightly)  # judged by, and tagged for `history`
        tags[history.TOLERANCE_TAG] = json.dumps(asdict(tolerance))
        result = run_sweep(
            spec,
            options.address,
            options.tracking_uri,
            False,
            options.storage_path,
            options.name or f"{spec.name}-{stamp}",
            parent_tags=tags,
            claim=lambda run_id: _claim(mlflow, uri, experiment_id, spec, run_id),
        )
        if result.trials.empty:  # the sweep said "no trial ran": nothing to judge
            raise ConfigError(
                "budget.time_budget_s: spent before any trial started, so no trial ran and "
                "there is no verdict tonight; give the nightly a larger budget"
            )
        with driving(result.directory):  # the parent run's queue: no --sync beside it
            tonight = read_trials(result.directory / "trials.csv")  # as the baseline's was read
            comparison = compare(
                tonight,
                base_trials,
                past_trials,
                spec.group_axes,
                seeds,
                tolerance,
                lookback=lookback,
                resamples=spec.nightly.resamples,
                seed=spec.nightly.seed,
            )
            return _report(spec, result, comparison, base_id, options.notify)


SETTLE_S = 10.0  # between the two looks of `_claim`: the hosts' clocks may differ by less


def _claim(mlflow: Any, uri: str, experiment_id: str, spec: SweepSpec, run_id: str) -> None:
    """Tonight's parent run is open: stand down (`lock.Busy`) if a nightly of the spec opened
    before it still runs (two nights that passed the first check at once, on two hosts or two
    storage paths sharing one MLflow). "Before" is by the runs' start times, which each host's
    clock stamps: a night whose clock runs ahead may find nothing at its first look, and the
    other then finds it "later"; so it looks again `SETTLE_S` later, when both runs exist and
    both nights judge the same two stamps, and one of them stands down."""
    for look in range(2):
        if look:
            time.sleep(SETTLE_S)
        try:
            own = mlflow.get_run(run_id)
            first = history.overlapping(
                mlflow, experiment_id, spec.name, own, spec.budget.time_budget_s
            )
        except Exception as err:
            raise TrackingUnavailable(f"MLflow at {uri}: {err}", uri) from err
        if first is not None:
            raise lock.Busy(
                f"nightly {first.info.run_name} ({first.info.run_id}) of {spec.name} started at "
                "the same time and goes on; this one stands down (nightlies of one spec never "
                "overlap)"
            )


def _report(
    spec: SweepSpec, result: SweepResult, comparison: Comparison, base_id: str, url: str | None
) -> Night:
    """Write the verdict, log it to the parent run, send it; -> the night and exit status."""
    title = f"{spec.name} nightly {result.directory.name}"
    out = result.directory / "nightly"
    files = write_verdict(comparison, out, title)
    summary = summary_json(spec, result, comparison, base_id)
    write_text(out / "verdict.json", json.dumps(summary, indent=1) + "\n")
    files.append(out / "verdict.json")
    parent = RunLog(result.tracking_uri, result.directory)
    for path in files:
        parent.log(
            "artifacts", path=str(path.relative_to(result.directory)), artifact_path="nightly"
        )
    note = verdict_markdown(comparison, title)
    summary_md = result.directory / "summary.md"
    if summary_md.exists():
        note += "\n\n" + summary_md.read_text(encoding="utf-8")
    tags = {history.VERDICT_TAG: comparison.verdict, history.BASELINE_TAG: base_id}
    parent.log("tags", values={**tags, "mlflow.note.content": note[:50_000]})
    pending = len(parent.pending())
    notified = None if url is None else notify(url, summary)
    print(note.split("\n\n## ")[0] if "\n\n## " in note else note)
    print(f"verdict: {comparison.verdict} ({out / 'verdict.md'})")
    if result.n_errors or pending:
        if pending:
            print(f"MLflow: {pending} operation(s) pending; replay with ssvae sweep --sync")
        code = EXIT_INFRA
    else:
        code = EXIT_FAILED if comparison.verdict == "regression" else EXIT_OK
    return Night(comparison.verdict, code, comparison, result, files, notified)


def summary_json(
    spec: SweepSpec, result: SweepResult, comparison: Comparison, base_id: str
) -> dict[str, Any]:
    """The verdict as plain JSON: what ``--notify`` posts and ``verdict.json`` holds."""

    def clean(value: Any) -> Any:  # a numpy scalar as Python's, then NaN as None
        return finite_or_none(value.item() if hasattr(value, "item") else value)

    cells = [{k: clean(v) for k, v in row.items()} for row in comparison.cells.to_dict("records")]
    return {
        "spec": spec.name,
        "night": result.directory.name,
        "verdict": comparison.verdict,
        "parent_run_id": result.parent_run_id,
        "baseline_run_id": base_id or None,
        "findings": [
            {"kind": f.kind, "severity": f.severity, "cell": f.cell, "text": f.text}
            for f in comparison.findings
        ],
        "cells": cells,
        "errored_trials": result.n_errors,
        "method": comparison.method,
    }


def notify(url: str, payload: dict[str, Any]) -> bool:
    """POST `payload` as JSON to `url`; a failure is logged and returns False."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=NOTIFY_TIMEOUT_S) as response:
            ok = 200 <= response.status < 300
    except (OSError, ValueError, http.client.HTTPException) as err:  # refused, reset, bad URL
        shown = url_shown(url, path=False)  # a webhook's path is its secret
        said = str(err).replace(urlsplit(url).path, "/...") if urlsplit(url).path else str(err)
        log.warning("--notify %s failed: %s (the verdict is kept in verdict.json)", shown, said)
        print(f"notification to {shown} failed: {said}; the verdict is kept")
        return False
    if not ok:
        print(
            f"notification to {url_shown(url, path=False)} answered {response.status}; "
            "the verdict is kept"
        )
    return ok
