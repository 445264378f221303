"""cluster/schedule/: the crontab line and the systemd service + timer of the nightly ablation.

`ssvae nightly` does not exist on this branch yet, so nothing here runs it: the crontab line is
parsed (five fields in range, `%` escaped, the files it names exist), the units are checked by
``systemd-analyze verify`` with their placeholders filled. Each check rejects a broken copy.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from deploy_checks import CLUSTER, REPO, unavailable

SCHEDULE = CLUSTER / "schedule"
FIELD_RANGES = [("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
                ("day of week", 0, 7)]  # fmt: skip
NIGHTLY_FILES = ["cluster/local.yaml", "sweeps/run.py", "sweeps/nightly.yaml"]


def _field_problems(name: str, field: str, low: int, high: int) -> list[str]:
    problems = []
    for part in field.split(","):
        match = re.fullmatch(r"(\*|\d+(?:-\d+)?)(?:/(\d+))?", part)
        if not match:
            problems.append(f"{name}: {part!r} is not a cron field")
            continue
        numbers = [int(n) for n in re.findall(r"\d+", match.group(1))]
        if any(not low <= n <= high for n in numbers) or (match.group(2) == "0"):
            problems.append(f"{name}: {part!r} is outside {low}-{high}")
    return problems


def crontab_problems(text: str) -> list[str]:
    """Every entry: five valid fields, then a command that `cd`s into the checkout placeholder,
    runs `ray submit ... sweeps/run.py -- nightly sweeps/nightly.yaml` with files that exist here,
    and escapes each `%` (cron turns a bare one into a newline)."""
    entries = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not entries:
        return ["no crontab entry"]
    problems = []
    for line in entries:
        fields = line.split(None, 5)
        if len(fields) < 6:
            problems.append(f"{line!r}: fewer than five time fields and a command")
            continue
        for (name, low, high), field in zip(FIELD_RANGES, fields[:5], strict=True):
            problems += _field_problems(name, field, low, high)
        command = fields[5]
        if re.search(r"(?<!\\)%", command):
            problems.append("the command has an unescaped % (cron would cut it there)")
        if "flock -n" in command and "flock -n -E 75" not in command:
            problems.append("flock -n skips a night as exit 1, a failed night's status (-E 75)")
        elif "flock -n" in command and "75) " not in command:
            problems.append("a skipped night (exit 75) is mailed as a failed one")
        if not command.startswith("cd SSVAE_CHECKOUT && "):
            problems.append("the command does not start in the checkout (cd SSVAE_CHECKOUT)")
        problems += _nightly_command_problems(command)
    return problems


def _nightly_command_problems(command: str) -> list[str]:
    problems = []
    if not re.search(
        r"ray submit cluster/\S+\.yaml sweeps/run\.py -- nightly sweeps/\S+\.yaml", command
    ):
        problems.append(
            "the command is not `ray submit cluster/X.yaml sweeps/run.py -- nightly ...`"
        )
    if "--name" in command:
        problems.append(
            "the command passes --name: `ssvae nightly` names each night to the second, and a "
            "name fixed or stamped by the day refuses a second night that day"
        )
    words = set(shlex.split(command.replace("\\%", "%"), comments=False, posix=True))
    for path in {w for w in words if re.fullmatch(r"(cluster|sweeps)/[\w./-]+", w)}:
        if not (REPO / path).is_file():
            problems.append(f"the command names {path}, which is not in the repository")
    return problems


def test_shipped_crontab_line_is_valid() -> None:
    text = (SCHEDULE / "crontab").read_text()
    assert crontab_problems(text) == []
    command = next(line for line in text.splitlines() if line[:1].isdigit())
    assert all(path in command for path in NIGHTLY_FILES)


CRONTAB_BREAKS = {
    "hour 24": (lambda t: t.replace("0 2 * * *", "0 24 * * *"), "outside 0-23"),
    "four fields": (lambda t: t.replace("0 2 * * * cd", "0 2 * * cd"), "not a cron field"),
    "a bare %": (lambda t: t.replace(r"+\%F", "+%F"), "unescaped %"),
    "a night named by the day": (
        lambda t: t.replace("/sweeps >>", r"/sweeps --name n-$(date +\%F) >>"),
        "--name"),
    "a sweep file that does not exist": (
        lambda t: t.replace("sweeps/nightly.yaml", "sweeps/nightly-gpu.yaml"),
        "not in the repository"),
    "a skipped night that reads as a failed one": (
        lambda t: t.replace("flock -n -E 75", "flock -n"), "(-E 75)"),
    "a skipped night mailed as failed": (
        lambda t: t.replace('75) echo "ssvae nightly skipped: the last night still runs";; ', ""),
        "mailed as a failed one"),
    "not the nightly": (
        lambda t: t.replace("-- nightly sweeps/", "-- sweeps/"), "is not `ray submit"),
}  # fmt: skip


@pytest.mark.parametrize("case", CRONTAB_BREAKS)
def test_a_broken_crontab_fails(case: str) -> None:
    mutate, expected = CRONTAB_BREAKS[case]
    broken = mutate((SCHEDULE / "crontab").read_text())
    assert broken != (SCHEDULE / "crontab").read_text(), "the mutation must change the line"
    problems = crontab_problems(broken)
    assert any(expected in p for p in problems), problems


def _filled(text: str, checkout: Path) -> str:
    """The unit with its placeholders replaced as an operator would."""
    return (
        text.replace("SSVAE_CHECKOUT", str(checkout))
        .replace("MLFLOW_HOST", "mlflow.example.org")
        .replace("SHARED_STORAGE", "/srv/shared")
    )


def systemd_problems(directory: Path, units: list[str]) -> list[str]:
    """``systemd-analyze verify``: its exit status and every line it says about our units
    (an unknown value is only "ignoring" with exit status 0)."""
    verify = subprocess.run(
        ["systemd-analyze", "verify", *units], cwd=directory, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    lines = [line for line in verify.stderr.splitlines() if any(u in line for u in units)]
    return lines + ([f"exit status {verify.returncode}"] if verify.returncode else [])


@pytest.fixture
def units(tmp_path: Path) -> Path:
    if shutil.which("systemd-analyze") is None:
        unavailable("systemd-analyze is not installed (Debian: apt-get install systemd)")
    for name in ("ssvae-nightly.service", "ssvae-nightly.timer"):
        (tmp_path / name).write_text(_filled((SCHEDULE / name).read_text(), REPO))
    return tmp_path


UNITS = ["ssvae-nightly.service", "ssvae-nightly.timer"]


def test_shipped_units_verify(units: Path) -> None:
    assert systemd_problems(units, UNITS) == []
    service = (units / "ssvae-nightly.service").read_text()
    [exec_start] = re.findall(r"^ExecStart=(.*)$", service, re.M)
    assert all(path in exec_start for path in NIGHTLY_FILES)
    assert _nightly_command_problems(exec_start.replace("%%", "%")) == []
    ray = re.search(r"exec (\S+/ray) submit", exec_start)
    assert ray and Path(ray.group(1)).is_file(), "the unit's ray is this checkout's .venv/bin/ray"
    assert f"WorkingDirectory={REPO}\n" in service


UNIT_BREAKS = {
    "a relative ExecStart": (
        "ssvae-nightly.service", lambda t: t.replace("ExecStart=/bin/bash", "ExecStart=bin/bash"),
        "Neither a valid executable name nor an absolute path"),
    "a misspelt Type": (
        "ssvae-nightly.service", lambda t: t.replace("Type=oneshot", "Type=oneshott"),
        "Failed to parse service type"),
    "an impossible hour": (
        "ssvae-nightly.timer", lambda t: t.replace("02:00:00", "25:00:00"),
        "Failed to parse calendar specification"),
}  # fmt: skip


@pytest.mark.parametrize("case", UNIT_BREAKS)
def test_a_broken_unit_fails_verify(case: str, units: Path) -> None:
    name, mutate, expected = UNIT_BREAKS[case]
    (units / name).write_text(mutate((units / name).read_text()))
    problems = systemd_problems(units, UNITS)
    assert any(expected in p for p in problems), problems


def _bare_percent(exec_start: str) -> bool:
    return bool(re.search(r"(?<!%)%(?!%)", exec_start.replace("%%", "")))


def test_the_unit_has_no_systemd_specifier_in_its_command(units: Path) -> None:
    """In a unit file `%Y` is a specifier (the unit file's directory: systemd-analyze accepts
    it, and a date in the command would be a directory's name), so a literal `%` is `%%`."""
    service = (units / "ssvae-nightly.service").read_text()
    [exec_start] = re.findall(r"^ExecStart=(.*)$", service, re.M)
    assert not _bare_percent(exec_start)
    assert _bare_percent(
        exec_start.replace("sweeps/nightly.yaml", "sweeps/nightly.yaml $(date +%Y)")
    )
    assert not _bare_percent(exec_start.replace("sweeps/nightly.yaml", "x-$(date +%%Y)"))


def test_a_unit_that_names_the_night_by_the_day_fails(units: Path) -> None:
    service = (units / "ssvae-nightly.service").read_text()
    [exec_start] = re.findall(r"^ExecStart=(.*)$", service, re.M)
    broken = exec_start.replace("/sweeps'", '/sweeps --name "n-$(date -u +%%F)"\'')
    assert broken != exec_start
    assert any("--name" in p for p in _nightly_command_problems(broken.replace("%%", "%")))
