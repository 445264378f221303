"""C kernels of the package, built once per machine by the C compiler and loaded with ctypes.

`load("conv3x3")` compiles ``ssvae_core/conv3x3.c`` into the cache directory the first time
(about a second) and loads it from there afterwards; the file's name is a hash of the
source, the compiler (each executable ``CC`` names, its size and time), its flags and the
machine, so an edited source, another compiler or another CPU builds anew.
Several processes may build at once (each writes its own temporary file and renames it).
`build_all()` builds every kernel for every CPU of the architecture (an image's, once).

Where there is no compiler, the build fails, or ``SSVAE_NATIVE=0``, `load` returns None and the
caller keeps PyTorch's kernels; the first two say so once per process, for all libraries
(`NativeUnavailableWarning`), with the reason. A library is loaded only where no other user
could have put it or could swap it. Links are resolved first and the library is loaded from
its real path, so no link can be turned elsewhere after the check. The file, its directory and
every directory above them belong to this user or root. The file and its directory are
writable by nobody else; a directory above them only with the sticky bit (as ``/tmp``: there
others cannot rename or remove what is not theirs). Group-writable counts as nobody else's
only for a private group, and never under a POSIX ACL, as OpenSSH judges ``~/.ssh``
(`ownership`, which `--resume` applies to a sweep's pickled state as well). A cache another
user can write to would let them run code in our process. (A file could still change between
the check and the load; that needs a writer who already has this user's or root's rights.)
Directories the build creates are not group-writable, whatever the umask.

The kernels split their work with OpenMP (``-fopenmp``). Loaded after ``import torch``, a
library's libgomp is the one PyTorch already holds (the same soname), so its threads are
PyTorch's intra-op threads: callers pass `torch.get_num_threads()`, and nothing else
competes for the cores. ctypes releases the GIL while C runs. GNU OpenMP's pool does not
survive a fork: a forked child computes on one thread (`torch.set_num_threads(1)`), for these
kernels as for PyTorch's own ops. Where PyTorch bundles another OpenMP runtime (a renamed
libgomp, or Intel's), the kernels get a pool of their own beside it: correct, but the two
compete for the cores.

    SSVAE_NATIVE=0            PyTorch's kernels only (no build, no warning)
    SSVAE_CACHE_DIR=DIR       where the built libraries live (default ~/.cache/ssvae)
    CC=...                    the C compiler (default cc)
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

from ssvae_core import ownership

SOURCES = Path(__file__).resolve().parent
KERNELS = ("conv3x3", "batchnorm")  # the package's C sources, SOURCES / f"{name}.c"
DISABLE_ENV = "SSVAE_NATIVE"
CACHE_ENV = "SSVAE_CACHE_DIR"
BUILD_TIMEOUT_S = 120


class NativeUnavailableWarning(RuntimeWarning):
    """A C kernel could not be built or loaded: PyTorch's (slower) kernels run instead."""


def enabled() -> bool:
    """Whether the C kernels may be used at all (``SSVAE_NATIVE`` is not 0)."""
    return os.environ.get(DISABLE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    """``$SSVAE_CACHE_DIR``, else ``$XDG_CACHE_HOME/ssvae``, else ``~/.cache/ssvae``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.path.abspath(os.path.expanduser(os.environ[CACHE_ENV])))
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(os.path.abspath(Path(base).expanduser() / "ssvae"))  # no ".." left


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


X86 = platform.machine() in ("x86_64", "AMD64")
AVX2 = frozenset({"avx2", "fma"})


def compile_flags(cpu: frozenset[str] | None = None) -> list[str]:
    """-O3 for a shared library with OpenMP; AVX2 and FMA on an x86 CPU that has both (every
    x86 server since 2013). `cpu`: the CPU's flags (default: this machine's). Not
    -march=native: a cache on a shared home may serve several CPU models."""
    flags = ["-O3", "-std=gnu11", "-shared", "-fPIC", "-fopenmp"]  # gnu: multiply-adds fused
    if X86 and AVX2.issubset(_cpu_flags() if cpu is None else cpu):
        flags += ["-mavx2", "-mfma"]
    return flags


def compiler() -> tuple[list[str], str]:
    """``CC`` (default cc) as a command, and what identifies it: the command, and each word of
    it that is an executable (``ccache gcc``: both) resolved through links, with its size and
    modification time, so that switching compilers or upgrading one builds anew. Raises
    ValueError for a blank (only spaces) or unparsable ``CC``, OSError if an executable
    cannot be read."""
    command = shlex.split(os.environ.get("CC") or "cc")
    if not command:
        raise ValueError("CC is blank")
    identity = [" ".join(command)]
    for word in command:
        if (found := shutil.which(word)) is not None:  # none at all: the build will say so
            info = os.stat(real := os.path.realpath(found))
            identity.append(f"{real} {info.st_size} {info.st_mtime_ns}")
    return command, "\n".join(identity)


def library_path(name: str, flags: list[str] | None = None) -> Path:
    """Where `name`'s library is cached: a hash of its source, the compiler, its flags
    (default: `compile_flags` for this CPU) and the machine."""
    flags = compile_flags() if flags is None else flags
    key = hashlib.sha256()
    key.update((SOURCES / f"{name}.c").read_bytes())
    key.update(compiler()[1].encode())
    key.update(" ".join([*flags, platform.machine(), platform.system()]).encode())
    return cache_dir() / f"{name}-{key.hexdigest()[:16]}.so"


def _untrusted(real: Path) -> str | None:
    """Why another user could have put the library at `real` (a resolved path) or could swap
    it (the rules in the module doc; `ownership`); None when nobody but this user or root
    could."""
    try:  # the file and its directory never sticky; every directory above it, no link
        return ownership.chain_problem(real, sticky_from=2)
    except OSError as error:
        return f"{real}: {error}"


def _make_dirs(directory: Path) -> None:
    """`directory` (absolute, no ``..``) and any missing directory above it: the last one
    only for this user, the others readable by all and writable by nobody else, whatever the
    umask (a umask of 002 would leave them group-writable, and the trust check would refuse
    what the build made). Only what this call created is given a mode: one that appears
    meanwhile is left to the trust check."""
    missing = [d for d in [directory, *directory.parents] if not d.exists()]
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            os.fchmod(fd, 0o700 if path == directory else 0o755)
        finally:
            os.close(fd)


def build(name: str, flags: list[str] | None = None) -> Path:
    """Compile ``ssvae_core/{name}.c`` with `flags` (default: `compile_flags` for this CPU)
    into the cache (if not there) -> the library's path. Raises OSError (the cache
    directory), ValueError (a blank or unparsable ``CC``) or RuntimeError (no compiler, or
    it failed)."""
    flags = compile_flags() if flags is None else flags
    target = library_path(name, flags)
    if target.exists():
        return target
    _make_dirs(target.parent)
    command = compiler()[0]
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        try:
            done = subprocess.run(
                [*command, *flags, "-o", tmp, str(SOURCES / f"{name}.c")],
                capture_output=True,
                text=True,
                errors="replace",
                timeout=BUILD_TIMEOUT_S,
            )
        except FileNotFoundError as error:  # no compiler: not the cache's fault
            raise RuntimeError(f"{command[0]}: {error.strerror} (no C compiler)") from None
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()[-400:]}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def build_all() -> list[Path]:
    """Every kernel for every CPU of this machine's architecture (x86: with AVX2 and FMA, and
    without) -> the libraries' paths. For an image: a node loads the one its CPU takes, even
    where it differs from the machine that built the image (whose user cannot add one)."""
    cpus = [AVX2, frozenset()] if X86 else [None]
    return [build(name, compile_flags(cpu)) for name in KERNELS for cpu in cpus]


_loaded: dict[str, ctypes.CDLL | None] = {}
_warned: set[str] = set()  # non-empty once a process has said why a library is not used


def load(name: str) -> ctypes.CDLL | None:
    """The C library `name`, built if need be; None where it cannot be had (then once per
    process a `NativeUnavailableWarning` saying why, unless ``SSVAE_NATIVE=0``)."""
    if not enabled():
        return None
    if name not in _loaded:
        fix = f"set {CACHE_ENV} to a directory only you can write"
        try:
            path = build(name).resolve(strict=True)  # loaded from where it is checked
            why = _untrusted(path)
            _loaded[name] = None if why else ctypes.CDLL(str(path))
        except (OSError, ValueError, RuntimeError, subprocess.TimeoutExpired) as error:
            _loaded[name], why = None, str(error)
            if not isinstance(error, OSError):  # an OSError is the cache directory's
                fix = "install a C compiler (apt-get install gcc) or set CC"
        if why and not _warned:
            _warned.add(name)
            warnings.warn(
                f"ssvae_core's C kernels are not used ({name}.c: {why}), so PyTorch's "
                f"kernels run instead (about 2x slower on the CPU); {fix}, or set "
                f"{DISABLE_ENV}=0 to silence this",
                NativeUnavailableWarning,
                stacklevel=2,
            )
    return _loaded[name]
