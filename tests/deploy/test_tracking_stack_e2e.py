"""End to end, the tracking stack of docker/compose.yaml on this machine: the images built (the
worker image with the CPU torch wheel this machine serves, through a build argument), the stack
brought up by ``docker compose`` (talking to podman), a smoke sweep logged into it from the
worker image with credentials, an unauthenticated request refused, and the runs still there
after ``compose down`` + ``up`` (the volumes).

There is no Docker engine and no registry here: podman_engine.py says what stands in. The
official postgres image cannot be pulled, so compose.e2e.yaml replaces it with
tests/deploy/podman/postgres.Dockerfile (Debian's PostgreSQL, the same environment interface).
The last test is the same server script without containers (tracking_twin.py): it runs where
podman is absent too.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytest.importorskip("mlflow")

from deploy_checks import BIN, DOCKER, REPO, unavailable
from podman_engine import BASE_IMAGE, Podman, missing_packages, torch_index
from sweep_helpers import artifact_names, free_port, sweep_runs
from tracking_twin import TrackingTwin, http_status, postgres_bin, write_secrets

WHEELS = Path(os.environ.get("PIP_FIND_LINKS", "/opt/wheels"))
COMPOSE_FILES = [DOCKER / "compose.yaml", REPO / "tests" / "deploy" / "podman" / "compose.e2e.yaml"]
WORKER_IMAGE = "localhost/ssvae:e2e-cpu"
CACHE = Path(os.environ.get("SSVAE_E2E_CACHE", Path.home() / ".cache" / "ssvae-e2e"))


@dataclass
class Stack:
    podman: Podman
    project: str
    env: dict[str, str]
    port: int
    secrets: dict[str, str]
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def compose(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        command = [str(BIN / "docker-compose"), "-p", self.project]
        for path in COMPOSE_FILES:
            command += ["-f", str(path)]
        return subprocess.run(
            [*command, *args],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def up(self) -> float:
        start = time.monotonic()
        with self.podman.pump_healthchecks(self.project):
            done = self.compose("up", "--detach", "--wait", "--wait-timeout", "300")
        assert done.returncode == 0, done.stdout + done.stderr + self.logs()
        return round(time.monotonic() - start, 1)

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "40").stdout[-4000:]

    def status(self, path: str, auth: tuple[str, str] | None) -> int:
        return http_status(self.uri + path, auth)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if os.geteuid() != 0:
        unavailable("needs root: rootful podman (networks, overlay storage)")
    if missing := missing_packages():
        unavailable(f"apt-get install {' '.join(missing)} (.ci/run does)")
    if not list(WHEELS.glob("torch-*+cpu-*.whl")):
        unavailable(f"no CPU torch wheel in {WHEELS} (the worker image would pull CUDA torch)")
    root = tmp_path_factory.mktemp("podman")
    podman = Podman(root)
    secrets_dir = root / "secrets"
    secret_values = write_secrets(secrets_dir)  # as the compose header: a 0700 directory...
    for name in secret_values:
        (secrets_dir / name).chmod(0o644)  # ...of files the containers' users can read
    port = free_port()
    env = {
        **podman.env,
        "SSVAE_SECRETS_DIR": str(secrets_dir),
        "BASE_IMAGE": BASE_IMAGE,
        "MLFLOW_PORT": str(port),
    }
    built = Stack(podman, f"ssvae-e2e-{secrets.token_hex(3)}", env, port, secret_values)
    try:
        podman.start_service()
        built.seconds["base_image"] = podman.import_base_image(CACHE)
        start = time.monotonic()
        with torch_index(WHEELS) as index:
            podman(
                "build",
                "--network=host",
                "-f",
                "docker/Dockerfile",
                "--build-arg",
                f"BASE_IMAGE={BASE_IMAGE}",
                "--build-arg",
                f"TORCH_INDEX_URL={index}",
                "--build-arg",
                "TORCH_VERSION=2.13.0+cpu",
                "-t",
                WORKER_IMAGE,
                ".",
                timeout=1800,
                cwd=REPO,
            )
        built.seconds["worker_image"] = round(time.monotonic() - start, 1)
        start = time.monotonic()
        done = built.compose("build", timeout=1800)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        built.seconds["compose_build"] = round(time.monotonic() - start, 1)
        built.seconds["compose_up"] = built.up()
        yield built
    finally:
        built.compose("down", "--volumes", timeout=300)
        print(f"\ntracking stack e2e: {built.seconds}")
        podman.close()


ADMIN = "admin"
SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


@pytest.mark.slow
@pytest.mark.e2e
def test_both_services_are_healthy_and_only_mlflow_is_published(stack: Stack) -> None:
    listed = stack.compose("ps", "--format", "json").stdout  # one JSON object per line
    by_service = {row["Service"]: row for row in map(json.loads, listed.splitlines())}
    assert {s: by_service[s]["Health"] for s in ("postgres", "mlflow")} == {
        "postgres": "healthy",
        "mlflow": "healthy",
    }
    mlflow_ports = stack.podman("port", by_service["mlflow"]["Name"]).stdout.split()
    assert mlflow_ports == ["5000/tcp", "->", f"127.0.0.1:{stack.port}"]
    assert stack.podman("port", by_service["postgres"]["Name"]).stdout.strip() == ""


@pytest.mark.slow
@pytest.mark.e2e
def test_mlflow_refuses_requests_without_valid_credentials(stack: Stack) -> None:
    assert stack.status("/health", None) == 200  # the healthcheck's path only
    assert stack.status(SEARCH, None) == 401
    assert stack.status(SEARCH, (ADMIN, "not-the-password")) == 401
    assert stack.status(SEARCH, (ADMIN, stack.secrets["mlflow_admin_password"])) == 200


@pytest.mark.slow
@pytest.mark.e2e
def test_the_mlflow_image_refuses_to_start_without_its_secrets(
    stack: Stack, tmp_path: Path
) -> None:
    tmp_path.chmod(0o755)  # mounted whole at /run/secrets: the server's user must enter it
    for name in stack.secrets:
        (tmp_path / name).write_text("" if name == "mlflow_flask_secret_key" else "x" * 32)
        (tmp_path / name).chmod(0o644)
    done = stack.podman(
        "run",
        "--rm",
        "-v",
        f"{tmp_path}:/run/secrets:ro",
        "ssvae-mlflow:3.17.2",
        check=False,
        timeout=120,
    )
    assert done.returncode == 78, done.stdout + done.stderr
    assert "secret 'mlflow_flask_secret_key' is missing or empty" in done.stderr


@pytest.mark.slow
@pytest.mark.e2e
def test_the_worker_image_is_ready_for_the_cluster_launcher(stack: Stack) -> None:
    """What `ray up cluster/aws.yaml` takes from the image: HOME from its configured
    environment (where file_mounts go; /root without it), and ssh and rsync, with which the
    head's autoscaler sets up each worker node from inside the container."""
    inspect = stack.podman("image", "inspect", "-f", "{{json .Config.Env}}", WORKER_IMAGE)
    assert "HOME=/home/ssvae" in json.loads(inspect.stdout)
    found = stack.podman(
        "run", "--rm", WORKER_IMAGE, "sh", "-c", 'echo "$(id -u) $HOME"; command -v ssh rsync',
        check=False,
    )  # fmt: skip
    assert found.returncode == 0, found.stdout + found.stderr
    assert found.stdout.split("\n")[0] == "1000 /home/ssvae", found.stdout


@pytest.mark.slow
@pytest.mark.e2e
def test_a_smoke_sweep_from_the_worker_image_is_logged_and_survives_down_and_up(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = {
        "MLFLOW_TRACKING_USERNAME": ADMIN,
        "MLFLOW_TRACKING_PASSWORD": stack.secrets["mlflow_admin_password"],
    }
    start = time.monotonic()
    sweep = subprocess.run(
        [
            "podman",
            "run",
            "--rm",
            "--network",
            "host",
            "--shm-size",
            "1g",
            "-e",
            "MLFLOW_TRACKING_USERNAME",
            "-e",
            "MLFLOW_TRACKING_PASSWORD",
            WORKER_IMAGE,
            "ssvae",
            "sweep",
            "/opt/ssvae/sweeps/smoke.yaml",
            "--tracking-uri",
            stack.uri,
        ],
        env={**stack.podman.env, **credentials},
        capture_output=True,
        text=True,
        timeout=900,
    )
    stack.seconds["sweep_in_worker_image"] = round(time.monotonic() - start, 1)
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    for name, value in credentials.items():
        monkeypatch.setenv(name, value)

    def runs() -> tuple[str, set[str], set[str]]:
        [parent], children = sweep_runs(stack.uri, "smoke")
        assert len(children) == 4 and {c.data.tags["mlflow.parentRunId"] for c in children} == {
            parent.info.run_id
        }
        statuses = {run.info.status for run in [parent, *children]}
        return parent.info.run_id, {c.info.run_id for c in children}, statuses

    parent_id, child_ids, statuses = runs()
    assert statuses == {"FINISHED"}  # one parent, one finished child per trial, none RUNNING
    assert {"results.csv", "fig1c.png", "sweep.yaml"} <= artifact_names(stack.uri, parent_id)

    down = stack.compose("down", timeout=300)  # not --volumes: the runs must survive
    assert down.returncode == 0, down.stderr
    stack.seconds["compose_up_again"] = stack.up()
    assert runs() == (parent_id, child_ids, {"FINISHED"})
    from mlflow import MlflowClient

    results = MlflowClient(stack.uri).download_artifacts(parent_id, "results.csv")
    assert Path(results).read_text().startswith("cell,")  # the artifact volume, too


@pytest.mark.slow
@pytest.mark.e2e
def test_the_same_server_without_containers_refuses_strangers_and_keeps_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docker/mlflow-server.sh against Debian's PostgreSQL (no podman needed): 401 without
    credentials, a run logged with them, still there after the server and database restart."""
    if postgres_bin() is None:
        unavailable("apt-get install postgresql (.ci/run does)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        unavailable("runuser (util-linux) is needed to run PostgreSQL as root")
    twin = TrackingTwin(tmp_path / "twin")
    try:
        twin.start()
        assert twin.status(SEARCH, None) == 401
        assert twin.status(SEARCH, (ADMIN, twin.admin_password)) == 200
        for name, value in twin.credentials().items():
            monkeypatch.setenv(name, value)
        from mlflow import MlflowClient

        client = MlflowClient(twin.uri)
        experiment = client.create_experiment("twin")
        run = client.create_run(experiment)
        client.log_metric(run.info.run_id, "probe_error_px", 0.9)
        (tmp_path / "table.csv").write_text("cell,px\ngaussian,0.9\n")
        client.log_artifact(run.info.run_id, str(tmp_path / "table.csv"))
        client.set_terminated(run.info.run_id)
        twin.stop()
        twin.start()
        again = MlflowClient(twin.uri).get_run(run.info.run_id)
        assert (again.info.status, again.data.metrics) == ("FINISHED", {"probe_error_px": 0.9})
        table = MlflowClient(twin.uri).download_artifacts(run.info.run_id, "table.csv")
        assert Path(table).read_text() == "cell,px\ngaussian,0.9\n"
    finally:
        twin.close()
