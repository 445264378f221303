"""Checks of a sweep against this machine, made before Ray starts: devices, memory and (for
``--dry-run``, which starts no Ray) a trial's resources.

`ssvae_core.preflight` checks one run; a sweep adds what its trials share. The driver
simulates each distinct video once and Ray's object store holds a second copy, which every
trial on the node reads. A sweep started here (no ``--address``) also runs its trials here:
as many at once as the cores hold (``resources.cpu``, ``max_concurrent``), each with its own
step's activations, and a trial on CUDA in its ``resources.gpu`` share of the GPU. Each is a
`ConfigError` naming the key (exit 2). On a cluster the driver cannot see the nodes' memory,
so a trial on a GPU checks its own share when it starts (`sweep.trainable`).
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

from ssvae_core import preflight
from ssvae_core.config import DataConfig, RunConfig
from ssvae_core.errors import ConfigError, within
from ssvae_core.sweep.spec import SweepSpec


def check_sweep(spec: SweepSpec, address: str | None) -> None:
    """`check_address`, `check_devices`, then `check_memory`; `address` None or ``local``:
    started here."""
    check_address(address)
    check_devices(spec)
    check_memory(spec, local=address in (None, "local"))


def ray_address(address: str | None) -> tuple[str | None, str]:
    """The address Ray will join (``--address``, else ``$RAY_ADDRESS``, which ``ray.init``
    reads when given none; None: Ray starts here) and how a message names it."""
    if address:
        return address, f"--address {address}"
    if given := os.environ.get("RAY_ADDRESS"):
        return given, f"$RAY_ADDRESS={given}"
    return None, "Ray (started on this machine)"


def host_port(address: str, named: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``ray://HOST:PORT`` -> (host, port); Ray's default
    port without one (6379, or 10001 for ``ray://``). A port that is not one (``²``,
    ``99999``, ``0``) is a `ConfigError` naming `named`."""
    client = address.startswith("ray://")
    rest = address.removeprefix("ray://")
    parts = urllib.parse.urlsplit("//" + rest)
    try:
        port = parts.port  # ValueError: not digits, or above 65535
    except ValueError:
        port = 0
    if port == 0:
        raise ConfigError(f"{named}: the port in {rest!r} is not a number in 1-65535")
    return parts.hostname or "", port or (10001 if client else 6379)


def check_address(address: str | None) -> None:
    """Before Ray: the address it will join has a port that is one (`host_port`), and where
    it starts here, the folder its session files go to (``$RAY_TMPDIR``, else ``$TMPDIR``)
    can be written (a file there was exit 3, 'Not a directory', after MLflow opened)."""
    given, named = ray_address(address)
    if given not in (None, "auto", "local"):
        host_port(given, named)
    if given in (None, "local"):
        folder, var = ray_temp_dir()
        if var is not None:
            preflight.writable_dir(folder, f"${var}")


def ray_temp_dir() -> tuple[Path, str | None]:
    """The folder a Ray started here keeps its session files in, as Ray chooses it:
    ``$RAY_TMPDIR/ray`` where that is set, else ``$TMPDIR/ray``, else ``/tmp/ray``; and the
    variable that named it (None: neither is set)."""
    var = next((v for v in ("RAY_TMPDIR", "TMPDIR") if v in os.environ), None)
    return Path(os.environ[var] if var else "/tmp") / "ray", var


def check_devices(spec: SweepSpec) -> None:
    """A trial set to ``train.device: cuda`` needs a GPU share (``resources.gpu``)."""
    cuda = [cell.label for cell in spec.cells if cell.config.train.device == "cuda"]
    if cuda and spec.resources.gpu == 0:
        raise ConfigError(
            f"train.device: cuda in grid cell ({cuda[0]}), but resources.gpu is 0, so Ray gives "
            "the trials no GPU; set resources.gpu (e.g. 0.25) or train.device: auto"
        )


def starts_ray_here(address: str | None) -> bool:
    """Whether a sweep with this ``--address`` starts its own Ray on this machine: ``local``,
    or none given while no ``RAY_ADDRESS`` is set and no ``ray start`` cluster runs here
    (`ray.init` joins one, found by the file Ray keeps in its temporary folder)."""
    if address is not None:
        return address == "local"
    if ray_address(None)[0] is not None:
        return False
    return not (ray_temp_dir()[0] / "ray_current_cluster").exists()


def check_resources_here(
    spec: SweepSpec, cores: int | None = None, gpus: int | None = None
) -> None:
    """Refuse a sweep that starts its own Ray here (`starts_ray_here`) whose trial asks for
    more ``resources.cpu`` or ``resources.gpu`` than this machine has (`cores`, `gpus`: its
    own by default, as torch sees them); for ``--dry-run``, which starts no Ray: a run asks
    Ray's nodes (`cluster.check_resources`)."""
    cores = (os.cpu_count() or 1) if cores is None else cores
    if gpus is None:
        import torch

        gpus = torch.cuda.device_count()
    for key, asked, here in (("cpu", spec.resources.cpu, cores), ("gpu", spec.resources.gpu, gpus)):
        if asked > here:
            raise ConfigError(
                f"resources.{key}: each trial asks for {asked:g} {key.upper()}, and this machine "
                f"has {here}; lower it, or run on a cluster (--address)"
            )


def trials_at_once(spec: SweepSpec, cores: int | None = None) -> int:
    """How many Ray trials a sweep started on this machine runs at once: as many as its
    `cores` (default: the machine's, as many as Ray may count or more) hold at
    ``resources.cpu`` each, at most ``max_concurrent`` and the trials of one Tuner run (the
    grid's Ray trials, or a search's ``num_samples``: one cell's search runs at a time)."""
    cores = (os.cpu_count() or 1) if cores is None else cores
    n_trials = spec.search.num_samples if spec.search else len(spec.groups)
    limit = spec.execution.max_concurrent or n_trials
    return max(1, min(n_trials, limit, int(cores // spec.resources.cpu)))


def check_memory(spec: SweepSpec, local: bool, available: int | None = None) -> None:
    """Refuse a sweep beyond `preflight.MEMORY_SHARE` of this machine's memory (`available`
    instead if given): its videos twice (the driver's and the object store's copies) and, if
    `local`, `trials_at_once` copies of its heaviest trial on the CPU (at each corner of a
    search space; fused cells as one trial; a searched ``data.*`` key's own video, on any
    device). A local trial on CUDA is checked against its ``resources.gpu`` share
    (`preflight.check_gpu_share`), the GPU's memory asked once."""
    videos: dict[DataConfig, str] = {}
    for cell in spec.cells:
        videos.setdefault(cell.config.data, cell.label)
    largest = max(videos, key=preflight.video_bytes)
    key = preflight.video_key(largest)
    parts = {key: 2 * sum(preflight.video_bytes(data) for data in videos)}
    detail = (
        f"{len(videos)} video(s) (the largest in grid cell {videos[largest]}), each here and "
        "in Ray's object store"
    )
    heaviest: tuple[str, dict[str, int]] | None = None
    device: tuple[str, int] | None = None
    for where, cfg, runs in _trials(spec) if local else ():
        on_gpu = spec.resources.gpu > 0 and preflight.on_gpu(cfg)
        if on_gpu:
            device = device or preflight.gpu_memory()
            within(where, preflight.check_gpu_share, cfg, spec.resources.gpu, runs, device)
        trial: dict[str, int] = {} if on_gpu else preflight.run_bytes(cfg, gpu=False, runs=runs)
        if cfg.data not in videos:  # a searched data.* key: the trial simulates its own
            key = preflight.video_key(cfg.data)
            trial[key] = trial.get(key, 0) + preflight.video_bytes(cfg.data)
        if heaviest is None or sum(trial.values()) > sum(heaviest[1].values()):
            heaviest = (where, trial)
    if heaviest is not None and sum(heaviest[1].values()) > 0:
        at_once = trials_at_once(spec)
        for key, size in heaviest[1].items():
            parts[key] = parts.get(key, 0) + at_once * size
        detail += (
            f", and {at_once} trial(s) at once (resources.cpu, max_concurrent) as heavy as the "
            f"one in {heaviest[0]}"
        )
    size = available or preflight.memory_bytes()
    preflight.refuse_beyond(parts, size, "this machine's", "the sweep", detail)


def _trials(spec: SweepSpec) -> list[tuple[str, RunConfig, int]]:
    """Each Ray trial's first cell: where, its config, its number of fused runs; in a search
    also the config at each corner of the space."""
    trials = []
    for group in spec.groups:
        cell = spec.cells[group[0]]
        trials.append((f"grid cell {cell.label}", cell.config, len(group)))
        trials += [(where, cfg, 1) for where, cfg in spec.corner_configs(cell)]
    return trials
