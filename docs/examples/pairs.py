"""Write a small `.npz` of pairs of known MI, in the format `ssvae mi-bench --files` reads.

x ~ N(0, I_3) and y = rho * x[:, :2] + sqrt(1 - rho^2) * eps, eps ~ N(0, I_2): x and y differ
in size (dx = 3, dy = 2), and I(x; y) = -(2 / 2) log(1 - rho^2) nats (1.02 at rho = 0.8).

    python docs/examples/pairs.py pairs.npz [--rho 0.8] [--n 4000] [--seed 0]
"""

from __future__ import annotations

import argparse
import math

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--rho", type=float, default=0.8)
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((args.n, 3))  # [n, 3]
    noise = rng.standard_normal((args.n, 2))
    y = args.rho * x[:, :2] + math.sqrt(1 - args.rho**2) * noise  # [n, 2]
    mi = -math.log(1 - args.rho**2)  # two independent coordinates, each -1/2 log(1 - rho^2)
    np.savez(args.out, x=x.astype(np.float32), y=y.astype(np.float32), mi=np.float64(mi))
    print(f"{args.out}: x [{args.n}, 3], y [{args.n}, 2], true MI {mi:.3f} nats")


if __name__ == "__main__":
    main()
