"""MLflow for a sweep: one parent run per sweep, one child run per trial, restore-safe.

Ray's ``MLflowLoggerCallback`` keeps its trial -> run map in driver memory, so after
``Tuner.restore`` every resumed trial would get a second run and the first would stay RUNNING.
Here the trial logs for itself through a `RunLog` kept in its checkpoint directory (run id and
pending operations travel with the checkpoint), and the parent's `RunLog` lives in the sweep's
storage directory; a restored sweep reopens both.

Layout of a sweep directory (``--storage-path``/NAME): ``sweep.json`` (the sweep's uid: runs
are keyed ``UID/...``), ``sweep.yaml`` (the spec as run), ``search_space.json``, the parent's
``mlflow_run_id`` and pending file, one Ray experiment per study, results tables and figures.

Run states: a finished trial is FINISHED with tag ``ssvae.status`` ``ok`` or ``diverged`` (a
diverged run is a result, not a failure); a trial stopped by the scheduler or the time budget
is KILLED with ``ssvae.status=stopped``; one that errored past ``max_failures`` is FAILED.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Mapping, Sequence, Set
from contextlib import nullcontext
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from ssvae_core import config, run_files
from ssvae_core.balls import Video
from ssvae_core.errors import ConfigError, first_line, url_shown, without_password
from ssvae_core.files import write_text
from ssvae_core.metrics import finite_numbers
from ssvae_core.sweep import lock, process, ui
from ssvae_core.sweep.database import not_a_database
from ssvae_core.sweep.runlog import IDENTITY_FILE, PENDING_FILE, RunLog, client
from ssvae_core.sweep.spec import SweepSpec
from ssvae_core.train import RunResult

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # what a plain `mlflow ui` started here reads
# the schemes MLflow 3's tracking store registry serves ("": a folder), besides plugins
TRACKING_SCHEMES = frozenset(
    {"", "file", "http", "https", "sqlite", "postgresql", "mysql", "mssql"}
    | {"databricks", "databricks-uc", "uc"}
)
STATUS_TAG = "ssvae.status"
PROCESS_TAG = "ssvae.process"  # the driver's `process.identity`
# MLflow 3's UI opens an experiment by this tag: training runs, not the GenAI overview.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
VERSIONED = ("torch", "ray", "mlflow", "optuna", "numpy")  # tagged on every parent run


class TrackingUnavailable(RuntimeError):
    """MLflow cannot be reached (or refuses) at the start of a sweep. Its message never holds
    the tracking URI's password (`errors.without_password`): it goes to logs and mails."""

    def __init__(self, message: str, uri: str = "") -> None:
        super().__init__(without_password(message, uri) if uri else message)


@dataclass(frozen=True)
class Target:
    """What a trial needs to log (picklable, shipped to every trial)."""

    uri: str
    experiment_id: str
    parent_run_id: str
    sweep_uid: str
    sweep_name: str


def default_uri(given: str | None) -> str:
    """``--tracking-uri`` if given, else ``$MLFLOW_TRACKING_URI`` (how the ecosystem, and a
    cluster, passes it), else `DEFAULT_TRACKING_URI`; a scheme MLflow has no store for is a
    `ConfigError` naming where it came from, before Ray starts (MLflow itself says so only
    when the parent run is opened, with a paragraph about its model registry)."""
    uri = given or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    where = "--tracking-uri" if given else "$MLFLOW_TRACKING_URI"
    scheme = urllib.parse.urlparse(uri).scheme.lower().split("+")[0]  # postgresql+psycopg2
    plugins = {entry.name for entry in metadata.entry_points(group="mlflow.tracking_store")}
    if scheme not in TRACKING_SCHEMES | plugins:
        known = ", ".join(sorted(TRACKING_SCHEMES - {""}))
        message = f"no MLflow store for {scheme}:// in {url_shown(uri)}; use one of {known}"
        raise ConfigError(f"{where}: {message}")
    if scheme == "sqlite" and urllib.parse.urlparse(uri).path.lstrip("/") in (":memory:", ""):
        raise ConfigError(  # each trial's process would log to a database of its own, lost
            f"{where}: {url_shown(uri)} keeps nothing once the command ends; name a file, "
            "e.g. sqlite:///mlflow.db"
        )
    _check_written(uri, where)
    return uri


def _check_written(uri: str, where: str) -> None:
    """What MLflow takes only after Ray has started, as a `ConfigError` naming `where`: a
    space or control character around the URI, a scheme in capitals (SQLAlchemy has no
    ``SQLITE`` dialect), an http(s) URI without a host, and a sqlite file that exists but is
    not an MLflow database (MLflow would write its tables into another program's database).
    A missing or empty file is fine: MLflow creates its database there."""
    if uri != uri.strip() or any(ord(c) < 32 or ord(c) == 127 for c in uri):
        raise ConfigError(f"{where}: {url_shown(uri)!r} holds a space or control character")
    written, sep, _ = uri.partition("://")  # a folder (a path, no scheme) may hold capitals
    if sep and written != written.lower():
        raise ConfigError(f"{where}: write the scheme in lower case ({written.lower()}://...)")
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme in ("http", "https") and not parts.hostname:
        raise ConfigError(f"{where}: {url_shown(uri)} names no host")
    path = sqlite_file(uri)
    if path is None or not path.exists():  # new (through a link too): MLflow creates it
        return
    why = not_a_database(path)
    if why is not None and why != "is empty, not a database":
        raise ConfigError(f"{where}: {path} {why}, so not an MLflow database (left as it is)")


def sqlite_file(uri: str) -> Path | None:
    """The file a sqlite `uri` names: ``sqlite:///rel.db`` (relative), ``sqlite:////abs.db``,
    with a driver (``sqlite+pysqlite://``) or options (``?timeout=20``), everything between
    the third slash and a ``?`` (``#`` is part of the name); None for another store or a
    database in memory."""
    scheme, sep, rest = uri.partition("://")
    name = rest.partition("?")[0][1:] if rest.startswith("/") else ""  # after the 3rd slash
    if not sep or scheme.lower().split("+")[0] != "sqlite" or name in ("", ":memory:"):
        return None
    return Path(name)


def resolve_uri(uri: str) -> str:
    """A relative sqlite file (`sqlite_file`) made absolute: trials run in other directories."""
    file = sqlite_file(uri)
    if file is None or file.is_absolute():
        return uri
    scheme, _, rest = uri.partition("://")
    _, mark, options = rest.partition("?")
    return f"{scheme}:///{file.resolve()}{mark}{options}"


# ---------------------------------------------------------------- trials


def start_trial(
    target: Target,
    directory: Path,
    key: str,
    trial: tuple[str, str],
    cfg: config.RunConfig,
    labels: Mapping[str, Any],
    colour: str,
) -> RunLog:
    """The trial's run (found again, or created) marked RUNNING; as params, the settings the
    run uses (`config.used`: no coupling for a control, no optimiser when untrained).

    key: the trial's identity in the sweep (grid cell or Ray trial id); trial: Ray's (id, name);
    labels: its axis and searched values (also logged as ``sweep.*`` params and tags);
    colour: its cell's colour in MLflow's UI (`ui.cell_colour`).
    """
    runlog = RunLog(target.uri, directory)
    (trial_id, name) = trial
    tags = {"mlflow.parentRunId": target.parent_run_id, "ssvae.sweep": target.sweep_name}
    tags[ui.RUN_COLOUR_TAG] = colour
    tags |= {"ray.trial_id": trial_id, **{f"sweep.{k}": str(v) for k, v in labels.items()}}
    params = {**config.used(cfg), **{f"sweep.{k}": v for k, v in labels.items()}}
    runlog.declare(target.experiment_id, f"{target.sweep_uid}/{key}", name, tags, params)
    runlog.log("status", status="RUNNING")
    runlog.logged_until = runlog.last_step(EVERY_EPOCH)
    return runlog


EVERY_EPOCH = "epoch_seconds"  # a metric every epoch logs: its last step is the last epoch


def log_epoch(runlog: RunLog, row: Mapping[str, Any]) -> bool:
    """One epoch's metrics at ``step = epoch``; an epoch MLflow has already (a restored trial
    redoes the epochs after its checkpoint, with the same numbers) is not logged twice."""
    step = int(row["epoch"])
    if step <= runlog.logged_until:
        return runlog.flush()
    return runlog.metrics({k: v for k, v in row.items() if k != "epoch"}, step=step)


def finish_trial(runlog: RunLog, result: RunResult, video: Video) -> bool:
    """Final metrics, status tags, the run's files (Fig. 1B, 1D/E, history), then FINISHED."""
    run_files.write_run(result, video, runlog.directory / "artifacts")
    log_final(runlog, result.history, result.metrics())
    runlog.log("tags", values={STATUS_TAG: result.status, "ssvae.message": result.message[:4000]})
    runlog.log("artifacts", path="artifacts")
    runlog.log("status", status="FINISHED")
    return runlog.flush(force=True)


def log_final(
    runlog: RunLog, history: Sequence[Mapping[str, Any]], metrics: Mapping[str, Any]
) -> bool:
    """A run's final metrics at its last epoch's step: those its last row lacks or holds
    otherwise ("seconds": the whole run). A trial restored from its last checkpoint (its
    earlier life sent them, then died before Ray saved its end) sends only the keys MLflow
    does not hold at that step yet: one point per metric and step."""
    step, last = len(history) - 1, history[-1]
    final = {k: v for k, v in metrics.items() if last.get(k) != v}
    if runlog.logged_until >= step:
        final = {k: v for k, v in final.items() if runlog.last_step(k) < step}
    return runlog.metrics(final, step=step)


# ---------------------------------------------------------------- the sweep (driver)


def _git(*args: str) -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def provenance() -> dict[str, str]:
    """What code and libraries ran: git commit and dirty flag, package versions (tags)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    tags = {
        "ssvae.git_commit": _git("rev-parse", "HEAD") or "unknown",
        "ssvae.git_dirty": "unknown" if status is None else str(bool(status)).lower(),
        "ssvae.version": _version("ssvae"),
    }
    return tags | {f"ssvae.versions.{name}": _version(name) for name in VERSIONED}


def experiment(uri: str, name: str, tags: Mapping[str, str] | None = None) -> str:
    """The id of experiment `name` at `uri`, created if new, tagged as training runs
    (`EXPERIMENT_KIND`) and with `tags` (MLflow's saved views, `ui.saved_views`);
    `TrackingUnavailable` if MLflow cannot be reached or written; a `ConfigError` for a
    sqlite file in a folder that cannot be written.

    A sqlite file is checked for a writable folder first (sqlite would retry for minutes)
    and its first clients queue on a lock beside it (MLflow's schema creation races).
    """
    uri = resolve_uri(uri)
    database = sqlite_file(uri)
    folder = database.parent if database is not None else None
    if folder is not None and not (folder.is_dir() and os.access(folder, os.W_OK)):
        raise ConfigError(  # what was asked for, not MLflow out of reach: exit 2
            f"--tracking-uri: MLflow at {uri} cannot write {database} ({folder} is not a "
            "writable folder); run from a writable directory or pass another --tracking-uri"
        )  # a sqlite URI: no password
    guard = lock.serialised(Path(f"{database}.lock")) if database else nullcontext()
    try:
        with guard:
            mlflow = client(uri)
            wanted = {**EXPERIMENT_KIND, **(tags or {})}
            found = mlflow.get_experiment_by_name(name)
            if found is None:
                return str(mlflow.create_experiment(name, tags=wanted))
            if found.lifecycle_stage == "deleted":  # MLflow refuses its runs: no retry helps
                raise ConfigError(
                    f"experiment: {name!r} (id {found.experiment_id}) was deleted in MLflow; "
                    f"restore it (mlflow experiments restore --experiment-id "
                    f"{found.experiment_id}) or name another (the spec's experiment: key)"
                )
            for key, value in wanted.items():
                if found.tags.get(key) != value:
                    mlflow.set_experiment_tag(found.experiment_id, key, value)
            return str(found.experiment_id)
    except ConfigError:
        raise
    except Exception as err:
        raise TrackingUnavailable(
            f"MLflow at {uri} is unreachable: {first_line(err)}", uri
        ) from err


class SweepTracking:
    """The parent run of the sweep in `sweep_dir`, and the end-of-sweep bookkeeping."""

    def __init__(self, uri: str, sweep_dir: Path, spec: SweepSpec) -> None:
        self.uri, self.sweep_dir, self.spec = resolve_uri(uri), sweep_dir, spec
        self.parent = RunLog(self.uri, sweep_dir)
        self.experiment_id = ""

    def connect(self) -> None:
        """Reach MLflow and get (or create) the experiment (`experiment`), with this sweep's
        saved views of the runs table (`ui.saved_views`)."""
        views = ui.saved_views(self.spec, now_ms=int(time.time() * 1000))
        self.experiment_id = experiment(self.uri, self.spec.experiment, views)

    def start(self, extra_tags: Mapping[str, str] | None = None) -> Target:
        """Open the parent run (reopen it on resume) and log the spec and search space."""
        info = self.sweep_dir / "sweep.json"
        fresh = not info.exists()
        if fresh:
            self.sweep_dir.mkdir(parents=True, exist_ok=True)
            record = {
                "uid": uuid.uuid4().hex,
                "name": self.sweep_dir.name,
                "overrides": self.spec.overrides,
                "tracking_uri": without_password(self.uri, self.uri),  # named if it moves
            }
            write_text(info, json.dumps(record))  # --resume reads these: never half-written
            write_text(self.sweep_dir / "sweep.yaml", self.spec.text)
            write_text(self.sweep_dir / "search_space.json", json.dumps(self._space(), indent=1))
        uid = json.loads(info.read_text())["uid"]
        tags = {"ssvae.role": "parent", "ssvae.sweep": self.spec.name, **provenance()}
        tags[ui.RUN_COLOUR_TAG] = ui.PARENT_COLOUR
        tags |= {"ssvae.storage": str(self.sweep_dir), "mlflow.note.content": self.spec.description}
        tags |= {"ssvae.host": socket.gethostname(), "ssvae.pid": str(os.getpid())}
        tags[PROCESS_TAG] = process.identity()  # a reused PID is not this driver (`history`)
        tags |= dict(extra_tags or {})
        params: dict[str, Any] = {
            "sweep.n_trials": self.spec.n_trials,
            "sweep.n_grid_points": len(self.spec.cells),  # cells x seeds; the table has fewer
        }
        params |= {"sweep.axes": ",".join(k for k, _ in self.spec.axes)}
        params |= {"sweep.metric": self.spec.metric, "sweep.mode": self.spec.mode}
        self.parent.declare(self.experiment_id, f"{uid}/parent", self.sweep_dir.name, tags, params)
        driver = ("ssvae.host", "ssvae.pid", PROCESS_TAG)  # a --resume's driver is another
        self.parent.log("tags", values={key: tags[key] for key in driver})
        self.parent.log("status", status="RUNNING")
        if fresh:
            for name in ("sweep.yaml", "search_space.json"):
                self.parent.log("artifacts", path=name)
        if self.parent.run_id is None or not self.parent.flush():
            started = json.loads(info.read_text()).get("tracking_uri")
            shown = without_password(self.uri, self.uri)
            moved = (
                f" (the sweep started with MLflow at {started})"
                if started not in (None, shown)
                else ""
            )
            if moved:  # --resume from elsewhere, another default sqlite: asked for, exit 2
                raise ConfigError(f"--tracking-uri: {shown} cannot open the parent run{moved}")
            if self._deleted(self.parent.run_id):  # in the UI: MLflow refuses it for good
                raise ConfigError(
                    f"--resume: the sweep's parent run {self.parent.run_id} was deleted in "
                    f"MLflow; restore it (mlflow runs restore --run-id {self.parent.run_id}) "
                    "or run the sweep again under a new --name"
                )
            raise TrackingUnavailable(f"MLflow at {self.uri}: cannot open the parent run", self.uri)
        return Target(self.uri, self.experiment_id, self.parent.run_id, uid, self.spec.name)

    def _deleted(self, run_id: str | None) -> bool:
        """Whether MLflow holds run `run_id` as deleted (False where it cannot say)."""
        try:
            stage = client(self.uri).get_run(run_id).info.lifecycle_stage if run_id else None
        except Exception:  # MLflow out of reach, no such run: not known to be deleted
            return False
        return stage == "deleted"

    def _space(self) -> dict[str, Any]:
        """The resolved search space: every grid cell's overrides, searched keys and bounds."""
        return {
            "grid": [dict(cell.params) for cell in self.spec.cells],
            "methods": {k: dict(v) for k, v in self.spec.methods.items()},
            "search": {key: vars(p) for key, p in self.spec.space},
            "base": config.to_dict(self.spec.base),
        }

    def finish(self, files: list[Path], metrics: Mapping[str, Any], description: str = "") -> bool:
        """Results as parent artifacts and metrics, the study's summary as its description
        (what the UI shows first); the parent FINISHED. False: some of it still pending."""
        for path in files:
            self.parent.log("artifacts", path=str(path.relative_to(self.sweep_dir)))
        self.parent.metrics(finite_numbers(metrics), step=0)
        note = "\n\n".join(part for part in (self.spec.description, description) if part)
        self.parent.log("tags", values={"mlflow.note.content": note[:50_000]})
        return self.parent.log("status", status="FINISHED")

    def fail(self, close_trials: bool = True) -> None:
        """The sweep broke off (not Ctrl-C): its parent run FAILED and its trials' runs closed,
        none left RUNNING (a --resume opens them again; not with `close_trials` False: a second
        Ctrl-C aborts at once); the parent straight in MLflow where the queue cannot be
        written (a full disk broke it off, say)."""
        if close_trials:
            self.reconcile({})
        try:
            self.parent.log("status", status="FAILED")
        except OSError:
            try:
                client(self.uri).set_terminated(self.parent.run_id or "", "FAILED")
            except Exception as err:
                said = without_password(str(err), self.uri)
                log.warning("MLflow: the parent run could not be marked FAILED: %s", said)

    def withdraw(self, why: str) -> None:
        """The sweep stood down before any trial: its parent run KILLED, tagged
        ``ssvae.status=why``."""
        self.parent.log("tags", values={STATUS_TAG: why})
        self.parent.log("status", status="KILLED")

    def sync(self) -> int:
        """Replay every pending log (trials' latest checkpoints, the parent); -> ops left."""
        checkpoints: dict[tuple[Path, str], list[Path]] = {}
        for pattern in ("*/*/checkpoint_*/", "*/*/checkpoint_*/cell-*/"):  # a fused trial's
            for identity in sorted(self.sweep_dir.glob(pattern + IDENTITY_FILE)):  # cells
                trial = identity.parent if pattern.endswith("_*/") else identity.parent.parent
                member = "" if trial == identity.parent else identity.parent.name
                checkpoints.setdefault((trial.parent, member), []).append(identity.parent)
        left = 0
        for *older, latest in [*checkpoints.values(), [self.sweep_dir]]:
            runlog = RunLog(self.uri, latest)  # the newest checkpoint holds the whole backlog
            if runlog.flush():
                for superseded in older:
                    (superseded / PENDING_FILE).unlink(missing_ok=True)
            else:
                left += len(runlog.pending())
        return left

    def reconcile(self, errors: Mapping[str, str], unsent: Set[str] = frozenset()) -> None:
        """Close child runs still RUNNING once every trial is done (stopped, or errored),
        but those of the trials in `unsent`: their logging, their end with it, is pending
        (MLflow out of reach), and ``--sync`` sends it."""
        parent_id = self.parent.run_id
        try:
            mlflow = client(self.uri)
            running = mlflow.search_runs(
                [self.experiment_id],
                filter_string=f"tags.mlflow.parentRunId = '{parent_id}' "
                "and attributes.status = 'RUNNING'",
            )
            for run in running:
                if run.data.tags.get("ray.trial_id", "") in unsent:
                    continue
                error = errors.get(run.data.tags.get("ray.trial_id", ""))
                status, tag = ("FAILED", "error") if error else ("KILLED", "stopped")
                mlflow.set_tag(run.info.run_id, STATUS_TAG, tag)
                if error:
                    mlflow.set_tag(run.info.run_id, "ssvae.message", error[:4000])
                mlflow.set_terminated(run.info.run_id, status)
        except Exception as err:
            said = without_password(str(err), self.uri)
            log.warning("MLflow: could not close runs left RUNNING: %s", said)
