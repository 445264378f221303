"""The video's frames on a device, and the mean representation of every frame.

The frames go to the device once, as uint8 (a quarter of float32's bytes); each batch is a
gather there and a conversion to float, never a copy from the host.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from torch import Tensor, nn

from ssvae_core.balls import Video
from ssvae_core.conv3x3 import memory_format


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when there is one, else CPU; ``cpu`` / ``cuda`` as named.

    ``auto`` in a process given a GPU (``CUDA_VISIBLE_DEVICES`` names one: a Ray trial with
    ``resources.gpu``) that torch cannot see trains on the CPU, and says so once per process
    (`GpuNotUsedWarning`): a GPU share held and unused is a sweep far slower than planned.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
        if visible and visible != "-1":  # "" or "-1": no GPU was given to this process
            build = torch.version.cuda  # None: a CPU build of torch
            why = f"torch {torch.__version__} is a CPU build" if build is None else (
                f"torch {torch.__version__} (CUDA {build}) finds no usable driver or device"
            )  # fmt: skip
            _warn_gpu_not_used(
                f"train.device: auto, and CUDA_VISIBLE_DEVICES={visible} gives this process a "
                f"GPU, but torch sees no CUDA device ({why}), so this run trains on the CPU; "
                "install a CUDA build of torch, or set train.device: cpu (and resources.gpu: 0 "
                "in a sweep) to stop holding the GPU"
            )
        return torch.device("cpu")
    return torch.device(name)


class GpuNotUsedWarning(RuntimeWarning):
    """A GPU was given to this process and torch cannot use it: the run trains on the CPU."""


_warned: dict[str, bool] = {"gpu_not_used": False}


def _warn_gpu_not_used(message: str) -> None:
    """`GpuNotUsedWarning` the first time only in this process (a Ray worker that trains
    trial after trial says it once)."""
    if not _warned["gpu_not_used"]:
        _warned["gpu_not_used"] = True
        warnings.warn(message, GpuNotUsedWarning, stacklevel=3)


def frames_to_tensor(video: Video, device: torch.device | str) -> Tensor:
    """The video's frames once on the device. uint8 [T, 3, H, W], channels-last in memory:
    the frames' own [T, H, W, 3] layout, so on the CPU a view of the video, not a copy."""
    frames = torch.from_numpy(video.frames).permute(0, 3, 1, 2)
    return frames.to(device).contiguous(memory_format=torch.channels_last)


def as_float(frames: Tensor) -> Tensor:
    """uint8 [B, 3, H, W] -> float32 in [0, 1], in the layout Fig. 2 runs fastest in on their
    device (`conv3x3.memory_format`: NCHW on the CPU where the C kernels load, else
    channels-last); a batch's bytes are reordered, not the whole video's."""
    return frames.contiguous(memory_format=memory_format(frames.device)).float().div_(255.0)


# Frames a pass without gradients (the probe, Fig. 1D/E) encodes at once. On a GPU, many. On
# the CPU about a quarter of a million pixels (64 frames at 64 px, 4 at 256 px): a layer's
# output is then 6 MiB (6 maps, float32), which the cache holds and glibc's heap keeps (the
# heap keeps its largest size for the trial's life: `allocator`). At 256 px, 300 frames took
# 0.375 s in batches of 4, 0.475 s in batches of 16 and 1.89 s in batches of 256 (one thread),
# the process growing by 17, 97 and about 870 MiB; the same numbers to the bit (README,
# Benchmarks; `bench/levers.py`).
GPU_FRAMES_PER_BATCH = 256
CPU_PIXELS_PER_BATCH = 2**18


def frames_per_batch(height: int, width: int, device: torch.device) -> int:
    """How many frames of height x width pixels a pass without gradients encodes at once on
    `device` (`CPU_PIXELS_PER_BATCH` on the CPU, `GPU_FRAMES_PER_BATCH` elsewhere)."""
    if device.type != "cpu":
        return GPU_FRAMES_PER_BATCH
    return max(1, CPU_PIXELS_PER_BATCH // (height * width))


@torch.no_grad()
def encode_all(encoder: nn.Module, frames: Tensor, batch: int | None = None) -> np.ndarray:
    """Mean representations of every frame (eval mode), `batch` frames at a time (by default
    `frames_per_batch`). frames: uint8 [T, 3, H, W], T >= 1 -> [T, D].

    The results go into one tensor as they come: kept as one small tensor per batch, each
    would sit in glibc's heap between the freed layer outputs of the batches, which then
    cannot be merged and reused (at 256 px the process grew by about 0.7 GB per pass over
    900 frames in a `/tmp` run)."""
    if batch is None:
        batch = frames_per_batch(frames.shape[2], frames.shape[3], frames.device)
    was_training = encoder.training
    encoder.eval()
    z: Tensor | None = None
    for i in range(0, len(frames), batch):
        out = encoder(as_float(frames[i : i + batch]))
        if z is None:  # one output, written in place: a small tensor kept per batch would
            z = out.new_empty(len(frames), *out.shape[1:])  # pin the heap's freed layers
        z[i : i + len(out)] = out
    encoder.train(was_training)
    assert z is not None
    return z.cpu().numpy()
