"""End to end, what a user of cluster/local.yaml does: ``ray up`` a cluster whose head is
127.0.0.1 (over an sshd the test starts on loopback with a key it makes), ``ray submit
sweeps/run.py -- sweeps/smoke.yaml`` against an authenticated tracking server, ``ray
dashboard``, ``ray down``; then MLflow holds one parent and one finished child per trial.

The cycle itself (tests/deploy/cluster_cycle.py) runs in its own PID namespace, ``unshare --pid
--fork --mount-proc``: the launcher's ``ray stop`` (head start commands, ``ray down``) ends every
Ray process it can see, and there it sees only the cycle's own. The other direction is not
covered: another engineer's ``ray stop`` outside the namespace would still see and end this
cluster, so the test is marked ``e2e`` and runs alone (``make test-e2e``, after ``make test``).
The tracking server is the no-container twin of docker/compose.yaml's (tracking_twin.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray")
pytest.importorskip("mlflow")
pytest.importorskip("psutil")

from deploy_checks import REPO, unavailable
from sweep_helpers import sweep_runs
from tracking_twin import TrackingTwin, postgres_bin

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

TOOLS = {
    "/usr/sbin/sshd": "openssh-server",
    "rsync": "rsync",
    "nc": "netcat-openbsd",
    "ssh": "openssh-client",
    "unshare": "util-linux",
    "runuser": "util-linux",
}


def _missing() -> list[str]:
    missing = [pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    return missing + ([] if postgres_bin() else ["postgresql"])


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingTwin]:
    if os.geteuid() != 0:
        unavailable("needs root: unshare --pid, and sshd for the test's own account")
    if missing := _missing():
        unavailable(f"apt-get install {' '.join(sorted(set(missing)))} (.ci/run does)")
    server = TrackingTwin(tmp_path_factory.mktemp("tracking"))
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def cycle(twin: TrackingTwin) -> Iterator[dict[str, Any]]:
    """Run the cycle once in a fresh PID namespace; -> its findings (and its wall time)."""
    work = Path(tempfile.mkdtemp(prefix="ssvae-e2e-", dir="/tmp"))  # short: Ray's unix sockets
    command = (
        f"{sys.executable} {REPO / 'tests' / 'deploy' / 'cluster_cycle.py'} --workdir {work} "
        f"--tracking-uri {twin.uri} --mlflow-user admin "
        f"--mlflow-password-file {twin.root / 'secrets' / 'mlflow_admin_password'}; exit $?"
    )  # two commands: bash stays PID 1 instead of exec'ing python
    start = time.monotonic()
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "bash", "-c", command],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    seconds = round(time.monotonic() - start, 1)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    found["seconds"]["cycle"] = seconds
    named = {port: flag for flag, port in found["ports"].items()}
    exposed = sorted(
        (s["process"], s["address"], named.get(s["port"], "random"))
        for s in found["listening"]
        if s["address"] not in {"127.0.0.1", "::1"}
    )
    tries = {w: found["drivers"][f"{w}/token"].get("tries") for w in ("gcs", "client")}
    print(
        f"\ncluster e2e: {found['seconds']}; listening beyond loopback: {exposed}; "
        f"drivers the control took: {tries}"
    )
    yield found
    shutil.rmtree(work, ignore_errors=True)


def _log(found: dict[str, Any]) -> str:
    return "\n".join(found.get("log_tail", []))


def test_ray_up_submit_down_runs_the_smoke_sweep_into_mlflow(
    cycle: dict[str, Any], twin: TrackingTwin, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cycle["ray_up"] == 0, _log(cycle)
    assert cycle["ray_submit"] == 0, _log(cycle)
    assert cycle["ray_down"] == 0, _log(cycle)
    for name, value in twin.credentials().items():
        monkeypatch.setenv(name, value)
    [parent], children = sweep_runs(twin.uri, "smoke")
    assert len(children) == 4  # smoke.yaml: 2 methods x 2 seeds
    assert {run.info.status for run in [parent, *children]} == {"FINISHED"}  # none RUNNING
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {c.data.tags["ssvae.status"] for c in children} == {"ok"}


def test_after_ray_down_no_ray_process_is_left(cycle: dict[str, Any]) -> None:
    assert cycle["ray_processes_after_down"] == []


def test_the_dashboard_is_on_loopback_behind_the_token(cycle: dict[str, Any]) -> None:
    """Through `ray dashboard`'s SSH tunnel: 401 without the token, 200 with it; and the
    dashboard's port is bound to 127.0.0.1 only (everything else of Ray is behind the token)."""
    assert cycle["dashboard"] == {"without_token": 401, "with_token": 200}
    port = int(cycle["ports"]["dashboard-port"])
    dashboard = {s["address"] for s in cycle["listening"] if s["port"] == port}
    assert dashboard == {"127.0.0.1"}, cycle["listening"]


def test_a_driver_without_the_right_token_is_refused(cycle: dict[str, Any]) -> None:
    """On the GCS port and the Ray Client port: no token, or a wrong one, and the driver does
    not connect; the cluster's own token (the control) connects, within three fresh drivers
    (cluster_cycle.control_probe: Ray Client's per-driver server now and then fails to start)."""
    drivers = cycle["drivers"]
    for where in ("gcs", "client"):
        for kind in ("no_token", "wrong_token"):
            probe = drivers[f"{where}/{kind}"]
            assert probe["exit"] != 0 and not probe["connected"], (where, kind, probe)
        logs = cycle.get("client_server_logs", {})
        assert drivers[f"{where}/token"]["connected"], (where, drivers[f"{where}/token"], logs)
    assert "AuthenticationError" in " ".join(drivers["gcs/no_token"]["said"])
    assert "(none)" not in cycle["client_server_logs"]  # a failure would show the head's logs


def test_ray_submit_reports_any_failure_as_exit_status_1(cycle: dict[str, Any]) -> None:
    """What a schedule calling `ray submit` sees: the script exited 3, `ray submit` exits 1
    (so the nightly's 1/2/3 are not told apart that way; docs/deploy.md)."""
    assert cycle["ray_submit_of_exit_3"] == 1
