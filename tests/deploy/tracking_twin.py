"""docker/compose.yaml's tracking stack without containers: a PostgreSQL cluster of the Debian
server binaries and docker/mlflow-server.sh (the MLflow image's entrypoint, unchanged) on
127.0.0.1, with freshly generated secrets. The cluster end-to-end test logs into it; it also
stands in for the compose stack where no container engine is installed.

Every process is ours and stopped by its PID (the server by its own session's group).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

from deploy_checks import DOCKER
from sweep_helpers import free_port, wait_for

SECRET_NAMES = ("postgres_password", "mlflow_admin_password", "mlflow_flask_secret_key")


def postgres_bin() -> Path | None:
    """The directory of initdb/pg_ctl: Debian's /usr/lib/postgresql/N/bin, else on PATH."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: p.parts)
    found = candidates[-1] if candidates else shutil.which("pg_ctl")
    return Path(found).parent if found else None


def http_status(url: str, auth: tuple[str, str] | None = None) -> int:
    """The HTTP status of GET `url`, with basic `auth` (user, password) or none; 0: no answer."""
    request = urllib.request.Request(url)
    if auth:
        token = b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except OSError:
        return 0


AWKWARD = " %41 p@ss/w:rd;$HOME'"  # what an ini, a URI or a shell would misread, unescaped


def write_secrets(directory: Path, awkward: bool = False) -> dict[str, str]:
    """The three secret files of docker/compose.yaml's header, random (as `openssl rand -hex`);
    `awkward`: each ending in `AWKWARD` (a password someone chose)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    tail = AWKWARD if awkward else ""
    values = {name: secrets.token_hex(32) + tail for name in SECRET_NAMES}
    for name, value in values.items():
        (directory / name).write_text(value + "\n")
    return values


class TrackingTwin:
    """PostgreSQL + ``docker/mlflow-server.sh`` on 127.0.0.1; `start` again after `stop` keeps
    the database and the artifacts (the compose volumes' part)."""

    def __init__(self, root: Path) -> None:
        bin_dir = postgres_bin()
        assert bin_dir is not None, "PostgreSQL's server binaries are not installed"
        self.bin = bin_dir
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        # awkward: mlflow-server.sh percent-encoded the URI into an ini that read `%` as an
        # interpolation, and the cluster's mlflow.env was sourced unquoted
        self.secrets = write_secrets(root / "secrets", awkward=True)
        # PostgreSQL refuses to run as root: as root, its files belong to the postgres user.
        self.as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.pg_dir = Path(tempfile.mkdtemp(prefix="ssvae-pg-"))
        if self.as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(self.pg_dir, user.pw_uid, user.pw_gid)
        self.pg_port, self.port = free_port(), free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.server: subprocess.Popen[bytes] | None = None
        self._initdb()

    @property
    def admin_password(self) -> str:
        return self.secrets["mlflow_admin_password"]

    def credentials(self) -> dict[str, str]:
        """The environment an MLflow client needs to log in as the admin."""
        return {
            "MLFLOW_TRACKING_USERNAME": "admin",
            "MLFLOW_TRACKING_PASSWORD": self.admin_password,
        }

    def _pg(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self.as_postgres, str(self.bin / tool), *args],
            check=True,
            capture_output=True,
            timeout=120,
            cwd=self.pg_dir,
        )

    def _initdb(self) -> None:
        pwfile = self.pg_dir / "pwfile"
        pwfile.write_text(self.secrets["postgres_password"] + "\n")
        if self.as_postgres:
            shutil.chown(pwfile, "postgres")
        # UTF8 as the official image: with SQL_ASCII psycopg returns bytes and MLflow fails.
        self._pg(
            "initdb",
            "-D",
            str(self.pg_dir / "data"),
            "-U",
            "mlflow",
            f"--pwfile={pwfile}",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        )
        pwfile.unlink()
        self._start_postgres()
        self._pg(
            "createdb", "-h", str(self.pg_dir), "-p", str(self.pg_port), "-U", "mlflow", "mlflow"
        )

    def _start_postgres(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.pg_port} -k {self.pg_dir}"
        self._pg(
            "pg_ctl",
            "-D",
            str(self.pg_dir / "data"),
            "-l",
            str(self.pg_dir / "postgres.log"),
            "-o",
            options,
            "-w",
            "start",
        )

    def start(self, timeout: float = 180) -> None:
        """PostgreSQL (if stopped) and the server, healthy; raises with its log otherwise."""
        if not (self.pg_dir / "data" / "postmaster.pid").exists():
            self._start_postgres()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SSVAE_"))},
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "SSVAE_SECRETS_DIR": str(self.root / "secrets"),
            "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_PORT": str(self.pg_port),
            "MLFLOW_HOST": "127.0.0.1",
            "MLFLOW_PORT": str(self.port),
            "MLFLOW_WORKERS": "1",
            "MLFLOW_ARTIFACTS_DESTINATION": str(self.root / "artifacts"),
        }
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - the child keeps it
        self.server = subprocess.Popen(
            ["sh", str(DOCKER / "mlflow-server.sh")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        if not wait_for(self.healthy, timeout, interval=1.0):
            self.stop()
            raise RuntimeError(f"tracking twin not healthy: {self.log_tail()}")

    def healthy(self) -> bool:
        return self.status("/health", auth=None) == 200

    def status(self, path: str, auth: tuple[str, str] | None) -> int:
        return http_status(self.uri + path, auth)

    def log_tail(self, lines: int = 30) -> str:
        path = self.root / "server.log"
        return (
            "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
            if path.exists()
            else ""
        )

    def stop(self) -> None:
        """The server (SIGTERM, then SIGKILL to its session), then PostgreSQL (fast shutdown)."""
        if self.server is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.server.pid, signal.SIGTERM)
            try:
                self.server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.server.pid, signal.SIGKILL)
                self.server.wait()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.server.pid, signal.SIGKILL)  # its workers, if any outlived it
            self.server = None
        if (self.pg_dir / "data" / "postmaster.pid").exists():
            self._pg("pg_ctl", "-D", str(self.pg_dir / "data"), "-m", "fast", "-w", "stop")

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.pg_dir, ignore_errors=True)
