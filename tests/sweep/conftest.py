"""Fixtures of the sweep tests: a scratch working directory, and one real MLflow server."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest
from sweep_helpers import MlflowServer


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A scratch working directory (where ``mlflow.db`` would land); Ray stopped after."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # an outage fails at once
    if importlib.util.find_spec("ray") and importlib.util.find_spec("mlflow"):
        from ssvae_core.sweep.nightly import run

        monkeypatch.setattr(run, "SETTLE_S", 0.0)  # a night's second look, at once
    yield tmp_path
    import ray

    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """``mlflow server`` on a free 127.0.0.1 port, healthy (about 25-30 s here)."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    try:
        server.wait()
        yield server
    finally:
        server.stop()
