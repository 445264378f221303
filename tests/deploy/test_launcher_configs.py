"""cluster/local.yaml and cluster/aws.yaml against Ray's own schema and the security defaults.

Each shipped file passes; each broken copy (a wrong type, a missing required key, token auth
off, the dashboard on 0.0.0.0, ...) fails with the finding named next to it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import yaml

pytest.importorskip("ray")
pytest.importorskip("jsonschema")

from deploy_checks import CLUSTER, launcher_policy_problems, launcher_schema_problems

LAUNCHER_FILES = ["local.yaml", "aws.yaml"]


def _load(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((CLUSTER / name).read_text()))


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_shipped_launcher_config_is_valid_and_secure(name: str) -> None:
    config = _load(name)
    assert launcher_schema_problems(config) == []
    assert launcher_policy_problems(config) == []


def _replace_in_head_start(old: str, new: str) -> Callable[[dict[str, Any]], None]:
    def mutate(config: dict[str, Any]) -> None:
        commands = config["head_start_ray_commands"]
        assert any(old in c for c in commands), old
        config["head_start_ray_commands"] = [c.replace(old, new) for c in commands]

    return mutate


def _drop_auth_mode(config: dict[str, Any]) -> None:
    config["setup_commands"] = [
        c.replace("RAY_AUTH_MODE=token", "") for c in config["setup_commands"]
    ]


SCHEMA_BREAKS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "max_workers is a string": (lambda c: c.update(max_workers="2"), "is not of type 'integer'"),
    "no provider": (lambda c: c.pop("provider"), "'provider' is a required property"),
    "provider without type": (lambda c: c["provider"].pop("type"), "'type' is a required property"),
    "a misspelt key": (lambda c: c.update(setup_comands=[]), "Additional properties"),
    "a command that is not a string": (
        lambda c: c["head_start_ray_commands"].append({"run": "ray start"}),
        "is not of type 'string'",
    ),
}

POLICY_BREAKS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "dashboard on 0.0.0.0": (
        _replace_in_head_start("--dashboard-host=127.0.0.1", "--dashboard-host=0.0.0.0"),
        "0.0.0.0 appears",
    ),
    "dashboard host left to Ray": (
        _replace_in_head_start("--dashboard-host=127.0.0.1", ""),
        "lacks --dashboard-host=127.0.0.1",
    ),
    "token auth not turned on": (_drop_auth_mode, "token auth is not turned on"),
    "token auth disabled": (
        _replace_in_head_start("ray start --head", "RAY_AUTH_MODE=disabled ray start --head"),
        "token auth is not turned on",
    ),
    "token not shipped": (
        lambda c: c["file_mounts"].pop("~/.ray/auth_token"),
        "~/.ray/auth_token (the cluster's token) is not shipped",
    ),
    "credentials not shipped": (
        lambda c: c["file_mounts"].pop("~/.ssvae/mlflow.env"),
        "the MLflow credentials) is not shipped",
    ),
    "a quoted ~": (
        lambda c: c["setup_commands"].append("ls '~/ssvae[cluster]'"),
        "setup_commands: a quoted ~ is not expanded",
    ),
    "a password in a command": (
        lambda c: c["setup_commands"].append("export MLFLOW_TRACKING_PASSWORD=hunter2"),
        "literal secret",
    ),
}


@pytest.mark.parametrize("name", LAUNCHER_FILES)
@pytest.mark.parametrize("case", SCHEMA_BREAKS)
def test_a_broken_copy_fails_the_schema(name: str, case: str) -> None:
    config = copy.deepcopy(_load(name))
    mutate, expected = SCHEMA_BREAKS[case]
    mutate(config)
    problems = launcher_schema_problems(config)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("name", LAUNCHER_FILES)
@pytest.mark.parametrize("case", POLICY_BREAKS)
def test_an_insecure_copy_fails_the_policy(name: str, case: str) -> None:
    config = copy.deepcopy(_load(name))
    mutate, expected = POLICY_BREAKS[case]
    mutate(config)
    assert launcher_schema_problems(config) == []  # still a valid launcher file...
    problems = launcher_policy_problems(config)
    assert any(expected in p for p in problems), problems  # ...but not a safe one


def test_aws_without_own_security_group_fails_the_policy() -> None:
    config = _load("aws.yaml")
    del config["available_node_types"]["worker.gpu"]["node_config"]["SecurityGroupIds"]
    assert any("opens SSH to 0.0.0.0/0" in p for p in launcher_policy_problems(config))


@pytest.mark.parametrize(
    "image", ["rayproject/ray-ml:2.30.0-gpu", "REGISTRY/ssvae:latest", "REGISTRY/ssvae"]
)
def test_aws_with_an_unpinned_or_frozen_image_fails_the_policy(image: str) -> None:
    config = _load("aws.yaml")
    config["docker"]["worker_image"] = image
    assert any("is not a pinned tag" in p for p in launcher_policy_problems(config))


def test_every_placeholder_is_named_in_capitals_in_the_header() -> None:
    """The header names every placeholder the body uses (STYLE item 13)."""
    placeholders = {"local.yaml": ["HEAD_IP", "WORKER_IP_1", "SSH_USER"], "aws.yaml": [
        "AWS_REGION", "AMI_ID", "SECURITY_GROUP_ID", "REGISTRY", "EFS_ID"]}  # fmt: skip
    for name, names in placeholders.items():
        text = (CLUSTER / name).read_text()
        header, body = text.split("\ncluster_name:", 1)
        for placeholder in names:
            assert placeholder in body and placeholder in header, (name, placeholder)
