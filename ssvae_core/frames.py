"""The video's frames on a device, and the mean representation of every frame.

The frames go to the device once, as uint8 (a quarter of float32's bytes); each batch is a
gather there and a conversion to float, never a copy from the host.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ssvae_core.balls import Video


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when there is one, else CPU; ``cpu`` / ``cuda`` as named."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def frames_to_tensor(video: Video, device: torch.device | str) -> Tensor:
    """The video's frames once on the device. uint8 [T, 3, H, W], channels-last in memory.

    Channels-last is the frames' own [T, H, W, 3] layout, and the layout in which the small
    convolutions of Fig. 2 run fastest on CPU (about 1.5× in `bench/`).
    """
    frames = torch.from_numpy(video.frames).permute(0, 3, 1, 2)
    return frames.to(device).contiguous(memory_format=torch.channels_last)


def as_float(frames: Tensor) -> Tensor:
    """uint8 [B, 3, H, W] -> float32 in [0, 1]."""
    return frames.float().div_(255.0)


@torch.no_grad()
def encode_all(encoder: nn.Module, frames: Tensor, batch: int = 256) -> np.ndarray:
    """Mean representations of every frame (eval mode). frames: uint8 [T, 3, H, W] -> [T, D]."""
    was_training = encoder.training
    encoder.eval()
    z = torch.cat([encoder(as_float(frames[i : i + batch])) for i in range(0, len(frames), batch)])
    encoder.train(was_training)
    return z.cpu().numpy()
