"""Trainer throughput: `ssvae_core.train` against a straightforward PyTorch loop, side by side.

The straightforward loop is what one writes first: a `Dataset` of (base, target) pairs read
from the uint8 video and converted per item, a shuffled `DataLoader`, Fig. 2 built from stock
`torch.nn` layers, and the encoder called separately on the base and the target frames. Ours
keeps the video on the device once, gathers a batch by index, encodes every distinct frame of
the step in one pass, and on the CPU runs Fig. 2's convolutions and batch norms in C
(`ssvae_core.conv3x3`, `ssvae_core.batchnorm`, the first ReLU fused; `SSVAE_NATIVE=0`
measures it without them, on oneDNN and the batch norm's rows path). Both
use the same network, coupling, loss, optimiser and thread count; throughput is training
pairs per second over whole steps (forward, backward, update). Rounds alternate between the
two and the best round of each is kept, so machine noise hits both alike.

    python bench/trainer.py --preset small --steps 29 --rounds 3
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ssvae_core import config, loader
from ssvae_core.balls import Video, simulate
from ssvae_core.batches import ssl_batches
from ssvae_core.couplings import build_coupling
from ssvae_core.encoder import centre_of_mass
from ssvae_core.frames import frames_to_tensor, resolve_device
from ssvae_core.objectives import infonce_loss
from ssvae_core.train import Run


class PairDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """(frame t, frame t + 1) as float [3, H, W] tensors, converted per item."""

    def __init__(self, frames: np.ndarray) -> None:
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames) - 1

    def __getitem__(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        def to_tensor(frame: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(frame).permute(2, 0, 1).float() / 255.0

        return to_tensor(self.frames[t]), to_tensor(self.frames[t + 1])


class PlainEncoder(nn.Module):
    """Fig. 2 in stock `torch.nn` layers: [B, 3, H, W] -> z [B, 6]."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, kernel_size=3, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.Conv2d(6, 3, kernel_size=3, padding=1),
            nn.BatchNorm2d(3),
            nn.Sigmoid(),
        )

    def forward(self, frames: Tensor) -> Tensor:
        return centre_of_mass(self.features(frames))


def straightforward(cfg: config.RunConfig, video: Video, steps: int) -> float:
    """Pairs per second of the plain loop over `steps` steps."""
    device = resolve_device(cfg.train.device)
    torch.manual_seed(cfg.train.seed)
    encoder = PlainEncoder().to(device)
    coupling = build_coupling(cfg.coupling.kind, 6, **cfg.coupling.params()).to(device)
    params = [*encoder.parameters(), *coupling.parameters()]
    optimizer = torch.optim.SGD(params, lr=cfg.train.lr)
    loader = DataLoader(
        PairDataset(video.frames), batch_size=cfg.train.batch_size, shuffle=True, drop_last=True
    )
    done, tic = 0, time.perf_counter()
    while done < steps:
        for base, target in loader:
            base, target = base.to(device), target.to(device)
            loss = infonce_loss(coupling(encoder(base), encoder(target)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            done += 1
            if done == steps:
                break
    _sync(device)
    return steps * cfg.train.batch_size / (time.perf_counter() - tic)


def ours(cfg: config.RunConfig, video: Video, steps: int) -> float:
    """Pairs per second of `ssvae_core.train`'s own step over `steps` steps (no probe)."""
    device = resolve_device(cfg.train.device)
    run = Run(cfg, frames_to_tensor(video, device), torch.from_numpy(video.positions))
    n_frames, batch = len(video.frames), cfg.train.batch_size
    negatives = cfg.objective.n_negatives

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        while True:
            yield from ssl_batches(n_frames, batch, negatives, run.generator)

    stream = batches()
    tic = time.perf_counter()
    for _ in range(steps):
        loss, _ = run.step(*next(stream))
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        run.optimizer.step()
    _sync(device)
    return steps * batch / (time.perf_counter() - tic)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def compare(preset: str, steps: int, rounds: int, device: str = "auto") -> dict[str, float]:
    """Best-of-`rounds` pairs/s of both loops on `preset`, and their ratio."""
    cfg = loader.load(preset, None, [f"train.device={device}"])
    video = simulate(cfg.data.balls, cfg.data.seed)
    loops: dict[str, Callable[[config.RunConfig, Video, int], float]] = {
        "straightforward": straightforward,
        "ssvae": ours,
    }
    best = dict.fromkeys(loops, 0.0)
    for _ in range(rounds):
        for name, loop in loops.items():
            best[name] = max(best[name], loop(cfg, video, steps))
    return {
        "pairs_per_s_straightforward": best["straightforward"],
        "pairs_per_s_ssvae": best["ssvae"],
        "speedup": best["ssvae"] / best["straightforward"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=29)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    result = compare(args.preset, args.steps, args.rounds, args.device)
    for key, value in result.items():
        print(f"{key:>28}: {value:.2f}")


if __name__ == "__main__":
    main()
