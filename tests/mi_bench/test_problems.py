"""mi_bench.problems: pairs from a file are read safely and checked; sizes may differ."""

from __future__ import annotations

import io
import re
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from ssvae_core.errors import ConfigError
from ssvae_core.mi_bench.critics import train_estimator
from ssvae_core.mi_bench.problems import HELD_OUT, MAX_ARRAY_BYTES, from_npz, synthetic


def _write(path: Path, **arrays: object) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def test_a_file_splits_into_training_and_scoring_rows(tmp_path: Path) -> None:
    x, y = np.arange(1000.0).reshape(500, 2), np.arange(1500.0).reshape(500, 3)
    pairs = from_npz(_write(tmp_path / "p.npz", x=x, y=y, mi=1.5))
    assert pairs.dims == (2, 3) and pairs.true_mi == 1.5 and pairs.name == "file:p"
    assert pairs.n_train == 500 - round(500 * HELD_OUT)
    generator = torch.Generator().manual_seed(0)
    train_x, train_y = pairs.sample(64, generator)
    score_x, _ = pairs.sample(64, generator, train=False)
    assert train_x.shape == (64, 2) and train_y.shape == (64, 3)
    assert train_x[:, 0].max() < 2 * pairs.n_train <= score_x[:, 0].min()  # disjoint rows
    assert torch.equal(train_y[:, 0] / 3, train_x[:, 0] / 2)  # pairs stay pairs


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((500, 2)), "mi": 1.0}, "no array 'y'"),
        ({"x": np.zeros((500, 2)), "y": np.zeros((499, 2)), "mi": 1.0}, "same number of rows"),
        ({"x": np.zeros((100, 2)), "y": np.zeros((100, 2)), "mi": 1.0}, "at least 316"),
        ({"x": np.zeros(500), "y": np.zeros((500, 2)), "mi": 1.0}, "x must be a 2-D"),
        ({"x": np.full((500, 2), np.nan), "y": np.zeros((500, 2)), "mi": 1.0}, "x holds NaN"),
        ({"x": np.zeros((500, 2)), "y": np.zeros((500, 2)), "mi": -1.0}, "mi must be"),
        ({"x": np.zeros((500, 2)), "y": np.zeros((500, 2)), "mi": [1.0, 2.0]}, "mi must be"),
    ],
)
def test_a_bad_file_is_refused_naming_what_is_wrong(
    tmp_path: Path, arrays: dict, message: str
) -> None:
    path = _write(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ConfigError, match=message) as err:
        from_npz(path)
    assert str(path) in str(err.value)


def test_the_fewest_rows_named_are_the_fewest_that_load(tmp_path: Path) -> None:
    """316 rows: 64 held out (20 %, rounded up) and 252 to train on, a batch of 64 each."""
    from_npz(_write(tmp_path / "ok.npz", x=np.zeros((316, 2)), y=np.zeros((316, 2)), mi=1.0))
    with pytest.raises(ConfigError, match="at least 316 for batches of 64"):
        from_npz(_write(tmp_path / "bad.npz", x=np.zeros((315, 2)), y=np.zeros((315, 2)), mi=1.0))


def test_a_file_holding_a_pickled_object_is_refused_unread(tmp_path: Path) -> None:
    path = _write(tmp_path / "evil.npz", x=np.zeros((400, 2)), y=np.array([object()]), mi=1)
    with pytest.raises(ConfigError, match=r"not a readable \.npz of arrays \(y holds Python"):
        from_npz(path)
    with pytest.raises(ConfigError, match=r"not a readable \.npz"):
        from_npz(tmp_path / "absent.npz")


def _zeros(archive: zipfile.ZipFile, member: str, rows: int) -> None:
    """Member `member`: a float64 [rows, 1] of zeros, deflated (8 * rows bytes in a file of
    about a thousandth of that), written a MiB at a time."""
    with archive.open(member, "w") as stream:
        header = {"descr": "<f8", "fortran_order": False, "shape": (rows, 1)}
        np.lib.format.write_array_header_1_0(stream, header)
        for _ in range(rows * 8 // 2**20):
            stream.write(bytes(2**20))
        stream.write(bytes(rows * 8 % 2**20))


def _arrays(archive: zipfile.ZipFile, **arrays: np.ndarray) -> None:
    """Each array as member ``NAME.npy``."""
    for key, array in arrays.items():
        buffer = io.BytesIO()
        np.save(buffer, array)
        archive.writestr(f"{key}.npy", buffer.getvalue())


def test_an_array_declaring_more_than_the_bound_is_refused_before_it_is_read(
    tmp_path: Path,
) -> None:
    """1 MB deflated holds 256 MiB of zeros: ``np.load`` allocated and inflated it all (2**27
    rows took 2 GB and 7.6 s) before any check. Now every header is read first."""
    path, rows = tmp_path / "big.npz", MAX_ARRAY_BYTES // 8 + 1  # one float64 over the bound
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        _zeros(archive, "x.npy", rows)
        _arrays(archive, y=np.zeros((400, 1)), mi=np.array(1.0))
    assert path.stat().st_size < 2**21
    tracemalloc.start()  # numpy reports its arrays' memory to tracemalloc
    try:
        with pytest.raises(ConfigError) as err:
            from_npz(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    declared = f"x declares shape ({rows}, 1) of float64 ({rows * 8:,} bytes); subsample it"
    bound = f"its arrays declare more than the {MAX_ARRAY_BYTES:,} bytes one may hold"
    assert str(err.value) == f"{path}: {bound}: {declared}"
    assert peak < 2**24


def test_the_member_checked_is_the_member_read(tmp_path: Path) -> None:
    """With both ``x`` (deflated, declaring 512 MiB) and ``x.npy`` (small) in the archive, the
    header of ``x.npy`` was checked and NumPy read ``x``: 512 MiB from a 0.5 MB file."""
    path, rows = tmp_path / "two.npz", 2**26
    small = np.random.default_rng(0).normal(size=(400, 1))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        _zeros(archive, "x", rows)
        _arrays(archive, x=small, y=small, mi=np.array(1.0))
    tracemalloc.start()
    try:
        pairs = from_npz(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert pairs.dims == (1, 1) and peak < 2**24


def _patched(path: Path, flags: int = 0, method: int | None = None) -> Path:
    """Zip `path` with `flags` or'd into each member's general purpose flags and, if given,
    its compression method set to `method`, in the local and the central headers alike."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
    central = data.index(b"PK\x01\x02")  # the central directory, after every member's data
    for info in members:  # local: signature (4), version (2), flags (2), method (2)
        data[info.header_offset + 6] |= flags
        if method is not None:
            data[info.header_offset + 8 : info.header_offset + 10] = method.to_bytes(2, "little")
    for _ in members:  # central: signature (4), two versions (4), flags (2), method (2)
        data[central + 8] |= flags
        if method is not None:
            data[central + 10 : central + 12] = method.to_bytes(2, "little")
        central = data.find(b"PK\x01\x02", central + 4)
    path.write_bytes(bytes(data))
    return path


def _corrupt_lzma(path: Path) -> Path:
    """An .npz of LZMA members whose x stream is damaged past its header."""
    rows = np.random.default_rng(0).normal(size=(400, 2))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_LZMA) as archive:
        _arrays(archive, x=rows, y=rows, mi=np.array(1.0))
    data = bytearray(path.read_bytes())
    start = data.index(b"x.npy") + len("x.npy") + 20  # into the compressed data, past its props
    data[start : start + 100] = bytes(b ^ 0x5A for b in data[start : start + 100])
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        pytest.param(
            lambda path: _patched(path, flags=1),
            "File 'x.npy' is encrypted, password required",
            id="encrypted",  # RuntimeError from zipfile
        ),
        pytest.param(
            lambda path: _patched(path, method=99),
            "member x.npy is compressed with method 99, which Python's zipfile does not read",
            id="aes",  # NotImplementedError from zipfile
        ),
        pytest.param(_corrupt_lzma, "Corrupt input data", id="lzma"),  # LZMAError
    ],
)
def test_a_member_zipfile_cannot_read_is_refused_as_an_unreadable_file(
    tmp_path: Path, damage: Callable[[Path], Path], message: str
) -> None:
    """Each raised an error of zipfile's (or lzma's) that was not caught: a traceback."""
    rows = np.random.default_rng(0).normal(size=(400, 2))
    path = damage(_write(tmp_path / "p.npz", x=rows, y=rows, mi=1.0))
    with pytest.raises(ConfigError) as err:
        from_npz(path)
    assert str(err.value).startswith(f"{path}: not a readable .npz of arrays (")
    assert message in str(err.value)


def test_members_other_than_x_y_and_mi_are_never_read(tmp_path: Path) -> None:
    """Only x, y and mi are read: another member (here a pickle) is never inflated."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2))
    path = _write(tmp_path / "p.npz", x=x, y=x, mi=1.0, notes=np.array([object()]))
    assert from_npz(path).dims == (2, 2)


def test_a_coupling_that_needs_equal_sizes_says_which_ones_do_not(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pairs = from_npz(_write(tmp_path / "p.npz", x=rng.normal(size=(400, 2)),
                            y=rng.normal(size=(400, 5)), mi=0.0))  # fmt: skip
    with pytest.raises(ValueError, match="use one of bilinear, concat_mlp, separable_mlp"):
        train_estimator("infonce", "gaussian", pairs, steps=1)
    assert np.isfinite(train_estimator("infonce", "separable_mlp", pairs, steps=2))


def test_a_synthetic_problem_below_its_floor_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        synthetic("student_t", 0.0)


@pytest.mark.parametrize(
    ("member", "message"),
    [
        (b"just text, not an array", "x is not a .npy array (member x.npy)"),
        (b"\x93NUMPY\x03\x00" + bytes(64), "x is in .npy format (3, 0); expected 1.0 or 2.0"),
    ],
)
def test_a_member_that_is_no_npy_array_is_refused_from_its_header(
    tmp_path: Path, member: bytes, message: str
) -> None:
    path = tmp_path / "odd.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", member)
        archive.writestr("y.npy", _npy_bytes(np.zeros((400, 2))))
        archive.writestr("mi.npy", _npy_bytes(np.array(1.0)))
    with pytest.raises(ConfigError, match=re.escape(f"{path}: {message}")):
        from_npz(path)


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()
