"""`RunLog`: log to one MLflow run through a write-ahead pending file; nothing is lost.

Every operation (metrics, tags, artifacts, status) is first appended to ``mlflow_pending.jsonl``
in the run's directory, then `flush` applies the pending operations in order and removes each
one once MLflow has taken it (the file stays, empty). When MLflow is unreachable the
operations stay in the file; for a trial that directory is its checkpoint, so they travel
with it (to another node, or to a restored sweep) and are replayed by the next `flush` - in
the trial, or by ``ssvae sweep --resume`` / ``--sync`` in the driver.

The run itself is found again, never duplicated: its id is kept in ``mlflow_run_id`` next to
the pending file; without that file (MLflow was down when the run had to be created, or the
trial was restarted from scratch) the run is looked up by its ``ssvae.key`` tag, and created
from ``mlflow_identity.json`` only when no run has that key.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from ssvae_core.errors import without_password
from ssvae_core.files import write_text
from ssvae_core.metrics import finite_numbers

log = logging.getLogger(__name__)

RUN_ID_FILE = "mlflow_run_id"
IDENTITY_FILE = "mlflow_identity.json"
PENDING_FILE = "mlflow_pending.jsonl"
KEY_TAG = "ssvae.key"
# Fail fast when a server is down (MLflow's default retries for minutes); the user's own
# settings win. Read by MLflow at every request.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
RETRY_AFTER_S = 10.0
Op = dict[str, Any]


def client(uri: str) -> MlflowClient:
    """An MLflow client for `uri` that gives up on an unreachable server within seconds."""
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    return MlflowClient(tracking_uri=uri)


def _metrics(mlflow: MlflowClient, run_id: str, op: Op, _dir: Path) -> None:
    metrics = [Metric(k, float(v), op["timestamp"], op["step"]) for k, v in op["values"].items()]
    mlflow.log_batch(run_id, metrics=metrics)


def _tags(mlflow: MlflowClient, run_id: str, op: Op, _dir: Path) -> None:
    mlflow.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in op["values"].items()])


def _artifacts(mlflow: MlflowClient, run_id: str, op: Op, directory: Path) -> None:
    path = directory / op["path"]
    if path.is_dir():
        mlflow.log_artifacts(run_id, str(path), op.get("artifact_path"))
    else:
        mlflow.log_artifact(run_id, str(path), op.get("artifact_path"))


def _status(mlflow: MlflowClient, run_id: str, op: Op, _dir: Path) -> None:
    if op["status"] == "RUNNING":
        mlflow.update_run(run_id, status="RUNNING")
    else:
        mlflow.set_terminated(run_id, op["status"], end_time=op["timestamp"])


# An operation's "op" -> how it is applied; every op is plain JSON (see `RunLog.log`).
OPS: dict[str, Callable[[MlflowClient, str, Op, Path], None]] = {
    "metrics": _metrics,
    "tags": _tags,
    "artifacts": _artifacts,
    "status": _status,
}


class RunLog:
    """One MLflow run and its pending file in `directory` (see the module doc)."""

    def __init__(self, uri: str, directory: str | Path) -> None:
        self.uri, self.directory = uri, Path(directory)
        self._client: MlflowClient | None = None
        self._retry_at = 0.0
        self.logged_until = -1  # the last step MLflow holds (`last_step`); -1: none known

    # -- identity ------------------------------------------------------------------------
    def declare(
        self,
        experiment_id: str,
        key: str,
        name: str,
        tags: Mapping[str, str],
        params: Mapping[str, Any],
    ) -> None:
        """What the run is (written once; used to find or create it)."""
        identity: dict[str, Any] = {"experiment_id": experiment_id, "key": key, "name": name}
        identity["tags"] = {**tags, KEY_TAG: key}
        identity["params"] = {k: str(v) for k, v in params.items()}
        path = self.directory / IDENTITY_FILE
        if not path.exists():
            write_text(path, json.dumps(identity, indent=1))

    @property
    def run_id(self) -> str | None:
        path = self.directory / RUN_ID_FILE
        return path.read_text().strip() if path.exists() else None

    def _resolve(self, mlflow: MlflowClient) -> str:
        """The run's id: from the id file, else by its key tag, else a new run. Until the id
        file is written the params are logged again: a run found by its key may have been
        created just before an outage cut off its params (MLflow takes a param again when
        its value is the same)."""
        if (run_id := self.run_id) is not None:
            return run_id
        identity = json.loads((self.directory / IDENTITY_FILE).read_text())
        found = mlflow.search_runs(
            [identity["experiment_id"]],
            filter_string=f"tags.`{KEY_TAG}` = '{identity['key']}'",
            max_results=1,
        )
        if found:
            run_id = found[0].info.run_id
        else:
            run = mlflow.create_run(
                identity["experiment_id"], run_name=identity["name"], tags=identity["tags"]
            )
            run_id = run.info.run_id
        params = [Param(k, v) for k, v in identity["params"].items()]
        for start in range(0, len(params), 100):  # MLflow's batch limit
            mlflow.log_batch(run_id, params=params[start : start + 100])
        write_text(self.directory / RUN_ID_FILE, run_id)
        return run_id

    # -- operations ----------------------------------------------------------------------
    def log(self, op: str, **fields: Any) -> bool:
        """Queue one operation (`OPS`) and flush; False if it is still pending."""
        entry = {"op": op, "timestamp": int(time.time() * 1000), **fields}
        line = json.dumps(entry).encode() + b"\n"
        with open(self.directory / PENDING_FILE, "ab+") as fh:  # appends go to the end
            if fh.seek(0, os.SEEK_END) > 0:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":  # a line cut short (a full disk) ends where it is
                    line = b"\n" + line
            fh.write(line)
        return self.flush()

    def metrics(self, values: Mapping[str, Any], step: int) -> bool:
        numbers = finite_numbers(values)
        return self.log("metrics", values=numbers, step=step) if numbers else self.flush()

    def last_step(self, key: str) -> int:
        """The last step MLflow holds of metric `key` in this run; -1 if none, or if MLflow
        cannot say (then nothing is skipped)."""
        if not self.flush() or (run_id := self.run_id) is None:
            return -1
        try:
            self._client = self._client or client(self.uri)
            history = self._client.get_metric_history(run_id, key)
        except Exception:
            return -1
        return max((m.step for m in history), default=-1)

    def pending(self) -> list[Op]:
        path = self.directory / PENDING_FILE
        if not path.exists():
            return []
        ops = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                op = json.loads(line) if line.strip() else None
            except ValueError:  # a line cut short (the disk filled up mid-append)
                log.warning("MLflow: a damaged pending operation in %s left out", path)
                continue
            if isinstance(op, dict) and op.get("op") in OPS:
                ops.append(op)
        return ops

    def flush(self, force: bool = False) -> bool:
        """Apply the pending operations in order; True when none is left.

        After a failure the next `RETRY_AFTER_S` seconds only queue (unless `force`), so an
        outage costs one failed request per interval, not one per operation.
        """
        ops = self.pending()
        if not ops:
            return True
        if not force and time.monotonic() < self._retry_at:
            return False
        done = 0
        try:
            if self._client is None:
                self._client = client(self.uri)
            run_id = self._resolve(self._client)
            for op in ops:
                OPS[op["op"]](self._client, run_id, op, self.directory)
                done += 1
                self._rewrite(ops[done:])
        except Exception as err:  # MLflow down, or its store refused: keep the rest pending
            self._retry_at = time.monotonic() + RETRY_AFTER_S
            left = len(ops) - done
            said = without_password(str(err), self.uri)  # MLflow's client repeats the URI
            log.warning("MLflow: %d operation(s) pending in %s: %s", left, self.directory, said)
            return False
        return True

    def _rewrite(self, ops: list[Op]) -> None:
        """What is left pending; nothing is an empty file, not none: Ray copies a trial's
        checkpoint over an older one of the same name after a restore, and would leave the
        older's backlog where this one has no file."""
        write_text(self.directory / PENDING_FILE, "".join(json.dumps(op) + "\n" for op in ops))
