"""Shared fixtures: a tiny video and a tiny config so core tests run in seconds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ssvae_core import config, loader
from ssvae_core.balls import Video, simulate

torch.set_num_threads(1)

GIB = 2**30

TINY_OVERRIDES = {
    "data": {"n_frames": 120, "size": 32, "diameter": 6},
    "train": {"epochs": 2, "batch_size": 10, "device": "cpu"},
    "probe": {"every_epochs": 1},
}


@pytest.fixture
def tiny_cfg() -> config.RunConfig:
    return loader.from_dict(TINY_OVERRIDES, config.PRESETS["small"])


@pytest.fixture
def tiny_video(tiny_cfg: config.RunConfig) -> Video:
    return simulate(tiny_cfg.data, tiny_cfg.data.seed)


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """``fake_cuda(name, total)``: torch then describes one CUDA device NAME with TOTAL bytes
    (this machine has none)."""

    def fake(name: str = "Fake GPU", total: int = 4 * GIB) -> None:
        memory = SimpleNamespace(total_memory=total)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda _index=0: name)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda _index=0: memory)

    return fake


@pytest.fixture
def fake_gpu(fake_cuda: Callable[..., None]) -> None:
    """A CUDA device with 4 GiB, as torch would describe it."""
    fake_cuda()


@pytest.fixture
def refused_not_waited() -> Callable[[Path, Callable[[], object]], str]:
    """``refused_not_waited(fifo, read)``: `read` (which opens the named pipe `fifo`, nobody
    writing to it) run in a thread; the message of the `ConfigError` it must raise within
    10 s. One that waits for a writer instead is released (the test opens the other end)
    and fails the test rather than hang the suite."""
    import os
    import threading

    from ssvae_core.errors import ConfigError

    def run(fifo: Path, read: Callable[[], object]) -> str:
        answer: list[ConfigError] = []

        def attempt() -> None:
            try:
                read()
            except ConfigError as err:
                answer.append(err)

        reader = threading.Thread(target=attempt, daemon=True)
        reader.start()
        reader.join(timeout=10)
        if reader.is_alive():  # it waits in open(): be its writer to release it, then fail
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            pytest.fail(f"reading {fifo} waited for a writer")
        assert len(answer) == 1, f"reading {fifo} raised no ConfigError"
        return str(answer[0])

    return run


@pytest.fixture
def ctrl_c_at_call(monkeypatch: pytest.MonkeyPatch) -> Callable[[object, str, int], None]:
    """``ctrl_c_at_call(module, name, n)``: ``module.name`` runs as before, except that its
    n-th call raises KeyboardInterrupt, as Ctrl-C during that call would."""

    def patch(module: object, name: str, n: int) -> None:
        real, calls = getattr(module, name), []

        def interrupted(*args: object, **kwargs: object) -> object:
            calls.append(1)
            if len(calls) == n:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, interrupted)

    return patch
