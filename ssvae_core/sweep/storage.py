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

import errno
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from ssvae_core import ownership, safe_yaml
from ssvae_core.errors import ConfigError, check, shown

DEFAULT_STORAGE = "runs/sweeps"  # a sweep's directory is DEFAULT_STORAGE/NAME
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")  # one safe path component


class Named(Protocol):
    """A sweep spec, as far as its directory is concerned."""

    @property
    def name(self) -> str: ...


DISK_ERRORS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EIO)  # a storage path's trouble


def disk_error(err: OSError, storage_path: str | Path) -> str:
    """`err` as a message; a disk's error that names no file (a full disk mid-sweep) names
    the storage path instead."""
    if err.filename or err.errno not in DISK_ERRORS:
        return str(err)
    return f"{err} (storage path {Path(storage_path).resolve()})"


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
    try:
        is_file = root.is_file()
    except OSError as err:  # under a folder this user may not enter
        raise ConfigError(f"--storage-path: {root}: {err.strerror}") from None
    check(not is_file, "--storage-path", f"{root} is a file, not a directory")
    return root / check_name_component(name if name is not None else spec.name, "--name")


def finished_sweep(spec: Named, storage_path: str | Path, name: str | None) -> Path:
    """The directory of a finished sweep of `spec` (one with a ``trials.csv``): `name`'s, or
    without a name the newest one that ran this spec (``make sweep`` dates its names). A
    `ConfigError` lists the sweeps of the spec that exist."""
    if name is not None:
        directory = sweep_dir(spec, storage_path, name)
        try:
            if (directory / "trials.csv").is_file():
                return directory
        except OSError as err:  # a folder this user may not enter: not 'no such sweep'
            raise ConfigError(f"--name: {directory}: {err.strerror}") from None
    root = Path(storage_path).resolve()
    try:
        folders = list(root.iterdir()) if root.is_dir() else []
    except OSError as err:
        raise ConfigError(f"--storage-path: {root}: {err.strerror}") from None
    ran = [f for f in folders if _is_file(f / "trials.csv") and _ran(f, spec.name)]
    if name is None and ran:
        return max(ran, key=lambda folder: (folder / "trials.csv").stat().st_mtime)
    asked = f"no finished sweep {name!r}" if name else f"no finished sweep of {spec.name!r}"
    known = ", ".join(sorted(folder.name for folder in ran)) or "none"
    key = "--name" if name else "--storage-path"  # no --name: where to look was wrong
    raise ConfigError(f"{key}: {asked} in {root} (finished sweeps of this spec: {known})")


def _is_file(path: Path) -> bool:
    """Whether `path` is a file; not if it is in a folder this user may not enter (another
    user's sweep beside this one's)."""
    try:
        return path.is_file()
    except OSError:
        return False


def _ran(folder: Path, name: str) -> bool:
    """Whether the sweep in `folder` ran a spec called `name` (its ``sweep.yaml``)."""
    try:
        raw = safe_yaml.read_yaml_file(folder / "sweep.yaml")
    except ConfigError:
        return folder.name == name
    return isinstance(raw, Mapping) and raw.get("name", folder.name) == name


def check_private(directory: Path) -> None:
    """Refuse (`ConfigError`, exit 2) to restore `directory` if another user could have
    written what Ray will unpickle (`ownership`, as ``ssh`` judges ``~/.ssh``): every file
    and folder in it, it, and each folder above it (those above the storage path may be
    sticky, as ``/tmp``); the folder holding it too, should it be a link. A link inside it,
    or a folder this user cannot list, is refused: what Ray would read there is not vouched
    for."""
    try:
        why = (
            _link_problem(directory)
            or ownership.chain_problem(directory.parent, sticky_from=0)
            or ownership.chain_problem(directory, sticky_from=1)
            or _inside_problem(directory)
        )
    except OSError as err:
        why = f"{err.filename or directory}: {err.strerror or err}"
    if why is not None:
        raise ConfigError(
            f"--resume: {why}; Ray keeps a sweep's state as pickles, and reading a pickle can "
            "run code, so a sweep resumes only from files no one else can change (chmod go-w "
            "what is yours and you trust; keep --storage-path where only you can write)"
        )


def _link_problem(directory: Path) -> str | None:
    """A sweep folder that is a link another user owns: they could turn it elsewhere."""
    if not directory.is_symlink():
        return None
    owner = directory.lstat().st_uid
    return None if owner in (os.getuid(), 0) else f"{directory} is a link of uid {owner}"


def _inside_problem(directory: Path) -> str | None:
    """`ownership.problem` of the first file or folder in `directory` that has one."""

    def unlisted(err: OSError) -> None:
        raise err

    for folder, dirs, files in os.walk(directory, onerror=unlisted):
        for name in (*dirs, *files):
            path = Path(folder) / name
            if path.is_symlink():
                return f"{path} is a link (to {os.readlink(path)})"
            if (why := ownership.problem(path)) is not None:
                return why
    return None


def unresumable(what: str, detail: str) -> ConfigError:
    """``--resume`` refused: `what` ("sweep.json is damaged") and why (cut to 200 chars)."""
    return ConfigError(
        f"--resume: {what} ({detail[:200]}); this sweep cannot be resumed: start it again "
        "with another --name"
    )


TAKEN = "pass --resume to continue it or another --name to start another"


def check_state(spec: Any, directory: Path, resume: bool, taken: str = TAKEN) -> None:
    """The sweep directory's state against what is asked, before Ray or MLflow (and by
    ``--dry-run``): a sweep there already without `resume` (`taken`: what to do instead, for
    a command without ``--resume``); with it, files others could have written
    (`check_private`), Ray's state cut short (`damaged`), a damaged record or another spec.
    `spec`: a `SweepSpec` (its ``text`` and ``overrides``)."""
    if directory.is_symlink() or directory.exists():
        what = "a file"
        if directory.is_symlink():
            what = "a link to a file" if directory.exists() else "a link to nothing"
        check(directory.is_dir(), "--name", f"{directory} is {what}, not a folder; pass another "
              "--name or --storage-path, or remove it")  # fmt: skip
    started = directory / "sweep.yaml"
    if started.exists() and not resume:
        raise ConfigError(f"--name: {directory} holds a sweep already; {taken}")
    if resume and directory.exists():  # sweep.yaml or not, Ray restores what it finds
        check_private(directory)  # Ray's pickles are read only if no one else could write them
        for path in sorted({state.parent for state in directory.glob("*/experiment_state-*")}):
            if (why := damaged(path)) is not None:  # before MLflow or Ray: nothing reopened
                raise unresumable(f"Ray's state in {path} is damaged", why)
    if resume and started.exists():
        kept = safe_yaml.read_yaml_file(started, "sweep file it started with")
        same_text = kept == safe_yaml.read_yaml(spec.text)
        stored = directory / "sweep.json"
        try:
            info = (
                json.loads(safe_yaml.read_bytes(stored, "sweep record")) if stored.exists() else {}
            )
            if not isinstance(info, dict):
                raise ValueError(f"expected a JSON object, got {type(info).__name__}")
        except ValueError as err:  # ConfigError (unreadable), JSON or UTF-8 errors, a list
            raise unresumable(f"{stored} is damaged", str(err)) from None
        except RecursionError:  # json recurses once per level: [[[[...
            raise unresumable(f"{stored} is damaged", "nested too deeply") from None
        if not same_text or info.get("overrides", {}) != spec.overrides:
            raise ConfigError(
                f"--resume: the spec (or its --set overrides) differs from the one {directory} "
                "started with"
            )


RAY_STATE_BYTES = 1 << 30  # more than any Ray state of a sweep this tool would run


def damaged(path: Path) -> str | None:
    """What is wrong with the newest of Ray's states of a Tuner run's trials at `path`
    (``experiment_state-*.json``; the searcher's ``*-state-*`` files are pickles, whatever
    their names say), or None. Ray restores from one cut short (a full disk) as if it held
    nothing: one trial with no config, a KeyError per --resume, for ever."""
    newest = max(path.glob("experiment_state-*.json"), default=None)  # names end in the time
    if newest is None:
        return None
    try:  # bounded, and a pipe not waited on (`safe_yaml.read_bytes`); Ray's own can be large
        json.loads(safe_yaml.read_bytes(newest, "Ray state", limit=RAY_STATE_BYTES))
    except ValueError as err:  # ConfigError too: a pipe, a folder, unreadable
        return f"{newest.name}: {err}"
    except RecursionError:  # json recurses once per level: [[[[...
        return f"{newest.name}: nested too deeply"
    return None
