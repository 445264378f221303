"""The core's benchmarks in one run, a table printed last (``make bench``).

- video: time to simulate and render the paper-size video (900 × 256 × 256);
- trainer: pairs per second of `ssvae_core.train` against a straightforward PyTorch loop
  (`bench/trainer.py`), at the `small` and `paper` presets, measured side by side;
- memory: peak resident memory (VmHWM) of one epoch of `fit` per preset, each in a fresh process;
- the whole `ssvae train` process against a plain PyTorch script, cold start to printed
  metrics (`bench/whole_run.py`; `small`, 5 epochs);
- levers: the batch norm's rows path, the host allocator, `torch.compile`, the probe's
  batch, oneDNN's instruction set (not kept), the C convolutions, the C batch norm and
  ReLU, the first ReLU's output not kept for the backward, start-up
  (`bench/levers.py`).
- fused trials: K = 1, 4, 16, 64 runs of `small` as one model against one run alone
  (`bench/fused.py`; one epoch each, after a warm-up epoch).

    python bench/run.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from bench_video import bench_video
from fused import fused_pairs_per_s
from levers import (
    allocator,
    batch_norm,
    compiled,
    conv_isa,
    native_batch_norm,
    native_conv,
    probe_batch,
    relu_input,
    start_up,
)
from trainer import compare
from whole_run import compare as compare_whole

from ssvae_core import loader
from ssvae_core.balls import simulate

PEAK_RSS = """
import json, sys, torch
from ssvae_core import loader
from ssvae_core.train import fit
cfg = loader.load(sys.argv[1], None, ["train.epochs=1", "train.device=" + sys.argv[2]])
fit(cfg)
# VmHWM, this process's own peak: ru_maxrss would report the parent's size at the fork
peak = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024
cuda = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0
print(json.dumps({"peak_rss_mib": peak, "peak_cuda_mib": cuda}))
"""


def peak_memory(preset: str, device: str) -> dict[str, float]:
    """Peak memory of one epoch of `fit` in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, preset, device],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and rounds")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    rows: list[tuple[str, str]] = []
    video = bench_video()
    rows += [(f"video paper-size {k}", f"{v:.3f}") for k, v in video.items()]
    for preset, steps in (("small", 29), ("paper", 4)):
        steps = max(2, steps // 3) if args.quick else steps
        result = compare(preset, steps, rounds=2 if args.quick else 3, device=args.device)
        rows += [(f"trainer {preset} {k}", f"{v:.2f}") for k, v in result.items()]
        print(f"[bench] trainer {preset}: {result}", file=sys.stderr, flush=True)
    whole = compare_whole(epochs=2 if args.quick else 5, rounds=1 if args.quick else 3)
    rows += [(f"whole run small {k}", f"{v:.2f}") for k, v in whole.items()]
    print(f"[bench] whole run: {whole}", file=sys.stderr, flush=True)
    for preset in ("small", "paper"):
        memory = peak_memory(preset, args.device)
        rows += [(f"memory {preset} {k}", f"{v:.0f}") for k, v in memory.items()]
    torch.set_num_threads(1)
    lever_rows = {**batch_norm(2 if args.quick else 5), **compiled(2 if args.quick else 5)}
    presets = (("small", 10), ("paper", 2)) if args.quick else (("small", 29), ("paper", 3))
    lever_rows |= allocator(1 if args.quick else 3, presets)
    lever_rows |= probe_batch(1 if args.quick else 3) | conv_isa(1 if args.quick else 3)
    lever_rows |= native_conv(2 if args.quick else 5)
    lever_rows |= native_batch_norm(2 if args.quick else 5)
    lever_rows |= relu_input(1 if args.quick else 3, 2 if args.quick else 4)
    rows += [(f"lever {k}", f"{v:.4g}") for k, v in {**lever_rows, **start_up(3)}.items()]
    small = loader.load("small", None, ["train.device=cpu"])
    small_video = simulate(small.data.balls, small.data.seed)
    for k in (1, 4) if args.quick else (1, 4, 16, 64):
        r = fused_pairs_per_s(small, small_video, k, rounds=1)
        pairs = f"{r['fused']:.0f} / {r['alone']:.0f}"
        rows.append((f"fused small K={k}: pairs/s fused / alone", pairs))
        rows.append((f"fused small K={k}: x alone", f"{r['fused'] / r['alone']:.2f}"))
        print(f"[bench] fused K={k}: {r}", file=sys.stderr, flush=True)
    width = max(len(k) for k, _ in rows)
    print(f"\n{'benchmark':<{width}}  value")
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
