"""Whether a file is an MLflow (SQLite) database, read without blocking and without writing.

MLflow, given a sqlite file, creates a missing one, fills an empty one (or another program's
database) with its tables, and retries a directory or a named pipe for minutes; the commands
ask `not_a_database` first (`tracking.default_uri`, ``ssvae nightly history``).
"""

from __future__ import annotations

import os
import sqlite3
import stat
from contextlib import closing
from pathlib import Path

SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


def not_a_database(path: Path) -> str | None:
    """Why the file at `path` is not an MLflow database, or None (it is, or may be). Opened
    without blocking, so that a named pipe is told, not waited on."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except (FileNotFoundError, NotADirectoryError):
        return "does not exist"
    except OSError as err:
        return f"cannot be read ({err.strerror})"
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            return "is a directory, not a database file"
        if not stat.S_ISREG(mode):
            return f"is a {'named pipe' if stat.S_ISFIFO(mode) else 'device or socket'}, not a file"
        header = os.read(fd, len(SQLITE_HEADER))
    except OSError as err:
        return f"cannot be read ({err.strerror})"
    finally:
        os.close(fd)
    if header != SQLITE_HEADER:
        return "is empty, not a database" if not header else "is not a SQLite database"
    try:  # read-only; only a clear answer counts (a locked database: MLflow decides)
        with closing(
            sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=2)
        ) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    except sqlite3.OperationalError:  # locked, say: MLflow decides
        return None
    except sqlite3.DatabaseError as err:  # "database disk image is malformed"
        return f"is damaged ({err})"
    if not {"experiments", "runs"} <= tables:
        return "is a SQLite database without MLflow's tables"
    return None
