"""Locks on files that a killed process cannot leave stuck: ``flock``, released by the kernel
when the holder exits, however it exits.

`exclusive` guards one sweep name (two drivers of one name would log every trial twice
into the same runs); `serialised` queues the first clients of a fresh sqlite tracking file
(MLflow's schema creation races otherwise).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Busy(RuntimeError):
    """Another live process holds the lock (exit code 3: try again when it is done)."""


@contextmanager
def exclusive(path: Path, what: str) -> Iterator[None]:
    """Hold `path`'s lock while the block runs, or raise `Busy` at once naming its holder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise Busy(f"{what} is running already (pid {holder}; lock {path})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextmanager
def serialised(path: Path, timeout_s: float = 120.0) -> Iterator[None]:
    """Hold `path`'s lock while the block runs, waiting up to `timeout_s` for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Busy(f"waited {timeout_s:.0f} s for the lock {path}") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)
