"""Where a sweep lives on disk: ``STORAGE/NAME``, NAME one safe path component.

A sweep's directory holds its state (``sweep.json``, ``sweep.yaml``, one Ray experiment per
Tuner run, the trials' checkpoints and their unsent MLflow logging), its tables and figures
(`tracking` describes the files). Names are checked here so that nothing a sweep writes can
land outside the storage path (``--name ../x`` or a spec ``name: ..`` are refused).

Ray keeps a Tuner run's state as pickles (``tuner.pkl``, the trials in
``experiment_state-*.json``, the searcher's state), and reading a pickle can run any code in
it, so ``--resume`` first checks that no one else could have changed them (`check_private`),
as ``ssh`` checks ``~/.ssh`` before reading it.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from ssvae_core import safe_yaml
from ssvae_core.errors import ConfigError, check, shown

DEFAULT_STORAGE = "runs/sweeps"  # a sweep's directory is DEFAULT_STORAGE/NAME
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")  # one safe path component


class Named(Protocol):
    """A sweep spec, as far as its directory is concerned."""

    @property
    def name(self) -> str: ...


def check_name_component(name: Any, key: str) -> str:
    """`name` as a sweep's directory and run name: one safe path component (no ``..``, no
    ``/``), so that nothing is written outside the storage path."""
    ok = isinstance(name, str) and NAME.fullmatch(name) is not None
    check(ok, key, f"expected 1-100 letters, digits, '_', '.' or '-', not starting with '.' "
          f"or '-', got {shown(name)}")  # fmt: skip
    return str(name)


def sweep_dir(spec: Named, storage_path: str | Path, name: str | None) -> Path:
    """Where the sweep keeps its state, tables and figures: ``storage_path/(name or spec.name)``.

    A ``--name`` must be one safe path component (`check_name_component`), so the directory
    is always inside the storage path; a storage path that is a file is refused here.
    """
    root = Path(storage_path).resolve()
    check(not root.is_file(), "--storage-path", f"{root} is a file, not a directory")
    return root / check_name_component(name if name is not None else spec.name, "--name")


def finished_sweep(spec: Named, storage_path: str | Path, name: str | None) -> Path:
    """The directory of a finished sweep of `spec` (one with a ``trials.csv``): `name`'s, or
    without a name the newest one that ran this spec (``make sweep`` dates its names). A
    `ConfigError` lists the sweeps of the spec that exist."""
    if name is not None:
        directory = sweep_dir(spec, storage_path, name)
        if (directory / "trials.csv").is_file():
            return directory
    root = Path(storage_path).resolve()
    ran = [
        folder
        for folder in (root.iterdir() if root.is_dir() else ())
        if (folder / "trials.csv").is_file() and _ran(folder, spec.name)
    ]
    if name is None and ran:
        return max(ran, key=lambda folder: (folder / "trials.csv").stat().st_mtime)
    asked = f"no finished sweep {name!r}" if name else f"no finished sweep of {spec.name!r}"
    known = ", ".join(sorted(folder.name for folder in ran)) or "none"
    key = "--name" if name else "--storage-path"  # no --name: where to look was wrong
    raise ConfigError(f"{key}: {asked} in {root} (finished sweeps of this spec: {known})")


def _ran(folder: Path, name: str) -> bool:
    """Whether the sweep in `folder` ran a spec called `name` (its ``sweep.yaml``)."""
    try:
        raw = safe_yaml.read_yaml_file(folder / "sweep.yaml")
    except ConfigError:
        return folder.name == name
    return isinstance(raw, Mapping) and raw.get("name", folder.name) == name


def check_private(directory: Path) -> None:
    """Refuse (`ConfigError`, exit 2) to restore `directory` if another user could have
    written what Ray will unpickle: every file and folder in it must be ours (or root's) and
    writable by no one else, and each folder above it too, unless it is sticky (``/tmp``),
    where others cannot rename what is ours. Writable by a group of which we are the only
    member is ours too (a user's own group under umask 002; a Kubernetes pod's ``fsGroup``,
    which the kubelet makes group-writable), as Debian's ``ssh`` allows. Links are judged by
    what they point to."""
    me = os.getuid()
    for path in (directory, *directory.parents):
        fix = f"chmod go-w {path}, or keep sweeps in a folder only you can write (--storage-path)"
        _check_owned(path, me, fix, sticky_ok=path != directory)
    fix = f"if you trust them, chmod -R go-w {directory}"
    for folder, dirs, files in os.walk(directory):
        for name in (*dirs, *files):
            _check_owned(Path(folder) / name, me, fix, sticky_ok=False)


def _check_owned(path: Path, me: int, fix: str, sticky_ok: bool) -> None:
    try:
        info = path.stat()
    except FileNotFoundError:  # a dangling link: Ray reads nothing through it
        return
    writers = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writers == stat.S_IWGRP and _only_member(info.st_gid, me):
        writers = 0
    sticky = sticky_ok and stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX
    if info.st_uid in (me, 0) and (not writers or sticky):
        return
    if info.st_uid not in (me, 0):
        who, fix = f"belongs to uid {info.st_uid}, not you", "resume it as its owner"
    else:
        whom = "its group" if writers == stat.S_IWGRP else "others"
        who = f"is writable by {whom} (mode {stat.S_IMODE(info.st_mode):04o})"
    raise ConfigError(
        f"--resume: {path} {who}; Ray keeps a sweep's state as pickles, and reading a pickle "
        f"can run code, so a sweep resumes only from files no one else can change ({fix})"
    )


def _only_member(gid: int, me: int) -> bool:
    """Whether no account but ours is in group `gid`: none lists it as its primary group or
    is named among its members (a group this machine does not know has no members here)."""
    try:
        name = pwd.getpwuid(me).pw_name
    except KeyError:  # we have no name (a container's arbitrary uid): no one is listed as us
        name = None
    try:
        members = set(grp.getgrgid(gid).gr_mem)
    except KeyError:
        members = set()
    primary = {user.pw_name for user in pwd.getpwall() if user.pw_gid == gid}
    return (members | primary) <= {name}
