"""The Ray cluster a sweep runs on: reached within a bounded time, and able to run a trial.

`connect` starts Ray on this machine (no address) or joins a cluster (``auto`` on a head
node, ``HOST:PORT``, ``ray://HOST:PORT``); an address that does not answer within
`CONNECT_TIMEOUT_S` is a `ClusterUnavailable` naming it (exit 3), before any MLflow run
exists. `check_resources` refuses, naming the ``resources.*`` key, a trial that no node can
ever hold (``gpu: 2`` on a machine without GPUs), instead of waiting forever for it; on a
cluster that scales, ``resources.wait_for_nodes_s`` is how long to wait for such a node.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from typing import Any

import ray

from ssvae_core import allocator
from ssvae_core.errors import ConfigError
from ssvae_core.sweep.preflight import host_port, ray_address
from ssvae_core.sweep.sections import Resources

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
POLL_S = 5.0
KEYS = {"CPU": "cpu", "GPU": "gpu"}  # Ray's resource name -> the spec's key


class ClusterUnavailable(RuntimeError):
    """The Ray cluster at an address cannot be reached (exit 3)."""


# Library chatter a user cannot act on: MLflow's schema creation, Ray's start-up lines, Tune's
# experiment box and result-file notes (the sweep prints its own progress lines instead).
QUIET_LOGGERS = (
    "mlflow.store.db.utils", "alembic", "ray.tune", "ray.train",
    "ray._private.authentication.authentication_token_setup",
)  # fmt: skip


def quiet_libraries() -> None:
    """Silence `QUIET_LOGGERS` below warnings (Ray's token-auth note: `connect` says it once)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's legacy reporter: silent at verbose 0
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def connect(address: str | None) -> bool:
    """Start or join Ray (see the module doc); True if this call started it."""
    quiet_libraries()
    if ray.is_initialized():
        return False
    given, named = ray_address(address)  # ray.init(address=None) joins $RAY_ADDRESS
    if given not in (None, "auto", "local"):
        host, port = host_port(given, named)
        try:  # Ray itself retries an address where nothing answers without end
            socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as err:
            raise ClusterUnavailable(
                f"{named}: nothing answers at {host}:{port} within "
                f"{CONNECT_TIMEOUT_S:.0f} s ({err}); is the cluster up (ray status)?"
            ) from None
    os.environ.update(allocator.HUGE_PAGES_ENV)  # for the workers a local start spawns
    on_sigterm = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    except (ConnectionError, RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ClusterUnavailable(f"{named}: {first[:300]}") from None
    finally:  # ray.init puts its C++ handler on SIGTERM: a stack dump and exit 15. The
        # command's own (one line, exit 143) holds until a Tuner run's graceful stop does.
        if callable(on_sigterm) and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, on_sigterm)
    where = "on this machine" if given in (None, "local") else f"at {given}"
    print(
        f"Ray: {'started' if given in (None, 'local') else 'joined'} {where}, token "
        "authentication on (Ray's default; a driver joining by address needs "
        "RAY_AUTH_MODE=token and the cluster's token)",
        flush=True,
    )
    return True


def disconnect() -> None:
    """`ray.shutdown`, then the Python SIGTERM handler put back in the OS: Ray's shutdown
    resets the signal below Python, which still lists its handler, so a SIGTERM while the
    tables and the report are written ended the driver silently (no line, the parent run
    left RUNNING)."""
    ray.shutdown()
    if threading.current_thread() is threading.main_thread():
        handler = signal.getsignal(signal.SIGTERM)
        if handler is not None:
            signal.signal(signal.SIGTERM, handler)


def _nodes() -> list[dict[str, float]]:
    return [node["Resources"] for node in ray.nodes() if node.get("Alive")]


def _fits(node: dict[str, float], need: dict[str, float]) -> bool:
    return all(node.get(name, 0.0) >= amount for name, amount in need.items() if amount > 0)


def check_resources(resources: Resources) -> None:
    """Wait up to ``resources.wait_for_nodes_s`` for a live node that holds one trial, or
    raise a `ConfigError` naming the key no node satisfies, with the largest on offer."""
    need = {"CPU": resources.cpu, "GPU": resources.gpu}
    deadline = time.monotonic() + resources.wait_for_nodes_s
    while True:
        nodes = _nodes()
        if any(_fits(node, need) for node in nodes):
            return
        if time.monotonic() >= deadline:
            raise ConfigError(_refusal(need, nodes, resources.wait_for_nodes_s))
        log.info("waiting for a node with %s (%s)", need, "resources.wait_for_nodes_s")
        time.sleep(POLL_S)


def _refusal(need: dict[str, float], nodes: list[dict[str, Any]], waited: float) -> str:
    short = [name for name, amount in need.items()
             if amount > 0 and all(node.get(name, 0.0) < amount for node in nodes)]  # fmt: skip
    names = short or [name for name, amount in need.items() if amount > 0]
    key = f"resources.{KEYS[names[0]]}"
    offers = ", ".join(
        "/".join(f"{node.get(name, 0.0):g} {name}" for name in need) for node in nodes
    )
    asked = " and ".join(f"{need[name]:g} {name}" for name in names)
    after = f" after waiting {waited:g} s" if waited else ""
    return (
        f"{key}: each trial asks for {asked} on one node, and no node of this cluster has "
        f"that{after} (nodes: {offers or 'none'}); lower it, or on a cluster that adds "
        "nodes set resources.wait_for_nodes_s"
    )
