"""Time the paper-size moving-balls video (900 frames of 256×256, section 4 of the paper).

Run: ``python bench/bench_video.py``. Reports best-of-3 seconds for the physics
(`simulate_positions`), the renderer (`render`) and the whole `simulate`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ssvae_core.balls import BallsConfig, ball_colours, render, simulate, simulate_positions


def _best_of(repeats: int, work: Callable[[], object]) -> float:
    """Fewest wall-clock seconds of ``repeats`` calls to ``work``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def bench_video(repeats: int = 3, seed: int = 0) -> dict[str, float]:
    """Best-of-``repeats`` seconds for the paper-size video: physics, render and simulate."""
    cfg = BallsConfig()
    positions, _ = simulate_positions(cfg, seed)  # [T, n_balls, 2]
    colours = ball_colours(cfg.n_balls)
    return {
        "physics_s": _best_of(repeats, lambda: simulate_positions(cfg, seed)),
        "render_s": _best_of(repeats, lambda: render(positions, cfg.size, cfg.diameter, colours)),
        "simulate_s": _best_of(repeats, lambda: simulate(cfg, seed)),
    }


if __name__ == "__main__":
    cfg = BallsConfig()
    print(f"moving balls, {cfg.n_frames}×{cfg.size}×{cfg.size}, {cfg.n_balls} balls, best of 3")
    for name, seconds in bench_video().items():
        print(f"  {name:<12} {seconds:8.3f}")
