"""Measure the night-to-night noise of `sweeps/nightly-small.yaml` on CPU (no Ray, no MLflow).

On CPU a trial is bit-deterministic for a seed and a torch thread count, so the same code run
twice gives a paired delta of exactly 0. What does move a result without a code change is the
order of floating-point sums: another thread count, another CPU's kernels, or GPU kernels.
This script runs every cell of the nightly-small grid for seeds 0..9 under several thread
counts (each a different summation order) and writes one row per run:

    method, objective.n_negatives, train.seed, threads, repeat, status, probe_error_px, seconds

``repeat = 1`` rows rerun threads = 1 for a few seeds: the same-code check (delta exactly 0).
The configs are the sweep's own (`SweepSpec.trial_config`), with ``train.seed`` widened.

    python bench/nightly_noise.py --out bench/data/nightly-noise.csv   # about 15 min, 2 cores
    python bench/nightly_noise.py --smoke                              # one cell, one seed
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from ssvae_core.balls import simulate
from ssvae_core.sweep import spec as sweep_spec
from ssvae_core.train import fit

SPEC = Path(__file__).resolve().parent.parent / "sweeps" / "nightly-small.yaml"


def measure(
    seeds: list[int], threads: list[int], repeat_seeds: list[int], smoke: bool
) -> pd.DataFrame:
    """One row per (cell, seed, thread count[, repeat]) run of the nightly-small grid."""
    spec = sweep_spec.load(SPEC)
    cells = [dict(c.params) for c in spec.cells if dict(c.params)["train.seed"] == 0]
    if smoke:
        cells, seeds, threads, repeat_seeds = cells[:1], seeds[:1], threads[:1], []
    video = simulate(spec.base.data.balls, spec.base.data.seed)
    runs = [(t, s, 0) for t in threads for s in seeds] + [(1, s, 1) for s in repeat_seeds]
    rows = []
    for n_threads, seed, repeat in runs:
        torch.set_num_threads(n_threads)
        for params in cells:
            params = {**params, "train.seed": seed}
            cfg = spec.trial_config(params)
            start = time.perf_counter()
            result = fit(cfg, video=video)
            seconds = time.perf_counter() - start
            ok = result.status == "ok"
            rows.append(
                {
                    **params,
                    "threads": n_threads,
                    "repeat": repeat,
                    "status": result.status,
                    "probe_error_px": result.probe_error_px if ok else math.nan,
                    "seconds": round(seconds, 3),
                }
            )
            print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--repeat-seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--out", default=None, help="CSV path (default: print only)")
    parser.add_argument("--smoke", action="store_true", help="one cell, one seed, one count")
    args = parser.parse_args(argv)
    table = measure(args.seeds, args.threads, args.repeat_seeds, args.smoke)
    if args.out:
        command = shlex.join(["python", "bench/nightly_noise.py", *(argv or sys.argv[1:])])
        with open(args.out, "w") as fh:
            fh.write(f"# {command}  (torch {torch.__version__}, {time.strftime('%Y-%m-%d')})\n")
            table.to_csv(fh, index=False, float_format="%.17g")
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
