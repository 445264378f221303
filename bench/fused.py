"""Fused trials (`ssvae_core.fused`) against the same trials one after another (issue 13).

One training epoch (the product's loop: batches, encode, coupling, loss, backward, optimiser;
no probe) of K runs that differ in seed: fused as one model, against each run's own epoch on
the same device, alternating, best of `--rounds`. Aggregate pairs/s = K x pairs per epoch /
seconds; "x alone" divides by one run alone's pairs/s, so it is the throughput a device gains
by fusing K trials instead of running them back to back.

    python bench/fused.py [--preset small] [--ks 1,4,16,64] [--rounds 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch

from ssvae_core import loader
from ssvae_core.balls import Video, simulate
from ssvae_core.config import RunConfig
from ssvae_core.frames import frames_to_tensor, resolve_device
from ssvae_core.fused import fused_epoch
from ssvae_core.train import Run


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _runs(cfg: RunConfig, video: Video, k: int, device: torch.device) -> list[Run]:
    frames = frames_to_tensor(video, device)
    positions = torch.from_numpy(video.positions).to(device)
    return [
        Run(loader.from_dict({"train": {"seed": seed}}, cfg), frames, positions)
        for seed in range(k)
    ]


def pairs_per_epoch(cfg: RunConfig) -> int:
    """Training pairs in one epoch: (T - 1) // B batches of B pairs (`train.Run`)."""
    return (cfg.data.n_frames - 1) // cfg.train.batch_size * cfg.train.batch_size


def fused_pairs_per_s(cfg: RunConfig, video: Video, k: int, rounds: int) -> dict[str, float]:
    """Aggregate pairs/s of K runs fused, and of one run alone (its epoch, best of rounds)."""
    device = resolve_device(cfg.train.device)
    fused, alone = _runs(cfg, video, k, device), _runs(cfg, video, 1, device)[0]
    best_fused = best_alone = float("inf")
    for epoch in range(1, rounds + 2):  # the first round warms up, untimed
        _sync(device)
        tic = time.perf_counter()
        fused_epoch(fused, epoch)
        _sync(device)
        fused_s = time.perf_counter() - tic
        tic = time.perf_counter()
        alone.train_epoch(epoch)
        _sync(device)
        alone_s = time.perf_counter() - tic
        if epoch > 1:
            best_fused, best_alone = min(best_fused, fused_s), min(best_alone, alone_s)
    pairs = pairs_per_epoch(cfg)
    return {"fused": k * pairs / best_fused, "alone": pairs / best_alone}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--ks", default="1,4,16,64")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = loader.load(args.preset, None, [f"train.device={args.device}"])
    video = simulate(cfg.data.balls, cfg.data.seed)
    print(f"fused trials, {args.preset}, {args.device}, one torch thread, best of {args.rounds}")
    print(f"{'K':>4}  {'fused pairs/s':>14}  {'alone pairs/s':>14}  {'x alone':>8}")
    for k in (int(v) for v in args.ks.split(",")):
        r = fused_pairs_per_s(cfg, video, k, args.rounds)
        print(f"{k:>4}  {r['fused']:>14.0f}  {r['alone']:>14.0f}  {r['fused'] / r['alone']:>8.2f}")


if __name__ == "__main__":
    main()
