"""Who a process is, in a form that outlives it: whether the process that wrote a record (a
nightly's RUNNING parent run) still runs, asked later, perhaps by another process.

A PID alone cannot say: after a reboot or an out-of-memory kill the kernel hands the number
to some other process, and two containers (or cloned machines) may share a host name but not
their PIDs. `identity` is ``BOOT:PIDNS:PID:START``: the kernel's boot id, the PID namespace,
the PID and the process's start time in clock ticks since boot (``/proc/PID/stat``); the
same four values can belong to one process only. `alive` answers from it: True or False where
this process can see the other's, None where it cannot tell (another boot, which is another
machine or this one rebooted; another PID namespace; no ``/proc``): then the caller judges by
other means, such as the record's age.
"""

from __future__ import annotations

import os
from pathlib import Path


def _boot() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:").strip("[]")
    except OSError:
        return ""


def _started(pid: int) -> str:
    """The start time of process `pid` in clock ticks since boot; "" if there is none, or if
    it has ended and waits to be reaped (a zombie keeps its entry, and runs no more)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat.rsplit(")", 1)[1].split()  # from field 3; the name before ")" may hold spaces
    return "" if fields[0] in ("Z", "X") else fields[19]  # state, and field 22: the start


def identity(pid: int | None = None) -> str:
    """``BOOT:PIDNS:PID:START`` of process `pid` (default: this one); "" without ``/proc``."""
    pid = os.getpid() if pid is None else pid
    parts = (_boot(), _namespace(), str(pid), _started(pid))
    return ":".join(parts) if all(parts) else ""


def alive(recorded: str) -> bool | None:
    """Whether the process `recorded` (an `identity`) still runs; None: this process cannot
    tell (recorded on another boot or PID namespace, or no ``/proc`` here)."""
    parts = recorded.split(":")
    here = identity()
    if len(parts) != 4 or not here or not (parts[2].isascii() and parts[2].isdigit()):
        return None
    boot, namespace, pid, started = parts
    if (boot, namespace) != tuple(here.split(":")[:2]):
        return None  # another machine (a clone may share its host name), or a container
    return _started(int(pid)) == started  # "" once it is gone; another start: a reused PID
