"""Building and loading the C kernels (`ssvae_core.native`): the cache, and every refusal."""

from __future__ import annotations

import os
import pwd
import shutil
import warnings
from pathlib import Path

import pytest

from ssvae_core import native, ownership


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache directory and an empty table of loaded libraries."""
    if shutil.which(os.environ.get("CC") or "cc") is None and not os.environ.get("SSVAE_CI"):
        pytest.skip("no C compiler")
    directory = tmp_path / "cache"
    monkeypatch.setenv(native.CACHE_ENV, str(directory))
    monkeypatch.delenv(native.DISABLE_ENV, raising=False)
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setattr(native, "_warned", set())
    return directory


def _load_warnings(name: str = "conv3x3") -> tuple[object, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lib = native.load(name)
    return lib, [str(w.message) for w in caught if w.category is native.NativeUnavailableWarning]


def test_built_once_into_a_private_cache_then_loaded_from_it(cache: Path) -> None:
    lib, said = _load_warnings()
    assert lib is not None and said == []
    path = native.library_path("conv3x3")
    assert path.parent == cache and path.exists()
    assert cache.stat().st_mode & 0o077 == 0  # only this user
    built = path.stat().st_mtime_ns
    native._loaded.clear()
    assert native.load("conv3x3") is not None
    assert path.stat().st_mtime_ns == built  # not built again
    assert [p.name for p in cache.iterdir()] == [path.name]  # no temporary file left


def test_another_source_or_flags_build_another_file(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, original = native.library_path("conv3x3"), native.SOURCES
    sources = tmp_path / "src"
    sources.mkdir()
    source = (native.SOURCES / "conv3x3.c").read_text()
    (sources / "conv3x3.c").write_text(source + "\n/* edited */\n")
    monkeypatch.setattr(native, "SOURCES", sources)
    assert native.library_path("conv3x3") != first
    monkeypatch.setattr(native, "SOURCES", original)
    assert native.library_path("conv3x3") == first
    monkeypatch.setattr(native, "compile_flags", lambda: ["-O2", "-shared", "-fPIC"])
    assert native.library_path("conv3x3") != first


def test_another_compiler_or_an_upgraded_one_builds_another_file(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rounding `conv3x3.c` promises (no fused multiply-add where it says so) depends on
    the compiler honouring its attributes: a library one compiler built is not another's."""
    first = native.library_path("conv3x3")
    wrapper = tmp_path / "my-cc"
    wrapper.write_text('#!/bin/sh\nexec cc "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("CC", str(wrapper))
    other = native.library_path("conv3x3")
    assert other != first
    os.utime(wrapper, ns=(0, 10**18))  # the same file, changed (as an upgrade changes it)
    assert native.library_path("conv3x3") not in (first, other)
    assert native.load("conv3x3") is not None  # and it builds and loads through the wrapper
    # A launcher before the compiler (``ccache gcc``): the compiler behind it counts too.
    launcher = tmp_path / "launch"
    launcher.write_text('#!/bin/sh\nexec "$@"\n')
    launcher.chmod(0o755)
    monkeypatch.setenv("CC", f"{launcher} {wrapper}")
    before = native.library_path("conv3x3")
    os.utime(wrapper, ns=(0, 2 * 10**18))
    assert native.library_path("conv3x3") != before


@pytest.mark.parametrize(
    ("compiler", "said"),
    [("/nonexistent/cc", "No such file"), ("false", "failed"), ("  ", "CC is blank")],
)
def test_no_compiler_or_a_failed_build_warns_once_and_falls_back(
    cache: Path, monkeypatch: pytest.MonkeyPatch, compiler: str, said: str
) -> None:
    monkeypatch.setenv("CC", compiler)
    lib, messages = _load_warnings()
    assert lib is None and len(messages) == 1
    assert said in messages[0] and "PyTorch's kernels run instead" in messages[0]
    assert "install a C compiler" in messages[0]
    lib, messages = _load_warnings()
    assert lib is None and messages == []  # once per process
    lib, messages = _load_warnings("batchnorm")
    assert lib is None and messages == []  # and once for all the kernels
    assert not list(cache.glob("*.so")) and not list(cache.glob(".*"))  # nothing half-built


@pytest.mark.parametrize("what", ["directory", "file", "sticky directory"])
def test_a_cache_others_can_write_is_not_loaded(cache: Path, what: str) -> None:
    """The cache directory itself may not lean on the sticky bit: others could add a file
    under a name not yet built."""
    path = native.build("conv3x3")
    target = path if what == "file" else path.parent
    target.chmod(target.stat().st_mode | 0o022 | (0o1000 if what.startswith("sticky") else 0))
    lib, messages = _load_warnings()
    assert lib is None and len(messages) == 1 and "writable by others" in messages[0]


def test_group_writable_only_for_the_owners_private_group(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As OpenSSH judges ~/.ssh: the user-private group (umask 002 systems) is the user's
    alone; any other group is other users, and so is one another user has as primary group
    (not listed among its members)."""
    if os.getuid() != 0:
        pytest.skip("giving a directory to another group needs root")
    native.build("conv3x3")
    cache.chmod(0o770)
    assert ownership.private_group(cache.stat())  # root's group: root alone
    assert _load_warnings()[0] is not None
    native._loaded.clear()
    everyone = ownership.pwd.getpwall()
    other = pwd.struct_passwd(("mallory", "x", 4321, 0, "", "/home/mallory", "/bin/sh"))
    with monkeypatch.context() as patch:
        patch.setattr(ownership.pwd, "getpwall", lambda: [*everyone, other])
        ownership._private.cache_clear()  # read once per process: not with mallory
        assert not ownership.private_group(cache.stat())
    ownership._private.cache_clear()
    os.chown(cache, -1, 4321)  # a group of others (here: no such group at all)
    lib, messages = _load_warnings()
    assert lib is None and f"{cache} is writable by others" in messages[0]


def test_a_dotdot_in_the_cache_path_changes_no_existing_directory(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``top/new/../cache`` is ``top/cache``: ``top`` exists and keeps its mode (1777)."""
    top = tmp_path / "top"
    top.mkdir()
    top.chmod(0o1777)
    monkeypatch.setenv(native.CACHE_ENV, str(top / "new" / ".." / "cache"))
    assert _load_warnings()[0] is not None
    assert top.stat().st_mode & 0o7777 == 0o1777
    assert (top / "cache").is_dir() and not (top / "new").exists()


def test_a_cache_path_through_a_file_says_so_not_install_a_compiler(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv(native.CACHE_ENV, str(tmp_path / "a-file" / "cache"))
    lib, messages = _load_warnings()
    assert lib is None and len(messages) == 1
    assert f"set {native.CACHE_ENV}" in messages[0] and "install a C compiler" not in messages[0]


def test_the_directories_a_build_makes_are_not_group_writable_under_umask_002(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = tmp_path / "home" / ".cache" / "ssvae"
    monkeypatch.setenv(native.CACHE_ENV, str(deep))
    old = os.umask(0o002)
    try:
        lib, messages = _load_warnings()
    finally:
        os.umask(old)
    assert lib is not None and messages == []
    modes = [oct(d.stat().st_mode & 0o7777) for d in (deep.parent.parent, deep.parent, deep)]
    assert modes == ["0o755", "0o755", "0o700"]


@pytest.mark.parametrize(("mode", "loaded"), [(0o777, False), (0o1777, True), (0o755, True)])
def test_a_directory_above_the_cache_others_can_write_only_if_sticky(
    cache: Path, mode: int, loaded: bool
) -> None:
    """Above the cache, a directory others can write lets them rename the cache away and put
    their own in its place, unless its sticky bit stops them (as on /tmp)."""
    native.build("conv3x3")
    cache.parent.chmod(mode)
    lib, messages = _load_warnings()
    assert (lib is not None) is loaded
    if not loaded:
        assert len(messages) == 1 and f"{cache.parent} is writable by others" in messages[0]


def test_a_directory_above_the_cache_owned_by_another_user_is_not_trusted(
    cache: Path, tmp_path: Path
) -> None:
    if os.getuid() != 0:
        pytest.skip("giving a directory to another user needs root")
    native.build("conv3x3")
    os.chown(tmp_path, 4321, -1)
    try:
        lib, messages = _load_warnings()
    finally:
        os.chown(tmp_path, 0, -1)
    assert lib is None and f"{tmp_path} belongs to uid 4321" in messages[0]


def test_a_link_to_a_cache_is_judged_where_it_points(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The directories the library really lies in count, and it is loaded from there, so the
    link cannot be turned elsewhere between the check and the load."""
    real = tmp_path / "shared" / "cache"
    real.mkdir(parents=True, mode=0o700)
    link = tmp_path / "mine"
    link.symlink_to(real)
    monkeypatch.setenv(native.CACHE_ENV, str(link))
    native.build("conv3x3")
    lib = _load_warnings()[0]
    assert lib is not None and lib._name.startswith(f"{real}/")  # type: ignore[attr-defined]
    native._loaded.clear()
    native._warned.clear()
    real.parent.chmod(0o777)
    lib, messages = _load_warnings()
    assert lib is None and f"{real.parent} is writable by others" in messages[0]


def test_switched_off_builds_nothing_and_says_nothing(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(native.DISABLE_ENV, "0")
    lib, messages = _load_warnings()
    assert lib is None and messages == [] and not cache.exists()


def test_every_c_source_is_a_kernel_the_image_builds() -> None:
    """docker/Dockerfile builds `native.KERNELS`: a new .c file must be listed there."""
    assert sorted(native.KERNELS) == sorted(p.stem for p in native.SOURCES.glob("*.c"))
    dockerfile = (native.SOURCES.parent / "docker" / "Dockerfile").read_text()
    assert "native.build_all()" in dockerfile


def test_build_all_serves_a_cpu_unlike_the_builders(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An image built on one CPU runs on nodes with others: each loads a build made for it,
    and none has to build (the image's user could not)."""
    paths = native.build_all()
    cpus = [native.AVX2, frozenset()] if native.X86 else [frozenset()]
    assert len(set(paths)) == len(native.KERNELS) * len(cpus)
    built = sorted((p.name, p.stat().st_mtime_ns) for p in cache.iterdir())
    for cpu in cpus:
        monkeypatch.setattr(native, "_cpu_flags", lambda cpu=cpu: set(cpu))
        native._loaded.clear()
        lib, said = _load_warnings()
        assert lib is not None and said == []
        assert native.library_path("conv3x3") in paths
        assert ("-mavx2" in native.compile_flags()) is (native.X86 and bool(cpu))
    assert sorted((p.name, p.stat().st_mtime_ns) for p in cache.iterdir()) == built
