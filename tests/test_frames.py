"""`frames.resolve_device`: ``auto`` without CUDA trains on the CPU, and says so once when a
GPU was given to the process (``CUDA_VISIBLE_DEVICES``, as Ray sets it for a GPU share)."""

from __future__ import annotations

import warnings

import pytest
import torch

from ssvae_core import conv3x3, frames, native
from ssvae_core.balls import Video


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch sees no CUDA device (true on a CPU build; forced on a GPU machine), and this
    process has not warned yet."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setitem(frames._warned, "gpu_not_used", False)


def _resolve_twice(name: str) -> tuple[list[torch.device], list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        devices = [frames.resolve_device(name), frames.resolve_device(name)]
    return devices, [w for w in caught if issubclass(w.category, frames.GpuNotUsedWarning)]


def test_auto_with_a_gpu_given_but_no_cuda_trains_on_cpu_and_warns_once(
    no_cuda: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    devices, caught = _resolve_twice("auto")
    assert devices == [torch.device("cpu")] * 2
    assert len(caught) == 1  # once per process, however many runs it trains
    message = str(caught[0].message)
    assert "CUDA_VISIBLE_DEVICES=1" in message and "trains on the CPU" in message
    assert "train.device: cpu" in message  # what to do about it


@pytest.mark.parametrize("visible", [None, "", "-1"])
def test_auto_without_a_gpu_given_is_silent(
    no_cuda: None, monkeypatch: pytest.MonkeyPatch, visible: str | None
) -> None:
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    devices, caught = _resolve_twice("auto")
    assert devices == [torch.device("cpu")] * 2 and caught == []


def test_cpu_named_is_silent_even_with_a_gpu_given(
    no_cuda: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    devices, caught = _resolve_twice("cpu")
    assert devices == [torch.device("cpu")] * 2 and caught == []


def test_a_pass_without_gradients_encodes_a_quarter_million_pixels_at_once_on_the_cpu() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert frames.frames_per_batch(64, 64, cpu) == 64  # the small preset
    assert frames.frames_per_batch(256, 256, cpu) == 4  # the paper's
    assert frames.frames_per_batch(4096, 4096, cpu) == 1
    assert frames.frames_per_batch(256, 256, cuda) == frames.GPU_FRAMES_PER_BATCH


def test_encode_all_gives_the_same_numbers_whatever_the_batch() -> None:
    from ssvae_core.encoder import CentreOfMassEncoder

    torch.manual_seed(0)
    encoder = CentreOfMassEncoder()  # in the layout training uses (`conv3x3.memory_format`)
    video = torch.randint(0, 256, (37, 3, 256, 256), dtype=torch.uint8)
    video = video.contiguous(memory_format=torch.channels_last)  # as `frames_to_tensor` gives
    encoder(frames.as_float(video[:8]))  # training mode: running statistics move off 0 and 1
    seen: list[int] = []
    encoder.register_forward_hook(lambda m, args, out: seen.append(len(args[0])))
    z = frames.encode_all(encoder, video)
    assert seen == [4] * 9 + [1]  # 4 frames of 256 x 256 px a pass
    assert encoder.training  # its mode given back
    assert (z == frames.encode_all(encoder, video, batch=37)).all()  # eval mode: per frame


def test_frames_stay_a_view_of_the_video_and_batches_take_fig2s_layout(
    tiny_video: Video, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_cpu = frames.frames_to_tensor(tiny_video, "cpu")
    assert on_cpu.data_ptr() == tiny_video.frames.ctypes.data  # no copy of the whole video
    batch = frames.as_float(on_cpu[[4, 1]])
    pixels = torch.from_numpy(tiny_video.frames[[4, 1]]).permute(0, 3, 1, 2)
    assert torch.equal(batch, pixels / 255.0)
    assert batch.is_contiguous() == (conv3x3.library() is not None)  # NCHW for the C kernels
    monkeypatch.setenv(native.DISABLE_ENV, "0")
    assert frames.as_float(on_cpu[[4, 1]]).is_contiguous(memory_format=torch.channels_last)
