"""`ssvae_core.files`: a file is written whole or not at all, and what was there never opened."""

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


def test_a_named_pipe_at_the_target_is_replaced_and_folders_are_made(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.json")
    assert files.write_text(tmp_path / "pipe.json", "x").read_text() == "x"  # did not block
    assert files.write_text(tmp_path / "a" / "b.txt", "y").read_text() == "y"
