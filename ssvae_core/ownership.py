"""Who else could have written a file: checked before the product runs what a file holds (a
C library it built, `native`; Ray's pickled state of a sweep, `sweep.storage`).

As OpenSSH judges ``~/.ssh``: a path is another user's to change unless it belongs to this
user or root and nobody else can write it. Group-writable counts as nobody else's only for a
private group, the owner's or this user's (named after them, no other member, nobody else's
primary group: the user-private-group convention of umask 002 systems; the image's ``ssvae``
user, whose group a Kubernetes pod's ``fsGroup`` gives the volume, its root root's), and
never where a POSIX ACL may let others write. A directory above may be writable by others
with the sticky bit (as ``/tmp``): there others cannot rename or remove what is not theirs.
"""

from __future__ import annotations

import functools
import grp
import os
import pwd
import stat
from pathlib import Path


def private_group(info: os.stat_result) -> bool:
    """Whether the group of a file is its owner's alone, or this user's alone (a folder root
    owns in this user's group: a Kubernetes volume under ``fsGroup``): that user's primary
    group, named after them, no other member listed and no other user's primary group."""
    return any(_private(uid, info.st_gid) for uid in {info.st_uid, os.getuid()})


@functools.cache
def _private(uid: int, gid: int) -> bool:
    """Whether group `gid` is user `uid`'s alone (read once: each file of a large sweep asks)."""
    try:
        owner, group = pwd.getpwuid(uid), grp.getgrgid(gid)
    except KeyError:
        return False
    return (
        owner.pw_gid == group.gr_gid
        and group.gr_name == owner.pw_name
        and set(group.gr_mem) <= {owner.pw_name}
        and not any(p.pw_gid == group.gr_gid and p.pw_uid != owner.pw_uid for p in pwd.getpwall())
    )


def _acl(path: Path) -> bool:
    """Whether `path` has a POSIX access ACL (its group bits are then the mask of what named
    users and groups may do, not the group's own)."""
    try:
        os.getxattr(path, "system.posix_acl_access")
    except OSError:  # none (ENODATA), or a filesystem without them
        return False
    return True


def problem(path: Path, sticky_ok: bool = False) -> str | None:
    """Why another user could have written `path` itself (a link: what it names), or None;
    with `sticky_ok` a sticky directory may be writable by others. `OSError` if it cannot be
    read (a `FileNotFoundError` for a dangling link)."""
    info = path.stat()
    if info.st_uid not in (os.getuid(), 0):
        return f"{path} belongs to uid {info.st_uid}, not this user"
    mode = info.st_mode
    group = mode & stat.S_IWGRP and (_acl(path) or not private_group(info))
    others = mode & stat.S_IWOTH or group
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
