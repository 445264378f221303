"""What a user of cluster/local.yaml does, on this machine: ``ray up``, ``ray submit`` of the
smoke sweep, ``ray dashboard``, ``ray down``, against a head at 127.0.0.1 reached over an sshd
of our own. Run by tests/deploy/test_cluster_e2e.py; it prints one JSON object of findings.

It must run inside its own PID namespace::

    unshare --pid --fork --mount-proc bash -c 'python tests/deploy/cluster_cycle.py ...; exit $?'

because the launcher's head start commands and ``ray down`` run ``ray stop``, which ends every Ray
process it can see: in a fresh PID namespace it sees only this cycle's, not those of other Ray
tests or engineers on the machine. (bash, not python, is the namespace's PID 1: it reaps the
orphans Ray leaves, and when it exits the kernel ends whatever of the cycle is left.)

The cluster config is cluster/local.yaml with only what this machine needs changed: the head is
127.0.0.1 with no workers, SSH goes through ``nc`` to our sshd's port, the venv that runs this
script stands in for the one setup_commands would create (it is linked at ~/ssvae-venv, and the
two `pip install` commands run with ``--dry-run``: they must find what they name),
and Ray's fixed ports get free ones.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import yaml

REPO = Path(__file__).resolve().parents[2]
# The two `pip install` setup commands run as written but install nothing: they must still find
# what they name (the checkout as an editable project, the image's pins on the index).
PIP_DRY_RUN = "--dry-run --no-deps --no-build-isolation"
VENV = Path(sys.prefix)  # the venv that runs this script: stands in for ~/ssvae-venv
RAY = str(VENV / "bin" / "ray")
RAY_PROCESS_NAMES = ("raylet", "gcs_server", "dashboard", "ray::", "monitor.py", "log_monitor",
                     "ray.util.client.server")  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(command: list[str], env: dict[str, str], log: Path, timeout: float) -> tuple[int, float]:
    """Run `command` from the repository root (as `ray up` is run); -> (exit status, seconds)."""
    start = time.monotonic()
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(command)}\n".encode())
        out.flush()
        try:
            code = subprocess.run(
                command, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            code = 124
    return code, round(time.monotonic() - start, 1)


def start_sshd(work: Path, head_home: Path) -> tuple[subprocess.Popen[bytes], int]:
    """sshd on 127.0.0.1 with a key made here; sessions get HOME=<the isolated head home>."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "host_key")], check=True
    )
    port = free_port()
    config = work / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {work / 'host_key'}\n"
        f"PidFile {work / 'sshd.pid'}\nAuthorizedKeysFile {work / 'authorized_keys'}\n"
        # StrictModes no: the key lives under a temporary directory, not a 0700 ~/.ssh.
        "StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nUsePAM no\n"
        f"AllowUsers {os.environ.get('USER') or psutil.Process().username()}\n"
        f"SetEnv HOME={head_home}\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    log = (work / "sshd.log").open("wb")
    sshd = subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return sshd, port
        time.sleep(0.2)
    raise RuntimeError(f"sshd did not listen: {(work / 'sshd.log').read_text()}")


def cluster_config(work: Path, ssh_port: int, ports: dict[str, int]) -> Path:
    """cluster/local.yaml with this machine's values (see the module docstring)."""
    config: dict[str, Any] = yaml.safe_load((REPO / "cluster" / "local.yaml").read_text())
    config["cluster_name"] = f"ssvae-e2e-{secrets.token_hex(4)}"
    config["provider"].update(head_ip="127.0.0.1", worker_ips=[])
    config["max_workers"] = 0
    config["auth"] = {
        "ssh_user": psutil.Process().username(),
        "ssh_private_key": str(work / "id_ed25519"),
        "ssh_proxy_command": f"nc %h {ssh_port}",  # the auth section has no port
    }
    setup = [
        c.replace("pip install", f"pip install {PIP_DRY_RUN}") for c in config["setup_commands"]
    ]
    assert sum(PIP_DRY_RUN in c for c in setup) == 2, config["setup_commands"]
    config["setup_commands"] = setup
    shipped = {"port", "dashboard-port"}  # in the file already: replaced below
    extra = " ".join(f"--{flag}={port}" for flag, port in ports.items() if flag not in shipped)
    start = []
    for command in config["head_start_ray_commands"]:
        command = command.replace("--port=6379", f"--port={ports['port']}")
        command = command.replace(
            "--dashboard-port=8265", f"--dashboard-port={ports['dashboard-port']}"
        )
        if "ray start" in command:
            command += f" {extra}"  # Ray's other fixed ports: other Rays share this machine
        start.append(command)
    config["head_start_ray_commands"] = start
    path = work / "cluster.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _short(name: str, cmdline: list[str]) -> str:
    """A Ray process's name: its own, or for a python one the script or module it runs."""
    if not name.startswith("python"):
        return name
    for i, arg in enumerate(cmdline):
        if arg == "-m" and i + 1 < len(cmdline):
            return cmdline[i + 1]
        if arg.endswith(".py") and "/ray/" in arg:
            return arg.split("/ray/", 1)[1]
    return name


def listening(names: tuple[str, ...] = RAY_PROCESS_NAMES) -> list[dict[str, Any]]:
    """Every TCP socket a Ray process of this namespace listens on: (process, address, port)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            label = " ".join(proc.info["cmdline"] or [proc.info["name"] or ""])
            if not any(n in label for n in names) or "cluster_cycle" in label:
                continue
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN:
                    found.append(
                        {
                            "process": _short(proc.info["name"], proc.info["cmdline"] or []),
                            "address": conn.laddr.ip,
                            "port": conn.laddr.port,
                        }
                    )
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def ray_processes() -> list[str]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        label = " ".join(proc.info["cmdline"] or [proc.info["name"] or ""])
        if any(n in label for n in RAY_PROCESS_NAMES) and "cluster_cycle" not in label:
            found.append(label[:80])
    return found


def http_status(url: str, token: str | None) -> int:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except OSError:
        return 0


def dashboard_through_tunnel(
    config: Path, env: dict[str, str], remote: int, token: str, log: Path
) -> dict[str, int]:
    """`ray dashboard` (an SSH tunnel), then /api/version through it without and with the token."""
    local = free_port()
    with log.open("ab") as out:
        tunnel = subprocess.Popen(
            [RAY, "dashboard", str(config), "--port", str(local), "--remote-port", str(remote)],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{local}/api/version"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and http_status(url, token) == 0:
            time.sleep(0.5)
        return {"without_token": http_status(url, None), "with_token": http_status(url, token)}
    finally:
        os.killpg(tunnel.pid, 15)
        tunnel.wait(timeout=30)


def driver_probe(address: str, env: dict[str, str], token: str | None) -> dict[str, Any]:
    """`ray.init(address)` in a fresh process with `token` (None: none at all)."""
    probe = f"import ray; ray.init(address={address!r}); print('CONNECTED', flush=True)"
    env = {**env, **({"RAY_AUTH_TOKEN": token} if token else {})}
    try:
        done = subprocess.run(
            [str(VENV / "bin" / "python"), "-c", probe],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
    except subprocess.TimeoutExpired:
        return {"exit": 124, "connected": False, "said": ["timed out after 90 s"]}
    said = [line for line in done.stderr.splitlines() if "Error" in line or "rror:" in line]
    return {"exit": done.returncode, "connected": "CONNECTED" in done.stdout, "said": said[-2:]}


def control_probe(
    address: str, env: dict[str, str], token: str | None, tries: int = 3
) -> dict[str, Any]:
    """`driver_probe` with the cluster's own token, up to `tries` fresh drivers until one
    connects: the control of the refusals. Ray Client's per-driver server now and then dies as
    it starts ("Starting Ray client server failed", on a 2-core CI machine), and the next
    driver connects; a refusal is never retried. -> the last probe, with how many it took and
    what the failed ones said."""
    failed: list[list[str]] = []
    probe = driver_probe(address, env, token)
    while not probe["connected"] and len(failed) + 1 < tries:
        failed.append(probe["said"])
        time.sleep(5)
        probe = driver_probe(address, env, token)
    return {**probe, "tries": len(failed) + 1, "failed_tries": failed}


def client_server_logs(ray_tmp: Path) -> dict[str, list[str]]:
    """The last lines of the head's Ray Client logs (proxier and specific servers): what a
    failed client connection says about itself. Ray keeps its files in ``$RAY_TMPDIR/ray``."""
    logs = ray_tmp / "ray" / "session_latest" / "logs"
    if not logs.is_dir():
        return {"(none)": [f"no {logs}"]}
    return {
        path.name: path.read_text(errors="replace").splitlines()[-15:]
        for path in sorted(logs.glob("ray_client_server*"))
        if path.stat().st_size
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="a short path (unix sockets)")
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--mlflow-user", required=True)
    parser.add_argument("--mlflow-password-file", type=Path, required=True)
    args = parser.parse_args()
    assert os.getpid() < 100, "run me inside a fresh PID namespace (see the module docstring)"
    work: Path = args.workdir
    laptop, head = work / "laptop", work / "head"  # the two homes: yours, and the head's
    for home in (laptop, head):
        (home / ".ssvae").mkdir(parents=True)
    result: dict[str, Any] = {"seconds": {}}
    log = work / "cycle.log"

    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "id_ed25519")], check=True
    )
    shutil.copy(work / "id_ed25519.pub", work / "authorized_keys")
    (head / "ssvae-venv").symlink_to(VENV)
    # The head's own ~/.bashrc before setup_commands append theirs: sshd starts sessions in the
    # account's real home, so move to the isolated one; Ray's files go under the short workdir.
    (head / ".bashrc").write_text(f'cd "$HOME"\nexport RAY_TMPDIR={work / "ht"}\n')
    sshd, ssh_port = start_sshd(work, head)

    keep = ("PATH", "LANG", "LC_ALL", "TERM", "USER", "LOGNAME")
    env = {k: v for k, v in os.environ.items() if k in keep}
    (work / "lt").mkdir()
    env.update(
        HOME=str(laptop),
        RAY_TMPDIR=str(work / "lt"),
        TMPDIR=str(work / "lt"),
        PATH=f"{VENV / 'bin'}:{env['PATH']}",
    )
    # What the header of cluster/local.yaml asks of you, once: the token and the env file.
    subprocess.run([RAY, "get-auth-token", "--generate"], env=env, check=True, capture_output=True)
    token = (laptop / ".ray" / "auth_token").read_text().strip()
    password = args.mlflow_password_file.read_text().strip()
    env_file = laptop / ".ssvae" / "mlflow.env"
    env_file.write_text(  # as the header's `printf %q`: the nodes source it
        f"MLFLOW_TRACKING_USERNAME={shlex.quote(args.mlflow_user)}\n"
        f"MLFLOW_TRACKING_PASSWORD={shlex.quote(password)}\n"
    )
    env_file.chmod(0o600)

    names = [
        "port",
        "dashboard-port",
        "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port",
        "metrics-export-port",
        "runtime-env-agent-port",
        "ray-client-server-port",
    ]
    ports = {name: free_port() for name in names}
    result["ports"] = ports
    config = cluster_config(work, ssh_port, ports)
    try:
        code, result["seconds"]["ray_up"] = run(
            [RAY, "up", "-y", "--no-config-cache", str(config)], env, log, 600
        )
        result["ray_up"] = code
        if code == 0:
            submit = [
                RAY,
                "submit",
                str(config),
                "sweeps/run.py",
                "--",
                "sweeps/smoke.yaml",
                "--tracking-uri",
                args.tracking_uri,
                "--storage-path",
                str(head / "runs"),
            ]
            result["ray_submit"], result["seconds"]["ray_submit"] = run(submit, env, log, 900)
            result["listening"] = listening()
            result["dashboard"] = dashboard_through_tunnel(
                config, env, ports["dashboard-port"], token, log
            )
            # Drivers from a fresh home, on the GCS port and on the Ray Client port: without a
            # token (refused before connecting), with a wrong one (refused by the cluster), and
            # with the cluster's own (the control: it connects).
            stranger = {**env, "HOME": str(work / "stranger"), "RAY_AUTH_MODE": "token"}
            tokens = {"no_token": None, "wrong_token": secrets.token_hex(16), "token": token}
            client = f"ray://127.0.0.1:{ports['ray-client-server-port']}"
            addresses = {"gcs": f"127.0.0.1:{ports['port']}", "client": client}
            result["drivers"] = {
                f"{where}/{kind}": (control_probe if kind == "token" else driver_probe)(
                    addresses[where], stranger, value
                )
                for where in addresses
                for kind, value in tokens.items()
            }
            result["client_server_logs"] = client_server_logs(work / "ht")
            # What `ray submit` reports when the script exits 3 (as ssvae nightly would).
            (work / "exit3.py").write_text("import sys\nsys.exit(3)\n")
            result["ray_submit_of_exit_3"], _ = run(
                [RAY, "submit", str(config), str(work / "exit3.py")], env, log, 120
            )
        result["ray_down"], result["seconds"]["ray_down"] = run(
            [RAY, "down", "-y", str(config)], env, log, 300
        )
        time.sleep(2)
        result["ray_processes_after_down"] = ray_processes()
    finally:
        sshd.terminate()
        sshd.wait(timeout=10)
        result["log_tail"] = log.read_text(errors="replace").splitlines()[-40:]
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
