"""Files written whole or not at all: into a new temporary file beside the target, then renamed.

`replacing(path)` gives the path to write. Where the target is a regular file or nothing yet,
that is a new temporary file, renamed onto the target only if the block ends without an
error: a crash or a full disk mid-write leaves the previous file (a checkpoint, a sweep's
record) as it was. A symbolic link is written through, to the file it names (one to a
file in no folder is refused: its folders would be made wherever it points). Anything else
is never replaced: a device (``--out /dev/null``) is written in place, and a named pipe is
refused with an `OSError`, since opening it would wait for ever for a reader. A file replaced
keeps its permissions, a read-only one is refused as a plain write would be; its owner and
other hard links are not kept (a new file takes the writer's). The new file is synced to disk
before the rename and its folder after it, so a power cut as well leaves either the old file or
the whole new one, never an empty file in its place (ext4 and XFS may keep a rename and lose the
data it pointed at).
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """The path to write `path` through (see the module doc); its folders are made."""
    target = Path(os.path.realpath(path))
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        mode = None
    if mode is None and Path(path).is_symlink() and not target.parent.is_dir():
        raise OSError(  # its folders would be made wherever it points
            errno.ENOENT, "a symbolic link to nothing: not written through", str(path)
        )
    if mode is not None and stat.S_ISFIFO(mode):
        raise OSError(f"{path} is a named pipe: not written (it would wait for a reader)")
    if mode is not None and not stat.S_ISREG(mode):  # a device: written where it is
        yield target
        return
    if mode is not None and not os.access(target, os.W_OK):  # a rename would not ask
        raise PermissionError(errno.EACCES, "Permission denied", str(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_file(target)
    try:
        yield tmp
        _sync(tmp)  # before the chmod: a write-only file's mode would refuse the open
        if mode is not None:  # the file it replaces keeps its permissions
            os.chmod(tmp, stat.S_IMODE(mode))
        os.replace(tmp, target)
        _sync(target.parent, folder=True)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_UNSYNCABLE = (errno.EINVAL, errno.ENOTSUP, errno.EBADF, errno.EACCES, errno.EPERM)


def _sync(path: Path, folder: bool = False) -> None:
    """fsync `path`. A folder that cannot be synced is left as it is, the file itself synced:
    one this user may write but not read (``-wx``), or on a file system that refuses (EINVAL:
    FUSE, some network ones)."""
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if folder else 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        if not folder or e.errno not in _UNSYNCABLE:
            raise


TMP_EXTRA_BYTES = len(".") + len(".01234567.tmp")  # `_new_file`'s name beyond the target's


def _new_file(target: Path) -> Path:
    """A new empty file beside `target`, with the permissions a plain ``open(target, "w")``
    gives (0666 less the umask; `tempfile.mkstemp` would make it 0600)."""
    while True:
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp


def write_text(path: str | Path, text: str) -> Path:
    """`text` as the whole of `path` (UTF-8), through `replacing`; the path."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
