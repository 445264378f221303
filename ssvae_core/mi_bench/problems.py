"""What a critic is trained and scored on: pairs (x, y) with a known I(x; y).

A `Problem` is one benchmark case: a task of `tasks` at one MI (`synthetic`), or samples
someone brings in a file (`from_npz`), e.g. from the Beyond-Normal benchmark of
Czyż et al. 2023. An ``.npz`` holds ``x`` [n, dx], ``y`` [n, dy] (float) and ``mi``, the true
I(x; y) in nats; it is read with ``allow_pickle=False``, so it can hold arrays and nothing
that runs, and each of x, y and mi is checked on its ``.npy`` header (`MAX_ARRAY_BYTES`, no
objects) before it is read, so a small deflated file cannot declare gigabytes; other members are
never read. Its last `HELD_OUT` fraction of rows is kept for scoring, so a flexible critic is
not scored on the pairs it was trained on. x and y may have different sizes: couplings that
compare them directly (gaussian, cosine, ...) then refuse with a clear error.
"""

from __future__ import annotations

import itertools
import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

import numpy as np
import torch
from torch import Tensor

from ssvae_core.errors import ConfigError, shown
from ssvae_core.mi_bench.tasks import Task, get_task

DEFAULT_DIM = 20  # Poole et al. 2019, section 5
HELD_OUT = 0.2
# The most one array of an .npz may declare, checked on its header before it is read. The
# benchmark's own pairs are 20 columns a side, and Beyond-Normal's samples are some 10^4 rows of
# at most tens of columns (a few MB in float64); a run draws at most steps x 64 = 128 000 rows
# (2000 steps) to train on. 256 MiB (a million rows of 32 float64 columns) leaves room for far
# larger files, and x and y read at this bound, with their float32 copies, peak near 1 GiB.
MAX_ARRAY_BYTES = 2**28
KEYS = ("x", "y", "mi")
# What reading a damaged or foreign .npz raises: no such file, not a zip, a member cut short, a
# deflated, bzip2 or LZMA stream that does not decode, a member zipfile cannot open (`_open`).
DAMAGED: tuple[type[Exception], ...] = (
    OSError,  # a bzip2 stream too
    ValueError,  # _open's too
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
)
try:
    import lzma

    DAMAGED += (lzma.LZMAError,)
except ImportError:  # a Python without lzma: zipfile then refuses LZMA members when opened
    pass


class Problem(Protocol):
    """Pairs of known MI: ``name`` (the table's task column), ``true_mi`` (nats), sizes."""

    @property
    def name(self) -> str: ...

    @property
    def true_mi(self) -> float: ...

    @property
    def knows_log_ratio(self) -> bool:
        """Whether `log_ratio` gives the optimal critic."""
        ...

    @property
    def dims(self) -> tuple[int, int]:
        """(dx, dy)."""
        ...

    def sample(
        self, batch: int, generator: torch.Generator, train: bool = True
    ) -> tuple[Tensor, Tensor]:
        """x [B, dx], y [B, dy]: training pairs, or with ``train=False`` scoring pairs."""
        ...

    def log_ratio(self, x: Tensor, y: Tensor) -> Tensor | None:
        """The optimal critic log p(x_i, y_j) / (p(x_i) p(y_j)) [B, M], or None if unknown."""
        ...


@dataclass(frozen=True)
class Synthetic:
    """A task of `tasks.TASKS` at one MI; every batch is fresh, so train and score alike."""

    task: Task
    name: str
    true_mi: float
    dim: int = DEFAULT_DIM
    knows_log_ratio: bool = True

    @property
    def dims(self) -> tuple[int, int]:
        return (self.dim, self.dim)

    def sample(
        self, batch: int, generator: torch.Generator, train: bool = True
    ) -> tuple[Tensor, Tensor]:
        return self.task.sample(batch, self.true_mi, self.dim, generator)

    def log_ratio(self, x: Tensor, y: Tensor) -> Tensor | None:
        return self.task.log_ratio(x, y, self.true_mi)


def synthetic(name: str, mi_nats: float, dim: int = DEFAULT_DIM) -> Synthetic:
    """Task `name` at `mi_nats`; a ValueError for an unknown name or an MI below its floor."""
    task = get_task(name)
    task.rho(mi_nats, dim)
    return Synthetic(task, name, float(mi_nats), dim)


@dataclass(frozen=True)
class Samples:
    """Pairs read from a file: rows [: n_train] train the critic, the rest score it."""

    name: str
    true_mi: float
    x: Tensor  # [n, dx]
    y: Tensor  # [n, dy]
    n_train: int = 0
    knows_log_ratio: bool = False

    @property
    def dims(self) -> tuple[int, int]:
        return (self.x.shape[1], self.y.shape[1])

    def sample(
        self, batch: int, generator: torch.Generator, train: bool = True
    ) -> tuple[Tensor, Tensor]:
        low, high = (0, self.n_train) if train else (self.n_train, len(self.x))
        rows = low + torch.randperm(high - low, generator=generator)[:batch]
        return self.x[rows], self.y[rows]

    def log_ratio(self, x: Tensor, y: Tensor) -> Tensor | None:
        return None


def _real(array: np.ndarray) -> bool:
    """Integers or floats (a complex array is a number to numpy, not to a critic)."""
    return bool(np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating))


def _check_header(path: Path, key: str, archive: zipfile.ZipFile, member: str) -> None:
    """A `ConfigError` unless member `key` of an .npz is a ``.npy`` header declaring no
    Python objects (only unpickling reads them, which can run code) and at most
    `MAX_ARRAY_BYTES`: deflated, a 1 MB member can declare gigabytes, which ``np.load`` would
    allocate and inflate whole. Only the header is read."""
    fmt = np.lib.format
    with _open(archive, member) as stream:
        try:
            version = fmt.read_magic(stream)
        except ValueError:
            raise ConfigError(f"{path}: {key} is not a .npy array (member {member})") from None
        if version not in ((1, 0), (2, 0)):
            raise ConfigError(f"{path}: {key} is in .npy format {version}; expected 1.0 or 2.0")
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = read_header(stream)
    if dtype.hasobject:
        raise ConfigError(
            f"{path}: not a readable .npz of arrays ({key} holds Python objects, read only by "
            "unpickling, which can run code)"
        )
    declared = math.prod(shape) * max(dtype.itemsize, 1)  # Python ints: no overflow
    if declared > MAX_ARRAY_BYTES:
        raise ConfigError(
            f"{path}: its arrays declare more than the {MAX_ARRAY_BYTES:,} bytes one may hold: "
            f"{key} declares shape {shape} of {dtype} ({declared:,} bytes); subsample it"
        )


def _read(archive: zipfile.ZipFile, member: str) -> np.ndarray:
    """The array of `member`, the very one `_check_header` checked (``data[key]`` may read
    another: with both ``x`` and ``x.npy`` in the archive, NumPy takes ``x``)."""
    with _open(archive, member) as stream:
        return np.lib.format.read_array(stream, allow_pickle=False)


def _open(archive: zipfile.ZipFile, member: str) -> IO[bytes]:
    """`member` opened for reading, or a ValueError saying why it cannot be: encrypted (its
    flag bit 0 set: zipfile asks for a password) or compressed in a way zipfile does not read
    (99, AES, say). ``np.savez`` writes neither."""
    try:
        return archive.open(member)
    except NotImplementedError:  # before RuntimeError, its base class
        method = archive.getinfo(member).compress_type
        raise ValueError(
            f"member {member} is compressed with method {method}, which Python's zipfile does "
            "not read; np.savez and np.savez_compressed write ones it does"
        ) from None
    except RuntimeError as err:  # encrypted, or a compression module missing from this Python
        raise ValueError(str(err)) from None


ZIP_MAGIC = b"PK\x03\x04"  # how an .npz (a zip) starts
NPY_MAGIC = b"\x93NUM"  # an .npy's start: refused below as one array, not an .npz


def _held_out(n: int) -> int:
    """How many of n rows are held out for scoring: HELD_OUT of them, rounded up."""
    return math.ceil(n * HELD_OUT)


def _splits_into_batches(n: int, batch: int) -> bool:
    """Whether n rows give a held-out part and a training part of at least one batch each."""
    return _held_out(n) >= batch and n - _held_out(n) >= batch


def from_npz(path: str | Path, batch: int = 64) -> Samples:
    """The pairs of an ``.npz`` (``x``, ``y``, ``mi``); a `ConfigError` names what is wrong."""
    path = Path(path)
    try:
        special = path.exists() and not path.is_file()  # a pipe would block np.load's open()
    except OSError as err:  # in a folder this user may not enter
        raise ConfigError(f"{path}: not a readable .npz of arrays ({err.strerror})") from None
    if special:
        raise ConfigError(f"{path}: not a readable .npz of arrays (not a regular file)")
    try:  # np.load reads any other file as a pickle, and says to allow_pickle
        with path.open("rb") as file:
            magic = file.read(len(ZIP_MAGIC))
    except OSError as err:
        raise ConfigError(f"{path}: not a readable .npz of arrays ({err.strerror})") from None
    if magic not in (ZIP_MAGIC, NPY_MAGIC):
        raise ConfigError(f"{path}: not an .npz (a zip of .npy arrays: np.savez writes one)")
    try:
        with np.load(path, allow_pickle=False) as data:
            named = {name.removesuffix(".npy"): name for name in data.zip.namelist()}
            members = {key: named[key] for key in KEYS if key in named}  # no other is read
            for key, member in members.items():  # every header before any array
                _check_header(path, key, data.zip, member)
            arrays = {key: _read(data.zip, member) for key, member in members.items()}
    except ConfigError:
        raise
    except DAMAGED as err:  # missing, not an npz, damaged
        raise ConfigError(f"{path}: not a readable .npz of arrays ({err})") from None
    except (TypeError, AttributeError):  # np.load gave one array: an .npy file
        raise ConfigError(f"{path}: one array (.npy?), not an .npz of x, y and mi") from None
    except MemoryError:  # more than this machine has free, though within MAX_ARRAY_BYTES
        raise ConfigError(f"{path}: its arrays declare more than this machine's memory") from None
    for key in ("x", "y", "mi"):
        if key not in arrays:
            raise ConfigError(f"{path}: no array {key!r}; expected x [n, dx], y [n, dy], mi")
    x, y, mi = arrays["x"], arrays["y"], arrays["mi"]
    for key, array in (("x", x), ("y", y)):
        ok = array.ndim == 2 and array.shape[1] >= 1 and _real(array)
        if not ok:
            raise ConfigError(
                f"{path}: {key} must be a 2-D numeric array of at least one column, got shape "
                f"{array.shape} of {array.dtype}"
            )
        with np.errstate(over="ignore"):  # trained in float32: 1e300 becomes inf
            finite = np.isfinite(array.astype(np.float32)).all()
        if not finite:
            raise ConfigError(f"{path}: {key} holds NaN or inf, or values beyond float32")
    if len(x) != len(y) or not _splits_into_batches(len(x), batch):
        need = next(n for n in itertools.count(batch) if _splits_into_batches(n, batch))
        raise ConfigError(
            f"{path}: x and y need the same number of rows, at least {need} for batches of "
            f"{batch} (got {len(x)} and {len(y)})"
        )
    numeric = mi.size == 1 and _real(mi)
    if not numeric or not np.isfinite(mi).all() or float(mi.reshape(())) < 0:
        raise ConfigError(f"{path}: mi must be one finite number >= 0 (nats), got {shown(mi)}")
    mi = mi.reshape(())
    return Samples(
        name=f"file:{path.stem}",
        true_mi=float(mi),
        x=torch.from_numpy(x.astype(np.float32)),
        y=torch.from_numpy(y.astype(np.float32)),
        n_train=len(x) - _held_out(len(x)),
    )
