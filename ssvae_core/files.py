"""Files written whole or not at all: into a new temporary file beside the target, then renamed.

`replacing(path)` gives the temporary path to write. The rename happens only if the block
ends without an error, so a crash or a full disk mid-write leaves the previous file (a
checkpoint, a sweep's record) as it was. What is at `path` is never opened: a named pipe left
there would make a plain ``open(path, "w")`` wait for ever for a reader.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A new, empty temporary file beside `path` (its folders made), renamed onto `path` when
    the block ends; removed instead if the block raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> Path:
    """`text` as the whole of `path` (UTF-8), through `replacing`; the path."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
