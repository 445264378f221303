"""A container engine of our own for the compose end-to-end test: Debian's podman with its own
storage, network configuration and API socket under one directory, so that nothing of the
machine's own podman setup is read or changed, and everything goes when the directory does.

What this machine needs (measured): runc with cgroupfs and a file events logger (no systemd),
netavark for networks, raised default ulimits; healthchecks are not run by podman without
systemd, so `pump_healthchecks` runs them (``podman healthcheck run``) while compose waits.
No registry is reachable, so the base image is a ``debootstrap --variant=minbase bookworm``
with python3 (what python:3.11-slim-bookworm is, for these Dockerfiles), imported once and
cached as a tarball.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from sweep_helpers import free_port, wait_for

BASE_IMAGE = "localhost/ssvae-e2e-base:bookworm"
REQUIRED = {
    "podman": "podman",
    "runc": "runc",
    "debootstrap": "debootstrap",
    "iptables": "iptables",
    "/usr/lib/podman/netavark": "netavark",
    "/usr/lib/podman/aardvark-dns": "aardvark-dns",
}


def missing_packages() -> list[str]:
    return sorted({pkg for tool, pkg in REQUIRED.items() if shutil.which(tool) is None})


class Podman:
    """podman with storage, runtime state, networks and the API socket all under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for name in ("storage", "run", "networks", "tmp"):
            (root / name).mkdir(parents=True, exist_ok=True)
        (root / "containers.conf").write_text(
            '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
            '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
            f'[network]\nnetwork_backend = "netavark"\nnetwork_config_dir = "{root / "networks"}"\n'
        )
        (root / "storage.conf").write_text(
            f'[storage]\ndriver = "overlay"\ngraphroot = "{root / "storage"}"\n'
            f'runroot = "{root / "run"}"\n'
        )
        self.socket = root / "podman.sock"
        self.env = {
            **os.environ,
            "CONTAINERS_CONF": str(root / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(root / "storage.conf"),
            "TMPDIR": str(root / "tmp"),
            "DOCKER_HOST": f"unix://{self.socket}",  # what `docker compose` talks to
        }
        self.service: subprocess.Popen[bytes] | None = None

    def __call__(
        self, *args: str, timeout: float = 900, check: bool = True, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["podman", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            cwd=cwd,
        )

    def start_service(self) -> None:
        """The Docker-compatible API on our own socket (``podman system service``)."""
        log = (self.root / "service.log").open("wb")
        self.service = subprocess.Popen(
            ["podman", "system", "service", "--time=0", f"unix://{self.socket}"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        if not wait_for(self.socket.exists, 30):
            raise RuntimeError((self.root / "service.log").read_text())

    def import_base_image(self, cache: Path) -> float:
        """BASE_IMAGE from the cached rootfs tarball, made by debootstrap if absent; -> seconds."""
        start = time.monotonic()
        tarball = cache / "bookworm-minbase-python3.tar"
        if not tarball.exists():
            cache.mkdir(parents=True, exist_ok=True)
            rootfs = self.root / "rootfs"
            subprocess.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    "--include=python3,python3-venv,ca-certificates",
                    "bookworm",
                    str(rootfs),
                    "http://deb.debian.org/debian",
                ],
                check=True,
                capture_output=True,
                timeout=900,
            )
            # This machine reaches PyPI through a TLS-inspecting proxy: its CA bundle goes in.
            shutil.copy("/etc/ssl/certs/ca-certificates.crt", rootfs / "etc/ssl/certs/")
            subprocess.run(["tar", "-C", str(rootfs), "-cf", f"{tarball}.part", "."], check=True)
            os.replace(f"{tarball}.part", tarball)
            shutil.rmtree(rootfs)
        bundle = "/etc/ssl/certs/ca-certificates.crt"
        self(
            "import",
            "--change",
            f"ENV PIP_CERT={bundle}",
            "--change",
            f"ENV SSL_CERT_FILE={bundle}",
            str(tarball),
            BASE_IMAGE,
        )
        return round(time.monotonic() - start, 1)

    @contextlib.contextmanager
    def pump_healthchecks(self, project: str) -> Iterator[None]:
        """Run every healthcheck of `project`'s containers every 2 s (podman needs systemd to)."""
        stop = threading.Event()

        def pump() -> None:
            while not stop.wait(2):
                names = self(
                    "ps",
                    "--filter",
                    f"label=com.docker.compose.project={project}",
                    "--format",
                    "{{.Names}}",
                    check=False,
                    timeout=60,
                ).stdout.split()
                for name in names:
                    self("healthcheck", "run", name, check=False, timeout=60)

        thread = threading.Thread(target=pump, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=120)

    def close(self) -> None:
        """Every container and image of ours, the service (by its session), then the directory."""
        self("rm", "--all", "--force", "--volumes", check=False, timeout=300)
        self("volume", "prune", "--force", check=False, timeout=120)
        self("rmi", "--all", "--force", check=False, timeout=300)
        if self.service is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.service.pid, signal.SIGTERM)
            self.service.wait(timeout=30)
        for line in reversed(Path("/proc/mounts").read_text().splitlines()):
            mountpoint = line.split()[1]
            if mountpoint.startswith(str(self.root)):
                subprocess.run(["umount", "-l", mountpoint], check=False)
        shutil.rmtree(self.root, ignore_errors=True)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def torch_index(wheels: Path) -> Iterator[str]:
    """A PEP 503 index of this machine's CPU torch wheels on 127.0.0.1 (a build argument
    points the image's pip at it); -> its URL."""
    root = Path(os.environ.get("TMPDIR", "/tmp")) / f"ssvae-torch-index-{os.getpid()}"
    (root / "torch").mkdir(parents=True, exist_ok=True)
    links = []
    for wheel in sorted(wheels.glob("torch-*+cpu-*.whl")):
        target = root / "torch" / wheel.name
        if not target.exists():
            target.symlink_to(wheel)
        links.append(f'<a href="{wheel.name.replace("+", "%2B")}">{wheel.name}</a>')
    (root / "torch" / "index.html").write_text("<html><body>" + "".join(links) + "</body></html>")
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        shutil.rmtree(root, ignore_errors=True)
