"""`run_sweep(spec, ...)`: a validated `SweepSpec` -> Ray Tune trials -> a results table.

Order of events: the sweep directory's state is checked (a fresh start never reuses one; a
resume must run the same spec), then the sweep against this machine (`preflight.check_sweep`);
Ray starts (`cluster.connect`: ``ray.init()`` on this machine without an address, the
cluster's head with one) and its nodes are asked whether a trial fits; only then is MLflow
reached and the parent run opened (an unreachable MLflow is a `TrackingUnavailable` before
any trial starts), and each distinct video simulated once. Then each Tuner run of
`space.tuner_runs` (the grid, or one Optuna study per grid cell when the spec has a
``search``) runs under ``SWEEP_DIR/NAME``; with
``resume=True`` a Tuner run that can be restored is restored (``resume_unfinished``,
``resume_errored``; the searcher's state comes back with it). At the end pending MLflow
operations are replayed, runs left RUNNING by stopped trials are closed, and the tables and
the study's report (`reports`) are written to the sweep directory and logged to the parent.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune

from ssvae_core.balls import Video, simulate
from ssvae_core.errors import ConfigError
from ssvae_core.files import write_text
from ssvae_core.metrics import METRICS, as_numbers
from ssvae_core.preflight import writable_dir
from ssvae_core.sweep import checkpoints, cluster, lock, reports, selection, space, tables, ui
from ssvae_core.sweep.preflight import check_sweep
from ssvae_core.sweep.progress import Progress
from ssvae_core.sweep.spec import SweepSpec
from ssvae_core.sweep.storage import DEFAULT_STORAGE, check_state, sweep_dir, unresumable
from ssvae_core.sweep.tracking import DEFAULT_TRACKING_URI, SweepTracking
from ssvae_core.sweep.trainable import train_trial

log = logging.getLogger(__name__)

FINAL_METRICS = [name for name in METRICS if name != "loss"]  # a trial's row in the table


class SweepInterrupted(RuntimeError):
    """Ctrl-C: Ray saved the state; runs stay RUNNING until ``--resume`` continues them."""


def _not_ready(signum: int, frame: Any) -> None:
    """SIGUSR1 before Ray's handler is in place: nothing (its default would end the process)."""


@contextmanager
def _catch_interrupt() -> Iterator[threading.Event]:
    """Ctrl-C or SIGTERM (systemd's stop, Kubernetes' deadline) while a Tuner runs: Ray stops
    gracefully (through its SIGUSR1 handler, which saves the experiment state) and the
    returned event says so; a second one aborts. Before Ray has put its handler in place
    (the first few ms of a Tuner run; `_not_ready` until then) there is no state to save,
    and it aborts at once (`KeyboardInterrupt`).

    Ray's own SIGINT handler would stop as gracefully, but its ResultGrid then cannot be told
    apart from a finished one (the stopped trials read TERMINATED).
    """
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted
        return

    def on_stop(signum: int, frame: Any) -> None:
        ray_ready = callable(handler := signal.getsignal(signal.SIGUSR1))
        if interrupted.is_set() or not ray_ready or handler is _not_ready:
            raise KeyboardInterrupt
        interrupted.set()
        os.kill(os.getpid(), signal.SIGUSR1)

    previous = {signal.SIGUSR1: signal.signal(signal.SIGUSR1, _not_ready)}  # first: on_stop
    previous |= {s: signal.signal(s, on_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    try:
        yield interrupted
    finally:
        os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        for signum, handler in previous.items():  # None: one set outside Python (Ray's C++)
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def _said(err: BaseException) -> str:
    """An error as a message repeats it: its type, then its text."""
    return f"{type(err).__name__}: {err}"


def _restorable(path: Path) -> bool:
    """Whether Ray saved a Tuner run's state at `path`: its ``tuner.pkl`` (all that
    ``Tuner.can_restore`` asks) and its trials (``experiment_state-*.json``). A driver stopped
    between the two (killed, out of disk) leaves ``tuner.pkl`` alone, from which Ray restores
    one trial with no config; no trial ran then, so the run starts again."""
    return tune.Tuner.can_restore(str(path)) and any(path.glob("experiment_state-*.json"))


def _restored(path: Path, trainable: Any) -> Any:
    """The Tuner run kept at `path`, restored; Ray's state there damaged (a ``tuner.pkl`` cut
    short; `storage.check_state` has refused an ``experiment_state`` cut short before anything ran)
    is a `ConfigError` naming it, not a traceback from inside Ray."""
    try:
        return tune.Tuner.restore(
            str(path), trainable=trainable, resume_unfinished=True, resume_errored=True
        )
    except Exception as err:  # whatever unpickling a damaged state raises
        raise unresumable(f"Ray's state in {path} cannot be read", _said(err)) from None


def _tuner(spec: SweepSpec, trainable: Any, path: Path, params: dict, budget: float | None) -> Any:
    """A new Tuner for one Tuner run (its param space `params`), stored at `path`."""
    return tune.Tuner(
        trainable,
        param_space=params,
        tune_config=tune.TuneConfig(
            metric=spec.metric,
            mode=spec.mode,
            num_samples=spec.search.num_samples if spec.search else 1,
            search_alg=space.searcher(spec),
            scheduler=space.scheduler(spec),
            max_concurrent_trials=spec.execution.max_concurrent,
            time_budget_s=budget,
            reuse_actors=True,  # a trial's process (torch, MLflow imported) serves the next
        ),
        run_config=tune.RunConfig(
            name=path.name,
            storage_path=str(path.parent),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=checkpoints.KEEP),
            failure_config=tune.FailureConfig(max_failures=spec.execution.max_failures),
            callbacks=[Progress(spec, path.name), checkpoints.Pruner()],
            log_to_file=True,
            verbose=0,
        ),
    )


def _trial_id(result: Any) -> str:
    """Ray's trial id, from the last metrics or else the trial directory's name."""
    if result.metrics and "trial_id" in result.metrics:
        return str(result.metrics["trial_id"])
    found = checkpoints.TRIAL_ID.search(Path(result.path).name)
    return found.group(1) if found else Path(result.path).name


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def plain_error(error: BaseException) -> str:
    """What went wrong in a trial, as plain text: the exception's type and first line.

    Ray wraps it (``RayTaskError``: a coloured ``ray::ImplicitFunc.train() (pid=...)`` header
    and a traceback); its ``cause`` is the trial's own exception.
    """
    cause = getattr(error, "cause", None) or error
    lines = [line for line in ANSI.sub("", str(cause)).splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"[:300]


def trial_rows(spec: SweepSpec, tuner_run: str, grid: Any) -> list[dict[str, Any]]:
    """One row per trial of a Tuner run's ResultGrid (see `tables`), in grid order (Ray
    starts them in `space.start_order`); a fused trial (``resources.fuse``) gives one row per
    cell it trained, from its own summary."""
    rows: list[tuple[int, dict[str, Any]]] = []
    for result in grid:
        metrics, params = result.metrics or {}, result.config or {}
        final = bool(metrics.get("final"))
        members = metrics.get("members") or {}
        cells = spec.members(int(params["cell"])) if spec.search is None else (params["cell"],)
        for cell in cells:
            own = members.get(str(cell), metrics if len(cells) == 1 else {})
            if result.error is not None:
                status = "error"
            else:
                status = str(own.get("status")) if final and own else "stopped"
            row: dict[str, Any] = {"tuner_run": tuner_run, "trial_id": _trial_id(result)}
            row |= spec.cells[int(cell)].row(spec.axes)
            row |= {key: params.get(key) for key, _ in spec.space}
            row |= {"status": status, **{k: own.get(k, math.nan) for k in FINAL_METRICS}}
            row |= {"epochs": own.get("epoch"), "seconds": metrics.get("time_total_s", math.nan)}
            row |= {k: own.get(k, "") for k in ("mlflow_run_id", "mlflow_pending")}
            row |= {k: metrics.get(k, "") for k in ("device", "cuda_visible_devices")}
            row["fused"] = len(cells)
            row["error"] = "" if result.error is None else plain_error(result.error)
            rows.append((int(cell), row))
    return [row for _, row in sorted(rows, key=lambda pair: pair[0])]


@dataclass(frozen=True)
class SweepResult:
    """What a finished sweep left: its tables, where they are, and its parent run."""

    cells: pd.DataFrame  # one row per table cell (`tables.cell_table`)
    trials: pd.DataFrame  # one row per trial (`trial_rows`)
    directory: Path
    parent_run_id: str
    tracking_uri: str  # resolved (an absolute sqlite path)
    files: list[Path] = field(default_factory=list)

    @property
    def n_errors(self) -> int:
        return int((self.trials["status"] == "error").sum()) if len(self.trials) else 0


def run_sweep(
    spec: SweepSpec,
    address: str | None = None,
    tracking_uri: str = DEFAULT_TRACKING_URI,
    resume: bool = False,
    storage_path: str | Path = DEFAULT_STORAGE,
    name: str | None = None,
    parent_tags: Mapping[str, str] | None = None,
    claim: Callable[[str], None] | None = None,
) -> SweepResult:
    """Run (or resume) the sweep (see the module doc); -> its tables and parent run.

    Refused before anything runs: another driver of the same name (`lock.Busy`), a device
    or memory the sweep cannot have here (`preflight.check_sweep`, `ConfigError`), a Ray
    address that does not answer (`cluster.ClusterUnavailable`), trials no node can hold
    (`ConfigError`), MLflow out of reach (`TrackingUnavailable`). `parent_tags` go on the
    parent run when it is opened (a nightly's ``ssvae.nightly``); `claim` is then called with
    its id, before any trial, and may still refuse (`lock.Busy`: a nightly opened at the same
    moment elsewhere): the parent run is closed KILLED, tagged ``ssvae.status=overlap``
    (``failed`` where the claim itself failed).
    """
    directory = sweep_dir(spec, storage_path, name)
    writable_dir(directory.parent, "--storage-path").mkdir(parents=True, exist_ok=True)  # by name
    with driving(directory):
        check_state(spec, directory, resume)
        check_sweep(spec, address)
        started_ray = cluster.connect(address)
        try:
            cluster.check_resources(spec.resources)
            tracker = SweepTracking(tracking_uri, directory, spec)
            tracker.connect()
            target = tracker.start(parent_tags or {})
            if claim is not None:
                try:
                    claim(target.parent_run_id)
                except BaseException as err:  # not left RUNNING: it would block other hosts
                    tracker.withdraw("overlap" if isinstance(err, lock.Busy) else "failed")
                    raise
            try:
                trials = _run_tuners(spec, target, directory, resume)
            except SweepInterrupted:
                raise  # the parent stays RUNNING: --resume continues it
            except BaseException as err:
                tracker.fail(close_trials=not isinstance(err, KeyboardInterrupt))
                raise
        finally:
            if started_ray:
                cluster.disconnect()
        try:
            return _finish(spec, tracker, directory, trials)
        except OSError:  # the tables or the report could not be written (a full disk)
            tracker.fail()
            raise


def _run_tuners(spec: SweepSpec, target: Any, directory: Path, resume: bool) -> pd.DataFrame:
    """Every Tuner run of the spec (restored where it can be); -> one row per trial."""
    # A sweep started before `checkpoints` keeps Ray's num_to_keep=2 (its config is restored
    # with it), and with it a warning on each forced snapshot of Ray's state.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    videos: dict[Any, Video] = {}
    for cell in spec.cells:
        data = cell.config.data
        if data not in videos:
            videos[data] = simulate(data.balls, data.seed)
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, spec=spec, videos=videos, target=target),
        {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu},
    )
    started, rows = time.monotonic(), []
    for tuner_run, params in space.tuner_runs(spec):
        path = directory / tuner_run
        restored = resume and _restorable(path)
        if restored:
            checkpoints.unsaved(path)  # Ray writes the next ones over them
            tuner = _restored(path, trainable)
        else:
            budget = spec.budget.time_budget_s
            left = None if budget is None else budget - (time.monotonic() - started)
            if left is not None and left <= 0:
                log.warning("time budget spent: Tuner run %s not started", tuner_run)
                continue
            tuner = _tuner(spec, trainable, path, params, left)
        with _catch_interrupt() as interrupted:
            try:
                grid = tuner.fit()
            except (EOFError, pickle.UnpicklingError) as err:  # its own files, cut short
                if restored:  # the searcher's state, read back as the run starts
                    raise unresumable(f"Ray's state in {path} cannot be read", _said(err)) from None
                raise OSError(
                    f"Ray could not read back what it wrote in {path} ({_said(err)}); is that "
                    "disk full?"
                ) from err
        if interrupted.is_set():
            raise SweepInterrupted(f"interrupted; continue with --resume ({directory})")
        rows += trial_rows(spec, tuner_run, grid)
        checkpoints.prune(path)  # Ray's state is saved: the ones it cannot restore from go
    return pd.DataFrame(rows)


def _unsent(trials: pd.DataFrame) -> set[str]:
    """The trials whose run's end is still in their pending MLflow logging (MLflow out of
    reach): finished ones (ok, diverged; a stopped or errored trial logs no end) with
    operations pending. ``--sync`` sends their end; `reconcile` leaves them alone."""
    pending = as_numbers(trials.get("mlflow_pending")).fillna(0) > 0
    ended = trials["status"].isin(["ok", "diverged"])
    return set(trials.loc[pending & ended, "trial_id"])


def _finish(
    spec: SweepSpec, tracker: SweepTracking, directory: Path, trials: pd.DataFrame
) -> SweepResult:
    """Replay MLflow logs, close stopped runs, write and log the tables and the report."""
    left = tracker.sync()
    parent = tracker.parent.run_id or ""
    if trials.empty:  # the time budget was spent before any Tuner run started
        print("no trial ran")
        tracker.finish([], {"n_trials": 0})
        empty = pd.DataFrame(columns=["cell", "trials", *(f"n_{s}" for s in tables.STATUSES)])
        return SweepResult(empty, trials, directory, parent, tracker.uri)
    errors = dict(zip(trials["trial_id"], trials["error"], strict=True))
    unsent = _unsent(trials) if left else set()
    tracker.reconcile({trial: error for trial, error in errors.items() if error}, unsent)
    searched = [key for key, _ in spec.space]
    cells = tables.cell_table(trials, spec.group_axes, searched)
    if spec.search is not None:  # the selected configurations, on a video the search never saw
        scored = selection.score_selected(spec, trials)
        cells = cells.merge(scored[["cell", "validation_px", "test_px"]], on="cell", how="left")
        write_text(directory / "selected.csv", scored.to_csv(index=False))
        print(f"selected configurations scored on a second video: {directory / 'selected.csv'}")
    files = tables.write(trials, cells, directory)
    if spec.search is not None:
        files.append(directory / "selected.csv")
    files += reports.write(spec.report, trials, spec.report_context(), directory)
    summary = directory / "summary.md"
    if spec.search is not None:
        selection.add_section(summary, scored)
    text = summary.read_text(encoding="utf-8") if summary.exists() else ""
    print(text.strip() or tables.format_cells(cells))
    print(f"results: {directory}")
    print(f"MLflow: {ui.link(tracker.uri, tracker.experiment_id)}")
    for path in files:
        if path.suffix == ".png":
            print(f"figure: {path}")
    counts = {f"n_{s}": int((trials["status"] == s).sum()) for s in tables.STATUSES}
    metrics = {"n_trials": len(trials), **counts, **tables.headline_metrics(cells)}
    tracker.finish(files, metrics, description=text)
    if left := tracker.sync():
        print(f"MLflow unreachable: {left} operation(s) pending; replay with --sync or --resume")
    return SweepResult(cells, trials, directory, parent, tracker.uri, files)


def sync_sweep(
    spec: SweepSpec,
    tracking_uri: str = DEFAULT_TRACKING_URI,
    storage_path: str | Path = DEFAULT_STORAGE,
    name: str | None = None,
) -> int:
    """Replay the sweep's pending MLflow operations without Ray; -> operations still pending.

    A sweep that never ran here is a `ConfigError` (nothing is created in MLflow)."""
    directory = sweep_dir(spec, storage_path, name)
    if not (directory / "sweep.json").is_file():
        raise ConfigError(f"--sync: no sweep has run in {directory}; nothing to replay")
    with driving(directory):  # a live driver sends its own; two replays would lose ops
        tracker = SweepTracking(tracking_uri, directory, spec)
        tracker.connect()
        return tracker.sync()


def driving(directory: Path) -> AbstractContextManager[None]:
    """The sweep's lock: one driver, or one ``--sync``, at a time (`lock.Busy` otherwise)."""
    return lock.exclusive(directory.parent / f".{directory.name}.lock", f"sweep {directory.name}")
