"""`sweep.process`: a process's identity outlives it, and a PID given to another process, a
reboot or a container beside this one is not mistaken for the process that wrote it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from ssvae_core.sweep import process

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def test_a_live_process_is_alive_and_a_finished_one_is_not() -> None:
    me = process.identity()
    assert me.count(":") == 3 and me.split(":")[2] == str(os.getpid())
    assert process.alive(me) is True
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)  # fmt: skip
    recorded = process.identity(child.pid)
    assert process.alive(recorded) is True
    child.communicate(b"")  # it ends, and is reaped
    assert process.alive(recorded) is False


def test_a_driver_that_ended_but_was_not_reaped_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)  # fmt: skip
    recorded = process.identity(child.pid)
    child.stdin.close()  # it ends; not waited for, it stays a zombie
    for _ in range(200):
        if Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            break
        time.sleep(0.01)
    assert process.alive(recorded) is False
    child.wait()


def test_a_pid_another_process_took_is_not_the_process_that_wrote_it() -> None:
    boot, namespace, pid, started = process.identity().split(":")
    earlier = f"{boot}:{namespace}:{pid}:{int(started) - 1}"  # this PID, another start
    assert process.alive(earlier) is False


@pytest.mark.parametrize(
    "recorded",
    [
        "another-boot:{ns}:{pid}:{start}",  # another machine, or this one before a reboot
        "{boot}:4026531999:{pid}:{start}",  # a container's PIDs (another namespace)
        "",  # a run recorded without /proc
        "{boot}:{ns}:not-a-pid:{start}",
    ],
)
def test_where_this_process_cannot_tell_it_says_so(recorded: str) -> None:
    boot, ns, pid, start = process.identity().split(":")
    assert process.alive(recorded.format(boot=boot, ns=ns, pid=pid, start=start)) is None


def test_a_nightly_is_stale_when_its_driver_is_gone_or_too_old_not_when_it_cannot_tell() -> None:
    pytest.importorskip("mlflow")
    import time

    from ssvae_core.sweep.nightly.history import is_stale

    boot, ns, pid, start = process.identity().split(":")

    def run(age_s: float, **tags: str) -> SimpleNamespace:
        info = SimpleNamespace(start_time=(time.time() - age_s) * 1000)
        return SimpleNamespace(info=info, data=SimpleNamespace(tags=tags))

    me, reused = process.identity(), f"{boot}:{ns}:{pid}:{int(start) - 1}"
    assert not is_stale(run(60, **{"ssvae.process": me}), budget_s=600)
    assert is_stale(run(60, **{"ssvae.process": reused}), budget_s=600)  # PID reused: blocked
    assert is_stale(run(5000, **{"ssvae.process": me}), budget_s=600)  # for ever, before
    elsewhere = f"another-boot:{ns}:{pid}:{start}"
    assert not is_stale(run(60, **{"ssvae.process": elsewhere}), budget_s=600)  # wait: it may run
    assert is_stale(run(4300, **{"ssvae.process": elsewhere}), budget_s=600)
    host = os.uname().nodename  # a run from before ssvae.process: its host and PID
    assert not is_stale(run(60, **{"ssvae.host": host, "ssvae.pid": pid}), budget_s=600)
    assert is_stale(run(60, **{"ssvae.host": host, "ssvae.pid": "999999999"}), budget_s=600)
    gone = {"ssvae.host": host, "ssvae.pid": "999999999", "ssvae.process": ""}  # no /proc there
    assert is_stale(run(60, **gone), budget_s=600)
    for odd in ("\u00b2", "99999999999999999999"):  # int() raised: every night was exit 3
        assert not is_stale(run(60, **{"ssvae.host": host, "ssvae.pid": odd}), budget_s=600)
        assert is_stale(run(4300, **{"ssvae.host": host, "ssvae.pid": odd}), budget_s=600)
    assert process.alive(f"{boot}:{ns}:\u00b2:{start}") is None  # int() raised
