"""`ssvae_core.files`: a file is written whole or not at all; a device is written where it is,
never replaced; a named pipe is refused, never waited on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ssvae_core import files


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    files.write_text(path, "old")
    with pytest.raises(OSError, match="disk full"), files.replacing(path) as tmp:
        tmp.write_text("half of the ne")
        raise OSError("disk full")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["state.json"]
    assert files.write_text(tmp_path / "a" / "b.txt", "y").read_text() == "y"  # folders made


def test_a_link_is_written_through_and_a_device_in_place(tmp_path: Path) -> None:
    (tmp_path / "real.txt").write_text("old")
    (tmp_path / "link.txt").symlink_to(tmp_path / "real.txt")
    files.write_text(tmp_path / "link.txt", "new")
    assert (tmp_path / "link.txt").is_symlink() and (tmp_path / "real.txt").read_text() == "new"
    files.write_text("/dev/null", "gone")  # replaced, /dev/null would be a file for everyone
    assert Path("/dev/null").is_char_device()
    with pytest.raises(OSError, match="No space left"):
        files.write_text("/dev/full", "x")
    assert Path("/dev/full").is_char_device()


def test_a_named_pipe_at_the_target_is_refused_not_waited_on(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.json")
    with pytest.raises(OSError, match=r"pipe\.json is a named pipe: not written"):
        files.write_text(tmp_path / "pipe.json", "x")


def test_a_new_file_takes_the_umask_and_a_replaced_one_keeps_its_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        assert files.write_text(tmp_path / "new.txt", "x").stat().st_mode & 0o777 == 0o644
        (tmp_path / "shared.txt").write_text("old")
        (tmp_path / "shared.txt").chmod(0o664)
        assert files.write_text(tmp_path / "shared.txt", "y").stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(old)
