"""Checks of a run against this machine, made before any compute: device, memory, outputs.

A config can be valid and still impossible here: ``train.device: cuda`` without CUDA, a video
or a batch that does not fit in memory (``data.n_frames: 1000000000``), an ``--out`` that is a
file or sits in a read-only folder. Each is a `ConfigError` naming the key or the path (exit
2), raised before the video is simulated, instead of an AssertionError, a MemoryError or a
traceback after minutes of training.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from ssvae_core.batches import frames_per_step
from ssvae_core.config import PRESETS, DataConfig, RunConfig
from ssvae_core.couplings import coupling_params
from ssvae_core.errors import NAME_MAX, PATH_MAX, ConfigError
from ssvae_core.files import TMP_EXTRA_BYTES
from ssvae_core.frames import frames_per_batch

MEMORY_SHARE = 0.8  # a run may plan on this share of the machine's memory
FLOAT = 4  # bytes per float32
# Per pixel of an encoded frame, the floats kept for the backward pass of Fig. 2: the input,
# 6 feature maps before and after batch norm and ReLU, 3 maps before and after the sigmoid;
# without gradients (the probe's encoding, `frames.frames_per_batch` frames at a time) about two
# layers at a time. The estimate leaves out torch's own runtime (~0.3 GB): it refuses what
# cannot fit, it does not plan tight runs. On the CPU the C kernels keep 6 maps fewer (the
# ReLU's output: `conv3x3.conv2d`'s input_from); on a GPU every one is kept. Against the peak
# memory of one epoch of `fit` on the CPU (README's benchmarks, 2026-12-06): 0.77 GiB
# estimated, 0.75 GiB measured at the paper preset; 0.05 GiB estimated, 0.29 GiB measured at
# the small one (the runtime dominates there).
ACTIVATIONS_PER_PIXEL = 3 + 6 * 3 + 3 * 3
NO_GRAD_PER_PIXEL = 3 + 6 + 6
# The largest value of each key that sizes a run in any preset: beyond it, the key is what
# made a run large (`driven_by`).
LARGEST = {
    "data.size": max(preset.data.size for preset in PRESETS.values()),
    "data.n_frames": max(preset.data.n_frames for preset in PRESETS.values()),
    "train.batch_size": max(preset.train.batch_size for preset in PRESETS.values()),
}


def check_device(name: str) -> None:
    """``cuda`` needs a CUDA device that torch can see."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "train.device: cuda, but torch sees no CUDA device here "
            "(torch.cuda.is_available() is False); use cpu, or auto to take a GPU when there is one"
        )


def memory_bytes() -> int:
    """The machine's physical memory in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def on_gpu(cfg: RunConfig) -> bool:
    """Whether the run's tensors go to a CUDA device: ``cuda`` or ``auto``, where torch sees
    one (``cuda`` without one is `check_device`'s refusal)."""
    return cfg.train.device in ("cuda", "auto") and torch.cuda.is_available()


def video_bytes(data: DataConfig) -> int:
    """The video's frames: uint8 [``data.n_frames``, ``data.size``, ``data.size``, 3]."""
    return data.n_frames * data.size * data.size * 3


def driven_by(data: DataConfig, key: str, value: int) -> str:
    """The key a memory part is named by: `key`, the part's own (``data.n_frames`` for the
    video, ``train.batch_size`` for a step's activations), if its `value` is beyond every
    preset's; else ``data.size`` if that is (it scales every per-pixel part); else `key`."""
    if value > LARGEST[key] or data.size <= LARGEST["data.size"]:
        return key
    return "data.size"


def video_key(data: DataConfig) -> str:
    """The key the video's memory is named by (`driven_by`)."""
    return driven_by(data, "data.n_frames", data.n_frames)


def run_bytes(cfg: RunConfig, gpu: bool, runs: int = 1) -> dict[str, int]:
    """Bytes beyond the video, by the key that drives each: one step's activations
    (``train.batch_size``), the encoder's weights (``encoder.hidden``) and an MLP critic's
    (`coupling_bytes`), for `runs` runs trained as one model (`fused`: each run its own batch
    and weights)."""
    data, train = cfg.data, cfg.train
    pixels = data.size * data.size
    encoded = frames_per_step(train.mode, train.batch_size, cfg.objective.n_negatives)
    step = encoded * pixels * ACTIVATIONS_PER_PIXEL * FLOAT
    per_pass = frames_per_batch(data.size, data.size, torch.device("cuda" if gpu else "cpu"))
    probe = min(per_pass, data.n_frames) * pixels * NO_GRAD_PER_PIXEL * FLOAT  # encode_all
    hidden = cfg.encoder.used().get("hidden", 0)
    weights = (
        4 * (pixels * 3 * hidden + hidden * hidden) * FLOAT if cfg.encoder.kind == "mlp" else 0
    )
    parts = {driven_by(data, "train.batch_size", train.batch_size): runs * max(step, probe)}
    parts["encoder.hidden"] = parts.get("encoder.hidden", 0) + runs * weights
    for key, part in coupling_bytes(cfg).items():
        parts[key] = parts.get(key, 0) + runs * part
    return parts


def coupling_bytes(cfg: RunConfig) -> dict[str, int]:
    """An MLP critic's bytes, by the key that drives each: its weights with their gradient
    and Adam's two moments (an upper bound for SGD) under ``coupling.hidden`` (H), and
    ``coupling.embed_dim`` (E) for ``separable_mlp``'s H x E output layers; ``concat_mlp``'s
    [B, M, H] activations over every pair (four kept for the backward) under the key that
    made them large: H above its default, else N (``objective.n_negatives``) where it widens
    M, else ``train.batch_size``. Nothing for the other couplings."""
    if cfg.train.mode != "ssl" or cfg.coupling.kind not in ("concat_mlp", "separable_mlp"):
        return {}
    used, dim = cfg.coupling.used(), 2 * cfg.data.n_balls  # z [B, 2K]: a centre per ball
    hidden, embed = int(used["hidden"]), int(used.get("embed_dim", 0))
    if cfg.coupling.kind == "separable_mlp":  # two _mlp(D, H, E): g and h
        weights = 2 * (dim * hidden + hidden * hidden)
        return {
            "coupling.hidden": 4 * weights * FLOAT,
            "coupling.embed_dim": 8 * hidden * embed * FLOAT,
        }
    batch = cfg.train.batch_size
    candidates = max(batch, (cfg.objective.n_negatives or batch - 1) + 1)  # M
    weights = 2 * dim * hidden + hidden * hidden + hidden  # _mlp(2D, H, 1)
    if hidden > int(coupling_params("concat_mlp")["hidden"]):  # type: ignore[call-overload]
        activations_key = "coupling.hidden"
    elif candidates > batch:
        activations_key = "objective.n_negatives"
    else:
        activations_key = "train.batch_size"
    parts = {"coupling.hidden": 4 * weights * FLOAT}
    activations = 4 * batch * candidates * hidden * FLOAT
    parts[activations_key] = parts.get(activations_key, 0) + activations
    return parts


def estimate(cfg: RunConfig) -> dict[str, int]:
    """Bytes a run needs on its device, by the key that drives each part: the video
    (``data.n_frames``, on the device; on the CPU also the simulator's copy), and `run_bytes`."""
    gpu = on_gpu(cfg)
    parts = {video_key(cfg.data): (1 if gpu else 2) * video_bytes(cfg.data)}
    return _add(parts, run_bytes(cfg, gpu))


def _add(parts: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    """`parts` with `more` added key by key."""
    for key, size in more.items():
        parts[key] = parts.get(key, 0) + size
    return parts


def refuse_beyond(
    parts: dict[str, int], size: int, where: str, needs: str = "the run", detail: str = ""
) -> None:
    """A `ConfigError` if the bytes in `parts` add up to more than `MEMORY_SHARE` of `size`
    (the memory called `where`), naming the key with the largest part and each part, then
    `detail` (what was counted)."""
    total, limit = sum(parts.values()), MEMORY_SHARE * size
    if total > limit:
        key = max(parts, key=lambda k: parts[k])
        share = ", ".join(f"{k} {v / 2**30:.3g} GiB" for k, v in parts.items() if v)
        raise ConfigError(
            f"{key}: {needs} needs about {total / 2**30:.3g} GiB ({share}), more than "
            f"{MEMORY_SHARE:.0%} of {where} {size / 2**30:.3g} GiB" + (detail and f"; {detail}")
        )


def gpu_memory() -> tuple[str, int]:
    """The first visible CUDA device: ``the GPU's (NAME)`` and its bytes."""
    name = torch.cuda.get_device_name(0)
    return f"the GPU's ({name})", torch.cuda.get_device_properties(0).total_memory


def check_memory(cfg: RunConfig, available: int | None = None) -> None:
    """Refuse a run whose estimate is beyond `MEMORY_SHARE` of the memory it trains in (the
    GPU's for a run on CUDA, else the machine's; `available` instead if given), naming the
    key with the largest share and the estimate."""
    where, size = gpu_memory() if on_gpu(cfg) else ("this machine's", memory_bytes())
    refuse_beyond(estimate(cfg), available or size, where)


def check_video(data: DataConfig, available: int | None = None) -> None:
    """Refuse a video (``ssvae data``: simulated on the CPU) beyond `MEMORY_SHARE` of this
    machine's memory (`available` instead if given)."""
    parts = {video_key(data): video_bytes(data)}
    refuse_beyond(parts, available or memory_bytes(), "this machine's", "the video")


def check_gpu_share(
    cfg: RunConfig, share: float, runs: int = 1, device: tuple[str, int] | None = None
) -> None:
    """Refuse a sweep trial on CUDA (`runs` fused runs, one video) beyond `MEMORY_SHARE` of
    its ``resources.gpu`` share of the device's memory (`device`: `gpu_memory`, asked once
    by a caller checking many trials): four trials at ``gpu: 0.25`` each plan on a quarter."""
    where, size = device or gpu_memory()
    if share < 1:
        where = f"its resources.gpu share ({share:g}) of {where}"
        size = int(share * size)
    parts = _add(
        {video_key(cfg.data): video_bytes(cfg.data)},
        run_bytes(cfg, True, runs),
    )
    refuse_beyond(parts, size, where, "a trial")


def check_run(cfg: RunConfig) -> None:
    """`check_device` and `check_memory`."""
    check_device(cfg.train.device)
    check_memory(cfg)


IMAGE_FORMATS = ("png", "pdf", "svg", "jpg", "jpeg")


def image_path(path: str | Path, key: str) -> Path:
    """A figure's path: a format matplotlib writes, in a folder that can be written."""
    path = Path(path)
    suffix = path.suffix.lstrip(".").lower()
    if suffix not in IMAGE_FORMATS:
        raise ConfigError(
            f"{key}: {path} is not an image file name; end it in one of "
            f"{', '.join('.' + s for s in IMAGE_FORMATS)}"
        )
    return output_file(path, key)


def output_file(path: str | Path, key: str) -> Path:
    """A file to write at the end of a run, checked before it: not a directory, not a named
    pipe (writing would wait for a reader: hours of training, then a hang), not a symbolic
    link to nothing (written through, it would make its folders wherever it points), not a
    read-only file; in a folder that can be written."""
    path = Path(path)
    try:
        problem = (
            "is a directory" if path.is_dir()
            else "is a named pipe" if path.is_fifo()
            else "is a symbolic link to nothing" if path.is_symlink() and not path.exists()
            else None
        )  # fmt: skip
    except OSError as err:  # a folder on the way this process may not look into
        raise ConfigError(f"{key}: cannot write to {path} ({err.strerror or err})") from None
    if problem is not None:
        raise ConfigError(f"{key}: {path} {problem}")
    try:
        real = Path(os.path.realpath(path))
        exists = real.exists()
    except OSError as err:  # a path too long once made absolute
        raise ConfigError(f"{key}: cannot write to {path} ({err.strerror or err})") from None
    if exists and not real.is_file():  # a device (/dev/null): written where it is
        return path
    if exists and not os.access(real, os.W_OK):  # replacing it would be refused
        raise ConfigError(f"{key}: {path} is read-only")
    name, whole = len(os.fsencode(real.name)), len(os.fsencode(str(real)))
    if name + TMP_EXTRA_BYTES > NAME_MAX or whole + TMP_EXTRA_BYTES >= PATH_MAX:
        raise ConfigError(  # found after the run: hours of training, then 'File name too long'
            f"{key}: {path} is written as .NAME.xxxxxxxx.tmp first, {TMP_EXTRA_BYTES} bytes "
            f"longer, and that is over the file system's limits ({NAME_MAX} bytes a name, "
            f"{PATH_MAX} a path); use a shorter name"
        )
    writable_dir(real.parent, key)  # where the file is made: a link's target's folder
    return path


def writable_dir(path: str | Path, key: str) -> Path:
    """`path` as a directory this process could write, or a `ConfigError` naming `key`: a file
    or a dangling symbolic link in the way, a read-only or full folder.

    Nothing is made: the folders that do not exist yet are made by whatever writes there, so
    a command refused after this check (or a run that fails) leaves no empty folder behind.
    """
    path = Path(path)
    existing = path
    try:
        while not existing.exists():  # the nearest folder that exists: where `path` goes
            if existing.is_symlink():
                raise ConfigError(f"{key}: {existing} is a symbolic link to nothing")
            if existing == existing.parent:
                break
            existing = existing.parent
        is_dir = existing.is_dir()
    except OSError as err:  # a folder on the way this process may not look into
        raise ConfigError(f"{key}: cannot write to {path} ({err.strerror or err})") from None
    if not is_dir:
        what = f"{existing} is a file, not a directory"
        raise ConfigError(
            f"{key}: {what}" if existing == path else f"{key}: cannot write to {path} ({what})"
        )
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".ssvae-write-check-"):
            pass
    except OSError as err:
        raise ConfigError(f"{key}: cannot write to {path} ({err.strerror or err})") from None
    return path
