"""Who else could have written a file: checked before the product runs what a file holds (a
C library it built, `native`; Ray's pickled state of a sweep, `sweep.storage`).

As OpenSSH judges ``~/.ssh``: a path is another user's to change unless it belongs to this
user or root and nobody else can write it. Group-writable counts as nobody else's only for
the owner's private group (named after them, no other member, nobody else's primary group:
the user-private-group convention of umask 002 systems, and the image's ``ssvae`` user, whose
group a Kubernetes pod's ``fsGroup`` makes group-writable). A directory above may be writable
by others with the sticky bit (as ``/tmp``): there others cannot rename or remove what is not
theirs.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path


def private_group(info: os.stat_result) -> bool:
    """Whether the group of a file is its owner's alone: their primary group, named after
    them, no other member listed and no other user's primary group."""
    try:
        owner, group = pwd.getpwuid(info.st_uid), grp.getgrgid(info.st_gid)
    except KeyError:
        return False
    return (
        owner.pw_gid == group.gr_gid
        and group.gr_name == owner.pw_name
        and set(group.gr_mem) <= {owner.pw_name}
        and not any(p.pw_gid == group.gr_gid and p.pw_uid != owner.pw_uid for p in pwd.getpwall())
    )


def problem(path: Path, sticky_ok: bool = False) -> str | None:
    """Why another user could have written `path` itself (a link: what it names), or None;
    with `sticky_ok` a sticky directory may be writable by others. `OSError` if it cannot be
    read (a `FileNotFoundError` for a dangling link)."""
    info = path.stat()
    if info.st_uid not in (os.getuid(), 0):
        return f"{path} belongs to uid {info.st_uid}, not this user"
    mode = info.st_mode
    others = mode & stat.S_IWOTH or (mode & stat.S_IWGRP and not private_group(info))
    if others and not (sticky_ok and stat.S_ISDIR(mode) and mode & stat.S_ISVTX):
        return f"{path} is writable by others (mode {stat.filemode(mode)})"
    return None


def chain_problem(path: Path, sticky_from: int) -> str | None:
    """`problem` of `path`, links resolved, then of each directory above it, the first found;
    the sticky bit counts from the `sticky_from`-th of them (0: `path` itself)."""
    real = path.resolve(strict=True)
    for depth, step in enumerate([real, *real.parents]):
        why = problem(step, sticky_ok=depth >= sticky_from)
        if why is not None:
            return why
    return None
