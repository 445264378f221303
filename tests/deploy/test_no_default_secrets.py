"""No password, key or token ships in the repository: secrets come from the environment or from
files outside git. The scan reads every tracked file of cluster/, docker/ and the docs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from deploy_checks import REPO

# A secret-named key given a value: `KEY: value`, `KEY=value`, `key = value`.
ASSIGNMENT = re.compile(
    r"(?i)\b([\w.-]*(?:password|passwd|secret|token|api_key)[\w.-]*)[ \t]*[:=][ \t]*(\S[^\n#]*)"
)
# Values that are not secrets: a variable, a placeholder in capitals, a path, a file reference.
NOT_A_SECRET = re.compile(
    r"""^["']?(\$|%|YOUR_[A-Z_]+|[A-Z][A-Z0-9_]+["']?$|/|~/|\{|\[|<|\.|secretKeyRef|None|null|"$)"""
)
# Known shipped defaults of these tools, and the ones the old files had.
KNOWN_DEFAULTS = ["password1234", "mlflow:mlflow@", "POSTGRES_PASSWORD: mlflow", "changeme"]


def _shipped_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "cluster", "docker",
         "docs", "README.md", ".ci", "Makefile", "tests/deploy/podman"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return [REPO / name for name in listed if (REPO / name).is_file()]


def secret_findings(text: str) -> list[str]:
    findings = [f"known default {d!r}" for d in KNOWN_DEFAULTS if d in text]
    for match in ASSIGNMENT.finditer(text):
        key, value = match.group(1), match.group(2).strip()
        if key.endswith(("_FILE", "_PATH", "_DIR")) or NOT_A_SECRET.match(value):
            continue
        findings.append(f"{key} = {value[:40]}")
    return findings


@pytest.mark.parametrize("path", _shipped_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_no_secret_in_a_shipped_file(path: Path) -> None:
    if path.suffix in {".png", ".parquet", ".csv"}:
        return
    assert secret_findings(path.read_text(errors="replace")) == []


@pytest.mark.parametrize(
    "line",
    [
        "POSTGRES_PASSWORD: mlflow",
        "admin_password = password1234",
        "MLFLOW_TRACKING_PASSWORD=s3cr3t-Value",
        "  RAY_AUTH_TOKEN: 4f9c2e1b8a7d",
        "backend: postgresql://mlflow:mlflow@postgres:5432/mlflow",
    ],
)
def test_a_planted_secret_is_found(line: str) -> None:
    assert secret_findings(f"# a file\n{line}\n") != []


def test_placeholders_and_references_are_not_secrets() -> None:
    text = """
      POSTGRES_PASSWORD_FILE: /run/secrets/postgres_password
      --from-literal=MLFLOW_TRACKING_PASSWORD=YOUR_MLFLOW_PASSWORD
      admin_password = ${admin_password}
      MLFLOW_TRACKING_PASSWORD="$(cat ~/.ssvae/secrets/mlflow_admin_password)"
    """
    assert secret_findings(text) == []
