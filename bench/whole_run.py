"""What the user waits for: the whole `ssvae train` process against a plain PyTorch script.

Both processes start cold, simulate the same video, train the same Fig. 2 network with the
same coupling (Gaussian), loss, optimiser and epochs at the `small` preset, probe every
``probe.every_epochs`` epochs and at the end, and print their metrics. The plain script is
what one writes first with stock PyTorch (`trainer.PlainEncoder`, a `DataLoader` of pairs,
`numpy.linalg.lstsq` for the probe) and PyTorch's default thread count, as `ssvae train`
uses. Wall time of each process, rounds alternating, best of `--rounds`.

    python bench/whole_run.py [--epochs 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
PLAIN = """
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import torch
from torch.utils.data import DataLoader

from trainer import PairDataset, PlainEncoder
from ssvae_core import loader
from ssvae_core.balls import simulate
from ssvae_core.couplings import build_coupling
from ssvae_core.objectives import infonce_loss

epochs = int(sys.argv[2])
cfg = loader.load("small", None, ["coupling.kind=gaussian", "train.device=cpu"])
video = simulate(cfg.data.balls, cfg.data.seed)
torch.manual_seed(cfg.train.seed)
encoder = PlainEncoder()
coupling = build_coupling("gaussian", 6, **cfg.coupling.params())
optimizer = torch.optim.SGD([*encoder.parameters(), *coupling.parameters()], lr=cfg.train.lr)
pairs = DataLoader(PairDataset(video.frames), batch_size=cfg.train.batch_size, shuffle=True,
                   drop_last=True)
frames = torch.from_numpy(video.frames).permute(0, 3, 1, 2).float() / 255.0
rng = np.random.default_rng(cfg.train.seed)
order = rng.permutation(len(frames))
train, test = order[: int(0.8 * len(frames))], order[int(0.8 * len(frames)) :]


def probe():
    encoder.eval()
    with torch.no_grad():
        z = torch.cat([encoder(chunk) for chunk in frames.split(256)]).numpy()
    encoder.train()
    features = np.hstack([z, np.ones((len(z), 1))])
    targets = video.positions.reshape(len(z), -1)
    weights, *_ = np.linalg.lstsq(features[train], targets[train], rcond=None)
    residual = (features[test] @ weights - targets[test]).reshape(len(test), -1, 2)
    return float(np.linalg.norm(residual, axis=2).mean())


for epoch in range(1, epochs + 1):
    for base, target in pairs:
        loss = infonce_loss(coupling(encoder(base), encoder(target)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if epoch % cfg.probe.every_epochs == 0 or epoch == epochs:
        print(f"epoch {epoch}: loss {loss.item():.3f}, probe {probe():.2f} px")
"""


def _wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def compare(epochs: int, rounds: int) -> dict[str, float]:
    """Best-of-`rounds` wall seconds of both processes and plain / ssvae."""
    ours = [sys.executable, "-m", "ssvae_core.cli", "train", "--preset", "small", "--quiet"]
    ours += ["--set", "coupling.kind=gaussian", "--set", f"train.epochs={epochs}"]
    ours += ["--set", "train.device=cpu"]
    plain = [sys.executable, "-c", PLAIN, str(BENCH), str(epochs)]
    best = {"plain": float("inf"), "ssvae": float("inf")}
    for _ in range(rounds):
        best["plain"] = min(best["plain"], _wall(plain))
        best["ssvae"] = min(best["ssvae"], _wall(ours))
    return {
        "plain script s": best["plain"],
        "ssvae train s": best["ssvae"],
        "speedup (plain / ssvae)": best["plain"] / best["ssvae"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for key, value in compare(args.epochs, args.rounds).items():
        print(f"{key:>24}: {value:.2f}")


if __name__ == "__main__":
    main()
