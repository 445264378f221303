"""`ssvae_core.files`: a file is written whole or not at all; a device is written where it is,
never replaced; a named pipe is refused, never waited on. (No test here writes to this
machine's /dev: an early form of `replacing` renamed its file over /dev/full.)"""

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


def test_the_new_file_reaches_the_disk_before_the_rename_and_its_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, str]] = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    def recording_replace(src: str | Path, dst: str | Path) -> None:
        events.append(("replace", str(dst)))
        replace(src, dst)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    files.write_text(tmp_path / "state.json", "new")
    assert [e for e, _ in events] == ["fsync", "replace", "fsync"]
    assert Path(events[0][1]).name.startswith(".state.json.")  # the temporary, with its data
    assert events[1][1] == str(tmp_path / "state.json") and events[2][1] == str(tmp_path)


def test_a_folder_that_cannot_be_synced_is_no_error_a_file_that_cannot_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    fsync, failing = os.fsync, {"folder": errno.EINVAL, "file": None}

    def flaky_fsync(fd: int) -> None:
        kind = "folder" if os.path.isdir(f"/proc/self/fd/{fd}") else "file"
        if failing[kind] is not None:
            raise OSError(failing[kind], os.strerror(failing[kind]))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", flaky_fsync)
    path = files.write_text(tmp_path / "state.json", "new")  # a FUSE folder: written all the same
    assert path.read_text() == "new"
    failing.update(folder=None, file=errno.EIO)  # the data itself did not reach the disk
    with pytest.raises(OSError, match="Input/output"):
        files.write_text(path, "newer")
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_link_is_written_through_and_a_device_in_place(tmp_path: Path) -> None:
    (tmp_path / "real.txt").write_text("old")
    (tmp_path / "link.txt").symlink_to("real.txt")  # relative
    files.write_text(tmp_path / "link.txt", "new")
    assert (tmp_path / "link.txt").is_symlink() and (tmp_path / "real.txt").read_text() == "new"
    leader, follower = os.openpty()  # a device of this test's own: /dev/pts refuses a rename
    try:
        device = os.ttyname(follower)
        files.write_text(device, "to the terminal")
        assert Path(device).is_char_device()
        assert b"to the terminal" in os.read(leader, 100)
    finally:
        os.close(leader)
        os.close(follower)


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


def test_a_read_only_file_is_refused_by_name_as_a_plain_write_would_be(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rename needs only the folder's permission: without the check, a user's read-only file
    was replaced. (Root may write it, so os.access is made to answer as for another user.)"""
    path = tmp_path / "kept.md"
    path.write_text("old")
    path.chmod(0o444)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: mode != os.W_OK and real_access(p, mode))
    with pytest.raises(PermissionError, match=r"kept\.md"):
        files.write_text(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["kept.md"]


@pytest.mark.skipif(os.geteuid() != 0, reason="switches to another user: needs root")
def test_another_user_replaces_a_write_only_file_in_a_folder_it_cannot_list() -> None:
    """Syncing opened the new file for reading after it took the old one's mode (0222: the
    write was refused), and the folder for reading (-wx: the write raised, done)."""
    import subprocess
    import sys
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="ssvae-files-"))  # not under pytest's 0700 tmp
    try:
        folder.chmod(0o733)  # others may write and enter, not list
        target = folder / "out.txt"
        target.write_text("old")
        target.chmod(0o222)
        code = (  # ssvae imported while root: this python's own files are root's
            "import os, sys; from ssvae_core import files; "
            "os.setgid(65534); os.setuid(65534); files.write_text(sys.argv[1], 'new')"
        )
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        done = subprocess.run([sys.executable, "-c", code, str(target)], env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        assert target.read_text() == "new" and oct(target.stat().st_mode & 0o777) == "0o222"
    finally:
        import shutil

        shutil.rmtree(folder)


def test_a_link_to_a_file_in_no_folder_is_refused_not_made(tmp_path: Path) -> None:
    """A link to nothing had its folders made wherever it pointed (``ssvae report --out``
    made ``/nonexist4/`` at the root)."""
    link = tmp_path / "fig.png"
    link.symlink_to(tmp_path / "nowhere" / "deeper" / "fig.png")
    with pytest.raises(OSError, match="a symbolic link to nothing"):
        files.write_text(link, "x")
    assert not (tmp_path / "nowhere").exists()
    link.unlink()
    link.symlink_to(tmp_path / "real.png")  # to a file yet to be made, in a folder: written
    files.write_text(link, "x")
    assert (tmp_path / "real.png").read_text() == "x"
