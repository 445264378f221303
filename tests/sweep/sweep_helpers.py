"""Helpers for the sweep tests: tiny specs, MLflow queries, and processes we start ourselves.

Every process a test starts is stopped by its PID (or its own session's process group), never
by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from textwrap import dedent
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "sweeps" / "smoke.yaml"

# The smoke problem (32x32 px, 60 frames, 2 epochs); test sweeps add a grid and knobs to it.
TINY_BASE: dict[str, Any] = {
    "preset": "small",
    "data.n_frames": 60,
    "data.size": 32,
    "data.diameter": 6,
    "train.epochs": 2,
    "train.batch_size": 10,
    "train.device": "cpu",
    "probe.every_epochs": 1,
}


def write_spec(directory: Path, name: str, body: str, base: dict[str, Any] | None = None) -> Path:
    """A sweep file: the tiny base updated by `base` (dotted keys), then `body`."""
    lines = "".join(f"  {key}: {value}\n" for key, value in {**TINY_BASE, **(base or {})}.items())
    path = directory / f"{name}.yaml"
    path.write_text(f"# ssvae sweep {path}\nname: {name}\nbase:\n{lines}{dedent(body).strip()}\n")
    return path


def ancestors(pid: int) -> list[int]:
    """PIDs above `pid` (from /proc), its parent first."""
    found = []
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        found.append(pid)
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(interval)
    return None


def sweep_runs(uri: str, experiment: str) -> tuple[list[Any], list[Any]]:
    """(parent runs, child runs) of an experiment."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r} at {uri}"
    runs = client.search_runs([found.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def metric_steps(uri: str, run_id: str, key: str) -> list[int]:
    from mlflow import MlflowClient

    return sorted({m.step for m in MlflowClient(uri).get_metric_history(run_id, key)})


def metric_points(uri: str, run_id: str, key: str) -> list[int]:
    """Every logged point's step, repeats included (a step logged twice shows twice)."""
    from mlflow import MlflowClient

    return sorted(m.step for m in MlflowClient(uri).get_metric_history(run_id, key))


def artifact_names(uri: str, run_id: str) -> set[str]:
    from mlflow import MlflowClient

    return {a.path for a in MlflowClient(uri).list_artifacts(run_id)}


def descendants(pid: int) -> list[int]:
    """PIDs of every process below `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def sweep_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ssvae_core.cli", "sweep", *args]


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with a sqlite backend, started (and stopped) by us."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        command = [
            str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1",
            "--port", str(self.port), "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", str(root / "artifacts"), "--workers", "1",
        ]  # fmt: skip
        self.log = open(root / "server.log", "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def wait(self, timeout: float = 120) -> None:
        if not wait_for(self.healthy, timeout, interval=1.0):
            self.stop()
            raise RuntimeError(f"mlflow server not healthy after {timeout} s")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL, to the session started for the server (its workers too)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # anything of it still there
        self.process.wait()
        self.log.close()


class TcpProxy:
    """127.0.0.1:port -> 127.0.0.1:target; `down` refuses and cuts connections, `up` restores.

    Stands between the sweep and an MLflow server to make an outage without stopping it.
    """

    def __init__(self, target: int) -> None:
        self.port, self.target = free_port(), target
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self.up()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        for sock in [self._listener, *self._open]:
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
        self._listener, self._open = None, []

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                return
            self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
