"""False-alarm and detection rates of the nightly decision rule, simulated on measured noise.

The rule is the product's own (`ssvae_core.sweep.nightly.compare`: `bootstrap_median_interval`,
`robust_z`, `classify`), applied to simulated nights in arrays. A night gives every cell n
seeds (train.seed 0..n-1); the baseline and the history (7 earlier nights, the baseline first)
are nights of the same code. A null night is one more such night; a worse night multiplies
every seed of a cell by 1.2 (each cell's call depends on its own values only, so scaling all
cells at once measures each cell's detection rate). Three noise models:

- ``nondeterminism`` (optimistic): bench/data/nightly-noise.csv, every nightly-small cell x
  seeds 0..9 run with torch threads 1, 2 and 3 (three summation orders; `nightly_noise.py`).
  A night draws, for each cell and seed, one of its three measured runs. Same seed, same code:
  only numerical nondeterminism moves a result (what a GPU or another CPU does to a night).
- ``seeds (nightly-small)`` (pessimistic): the same file, threads 1: the cell's 10 seed
  values. A night draws each seed's value from them with replacement: night-to-night noise
  as large as seed-to-seed spread, as if a seed pinned nothing.
- ``seeds (docs studies)`` (pessimistic, the `small` preset): the 3 per-seed values of every
  distinct cell of docs/fig1c-small.csv and docs/img/*/summary.md ("median (min-max)" of 3
  seeds, 3 significant digits), drawn the same way.

Then: the nondeterminism scaled up k times (how much noisier nights may be before the rule
breaks, per ``rel``), the other knobs (``abs_px``, ``history_z``), and the slowdown finding on
the measured trial times. Resampling from few values makes exact ties (a delta of 0) more
likely than in continuous noise: 1/3 of seed draws under nondeterminism and the docs model.

    python bench/nightly_error_rates.py            # 2000 + 2000 nights a row, ~1.5 CPU-min
    python bench/nightly_error_rates.py --smoke    # 50 nights, the first table, seconds
"""

from __future__ import annotations

import argparse
import itertools
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from ssvae_core.sweep.nightly.compare import (
    MIN_SLOWDOWN_S,
    Tolerance,
    bootstrap_median_interval,
    classify,
    compare,
    robust_z,
)

ROOT = Path(__file__).resolve().parent.parent
NOISE = ROOT / "bench" / "data" / "nightly-noise.csv"
CELL = ["method", "objective.n_negatives"]
WORSE = 1.2  # the effect to detect: a cell 20 % worse on every seed
LOOKBACK = 7
Draw = Callable[[np.random.Generator, int, int], np.ndarray]  # (rng, nights, seeds) -> [N, C, n]


def nondeterminism_runs() -> tuple[list[str], np.ndarray]:
    """Cells and their runs [C, seeds, thread counts] (px), from bench/data/nightly-noise.csv."""
    runs = pd.read_csv(NOISE, comment="#").query("repeat == 0 and status == 'ok'")
    table = runs.pivot_table(
        index=[*CELL, "train.seed"], columns="threads", values="probe_error_px"
    )
    cells = list(dict.fromkeys(f"{m}/{n}" for m, n, _ in table.index))
    return cells, table.to_numpy().reshape(len(cells), -1, table.shape[1])


def docs_seed_values() -> tuple[list[str], np.ndarray]:
    """Every distinct cell of the shipped studies with its 3 per-seed values: [C, 3] (px)."""
    found: dict[str, tuple[float, ...]] = {}
    fig1c = pd.read_csv(ROOT / "docs" / "fig1c-small.csv").query("status == 'ok'")
    for method, group in fig1c.groupby("method", sort=False):
        found[f"fig1c-small/{method}"] = tuple(np.sort(group["probe_error_px"].to_numpy()))
    triple = re.compile(r"^([\d.e+-]+) \(([\d.e+-]+)–([\d.e+-]+)\)$")  # median (min–max)
    for summary in sorted((ROOT / "docs" / "img").glob("*/summary.md")):
        for line in summary.read_text().splitlines():
            fields = [f.strip() for f in line.strip().strip("|").split("|")]
            matches = [(i, m) for i, f in enumerate(fields) if (m := triple.match(f))]
            if line.startswith("|") and matches:
                at, match = matches[0]
                median, low, high = map(float, match.groups())
                found[f"{summary.parent.name}/{'/'.join(fields[:at])}"] = (low, median, high)
    same = {tuple(float(f"{v:.3g}") for v in values): c for c, values in reversed(found.items())}
    cells = [cell for cell in found if cell in same.values()]  # a run quoted twice counts once
    return cells, np.array([found[c] for c in cells])


def from_runs(runs: np.ndarray) -> Draw:
    """Nondeterminism: each (cell, seed) takes one of its measured runs per night."""

    def draw(rng: np.random.Generator, nights: int, seeds: int) -> np.ndarray:
        pick = rng.integers(0, runs.shape[2], size=(nights, runs.shape[0], seeds))
        return np.take_along_axis(runs[None, :, :seeds, :], pick[..., None], axis=-1)[..., 0]

    return draw


def inflated(runs: np.ndarray, k: float) -> np.ndarray:
    """Runs [C, S, R] with each run's deviation from its (cell, seed)'s median run times k."""
    center = np.median(runs, axis=-1, keepdims=True)
    return np.maximum(center + k * (runs - center), 1e-3)  # px errors stay positive


def from_seeds(values: np.ndarray) -> Draw:
    """Seed spread as night noise: each seed's value drawn from the cell's values [C, V]."""

    def draw(rng: np.random.Generator, nights: int, seeds: int) -> np.ndarray:
        pick = rng.integers(0, values.shape[1], size=(nights, values.shape[0], seeds))
        return np.take_along_axis(values[None], pick.reshape(nights, values.shape[0], -1), -1)

    return draw


def intervals(
    tonight: np.ndarray,
    baseline: np.ndarray,
    resamples: int,
    rng: np.random.Generator,
    chunk: int = 100,
) -> np.ndarray:
    """The px and rel intervals of the median paired delta: [N, C, n] x 2 -> [2, N, C, 2]."""
    delta = tonight - baseline
    paired = np.stack([delta, delta / baseline])  # [2, N, C, n]
    parts = range(0, delta.shape[0], chunk)  # bounded memory: [2, chunk, C, resamples]
    return np.concatenate(
        [bootstrap_median_interval(paired[:, i : i + chunk], resamples, rng) for i in parts], 1
    )


def calls(
    tonight: np.ndarray, ci: np.ndarray, earlier: list[np.ndarray], tol: Tolerance
) -> np.ndarray:
    """The rule's call per night and cell [N, C], given the intervals `ci` and the earlier
    nights (newest first, [N, C, n] each) whose medians make the history."""
    past = np.stack([np.median(n, axis=-1) for n in earlier] or [np.empty(0)], -1)
    past = past.reshape(*tonight.shape[:2], len(earlier))  # [N, C, K]
    return classify(ci[0], ci[1], robust_z(np.median(tonight, axis=-1), past, tol), tol)


def rates(
    draw: Draw,
    seeds: int,
    tols: list[Tolerance],
    nights: int,
    resamples: int,
    seed: int,
    histories: tuple[int, ...] = (0, LOOKBACK),
) -> list[dict[str, object]]:
    """One row per tolerance and history length: the rule's measured rates."""
    rng = np.random.default_rng(seed)
    earlier = [draw(rng, nights, seeds) for _ in range(LOOKBACK)]  # earlier[0]: the baseline
    null, worse = draw(rng, nights, seeds), WORSE * draw(rng, nights, seeds)
    ci_null = intervals(null, earlier[0], resamples, rng)
    ci_worse = intervals(worse, earlier[0], resamples, rng)
    rows: list[dict[str, object]] = []
    for tol, history in itertools.product(tols, histories):
        on_null = calls(null, ci_null, earlier[:history], tol)
        detected = (calls(worse, ci_worse, earlier[:history], tol) == "regression").mean(axis=0)
        rows.append(
            {
                "rel": f"{tol.rel:.0%}",
                "z": f"{tol.history_z:g}",
                "seeds": seeds,
                "history": f"{history} nights" if history else "none",
                "false regression / cell-night": (on_null == "regression").mean(),
                "false improvement / cell-night": (on_null == "improvement").mean(),
                "nights with a false regression": (on_null == "regression").any(axis=1).mean(),
                "detection (mean over cells)": detected.mean(),
                "detection (worst cell)": detected.min(),
            }
        )
    return rows


def slowdown_rates(
    seconds: np.ndarray, ratios: list[float], nights: int, seed: int
) -> list[dict[str, object]]:
    """The slowdown finding's rates on measured trial times [C, V]: 3 paired seeds a night,
    each seed's time drawn from the cell's V measured times; detection of a 2x slowdown."""
    rng = np.random.default_rng(seed)
    before, now = (from_seeds(seconds)(rng, nights, 3) for _ in range(2))

    def flagged(tonight: np.ndarray, ratio: float) -> np.ndarray:  # [N, C]
        a, b = np.median(tonight, axis=-1), np.median(before, axis=-1)
        return (a / b > ratio) & (a - b >= MIN_SLOWDOWN_S)

    long = np.median(seconds, axis=1) >= 2 * MIN_SLOWDOWN_S  # doubling them adds enough
    rows: list[dict[str, object]] = []
    for ratio in ratios:
        null, slow = flagged(now, ratio).mean(axis=0), flagged(2 * now, ratio).mean(axis=0)
        rows.append(
            {
                "slowdown ratio": f"x{ratio:g}",
                "false slowdown / cell-night": null.mean(),
                "worst cell": null.max(),
                f"2x detected ({long.sum()} cells >= 1 s)": slow[long].mean(),
                "2x detected (worst of them)": slow[long].min(),
            }
        )
    return rows


def check_against_compare(
    draw: Draw, cells: list[str], tol: Tolerance, seed: int, count: int = 20
) -> int:
    """The array path's calls equal `compare()`'s on simulated 3-seed nights; nights checked."""
    rng = np.random.default_rng(seed)
    nights = [draw(rng, count, 3) for _ in range(LOOKBACK + 1)]
    tonight = nights[0] * WORSE ** rng.integers(0, 2, size=(count, len(cells), 1))
    fast = calls(tonight, intervals(tonight, nights[1], 2000, rng), nights[1:], tol)
    for i in range(count):

        def table(values: np.ndarray, i: int = i) -> pd.DataFrame:
            return pd.DataFrame(
                [
                    {
                        "cell": c,
                        "train.seed": s,
                        "status": "ok",
                        "probe_error_px": values[i, k, s],
                        "seconds": 1.0,
                    }
                    for k, c in enumerate(cells)
                    for s in range(3)
                ]
            )

        history = [table(n) for n in nights[1:]]
        result = compare(table(tonight), history[0], history, ["cell"], ["train.seed"], tol)
        assert list(fast[i]) == list(result.cells["finding"]), (i, fast[i], result.cells)
    return count


def markdown(table: pd.DataFrame) -> str:
    """A pandas table as a GitHub markdown table (rates as percentages)."""
    cells = [[f"{v:.2%}" if isinstance(v, float) else str(v) for v in row] for row in table.values]
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def describe_noise(runs: np.ndarray, docs: np.ndarray) -> str:
    """How big the measured noise is: same-seed changes (px and relative) and seed spread."""
    a, b = runs[:, :, :, None], runs[:, :, None, :]
    pairs = np.triu(np.ones(runs.shape[2], bool), 1)  # each pair of thread counts once
    delta, rel = np.abs(a - b)[..., pairs], np.abs(a / b - 1)[..., pairs]
    spread = lambda v: np.median(v.std(axis=1, ddof=1) / np.median(v, axis=1))  # noqa: E731
    return (
        f"nondeterminism: {runs.shape[0]} cells x {runs.shape[1]} seeds x {runs.shape[2]} thread "
        f"counts; same-seed |delta| median {np.median(delta):.2g} px, 99th percentile "
        f"{np.quantile(delta, 0.99):.2g} px, max {delta.max():.3g} px; relative median "
        f"{np.median(rel):.2%}, 99th percentile {np.quantile(rel, 0.99):.2%}, max {rel.max():.2%}"
        f"\nseed spread (std / median, median over cells): nightly-small "
        f"{spread(runs[:, :, 0]):.0%}, docs studies {spread(docs):.0%} ({docs.shape[0]} cells)"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nights", type=int, default=2000, help="null and worse nights each")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="50 nights, 3 seeds, one table")
    args = parser.parse_args(argv)
    nights, seed_counts = (50, (3,)) if args.smoke else (args.nights, (3, 5, 10))
    tol = Tolerance()
    cells, runs = nondeterminism_runs()
    _, docs = docs_seed_values()
    models = {
        "nondeterminism": from_runs(runs),
        "seeds (nightly-small)": from_seeds(runs[:, :, 0]),
        "seeds (docs studies)": from_seeds(docs),
    }
    checked = sum(
        check_against_compare(d, cells, tol, args.seed, 5 if args.smoke else 20)
        for d in list(models.values())[:2]
    )
    print(describe_noise(runs, docs))
    print(f"compare() makes the same calls as the array path on {checked} simulated nights")
    print(
        f"{tol}; {args.resamples} resamples; {nights} null + {nights} worse nights a row; "
        f"rng seed {args.seed}\n"
    )
    rows = [
        {"noise": name, **row}
        for name, draw in models.items()
        for seeds in seed_counts + ((20, 30) if name.startswith("seeds") and not args.smoke else ())
        for row in rates(draw, seeds, [tol], nights, args.resamples, args.seed)
    ]
    print(markdown(pd.DataFrame(rows).drop(columns=["rel", "z"])))
    if args.smoke:
        return
    rates_only = [
        "false regression / cell-night",
        "nights with a false regression",
        "detection (mean over cells)",
        "detection (worst cell)",
    ]
    print(
        "\nHow much noisier than measured may nights be? Each run's deviation from its (cell, "
        "seed)'s median run times k; 3 seeds, no history (abs_px 0.05, z 3):\n"
    )
    rows = [
        {"k": f"x{k:g}", **row}
        for k in (1, 3, 10, 20, 30)
        for rel in (0.03, 0.05, 0.10, 0.15)
        for row in rates(
            from_runs(inflated(runs, k)),
            3,
            [Tolerance(rel=rel)],
            nights,
            args.resamples,
            args.seed,
            histories=(0,),
        )
    ]
    print(markdown(pd.DataFrame(rows)[["k", "rel", *rates_only]]))
    print(
        "\nThe other knobs, 3 seeds (rel 5 %): abs_px on the nondeterminism, no history; "
        "history_z on the nightly-small seed spread with 7 nights of history:\n"
    )
    knobs = [("nondeterminism", Tolerance(abs_px=a), 0) for a in (0.01, 0.05, 0.2, 0.5)]
    knobs += [("seeds (nightly-small)", Tolerance(history_z=z), LOOKBACK) for z in (2, 3, 5)]
    rows = [
        {"noise": name, "abs_px": f"{t.abs_px:g}", **row}
        for name, t, history in knobs
        for row in rates(
            models[name], 3, [t], nights, args.resamples, args.seed, histories=(history,)
        )
    ]
    print(markdown(pd.DataFrame(rows)[["noise", "abs_px", "z", *rates_only]]))
    times = pd.read_csv(NOISE, comment="#").query("threads == 1")
    seconds = np.stack([g["seconds"].to_numpy() for _, g in times.groupby(CELL, sort=False)])
    print(
        f"\nSlowdown on the {seconds.shape[1]} measured threads=1 times of each cell, 3 paired "
        f"seeds a night; a finding also needs +{MIN_SLOWDOWN_S:g} s a trial, which exempts "
        "cells of shorter trials (untrained, 0.03 s) from detection:\n"
    )
    print(markdown(pd.DataFrame(slowdown_rates(seconds, [1.3, 1.5, 2.0], nights, args.seed))))


if __name__ == "__main__":
    main()
