"""The nightly comparison: exact values on hand-made nights, and slow references from the
definitions (docs/nightly-statistics.md). Each check is paired with an input that makes it
fail, so it is shown able to."""

from __future__ import annotations

import math
import statistics
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from ssvae_core.sweep.nightly import compare as nightly
from ssvae_core.sweep.nightly.compare import Tolerance, compare

AXES = ["method", "objective.n_negatives"]
SEEDS = ["train.seed"]
BASE = {("gaussian", 8): [1.0, 2.0, 4.0], ("bilinear", 29): [6.0, 5.0, 7.0]}


def night(
    values: dict[tuple[str, int], list[float]],
    status: dict[tuple[str, int, int], str] | None = None,
    seconds: float = 10.0,
) -> pd.DataFrame:
    """A trials table: one row per (cell, seed); `status` overrides (cell..., seed) -> status."""
    rows = []
    for (method, n), errors in values.items():
        for seed, px in enumerate(errors):
            state = (status or {}).get((method, n, seed), "ok")
            rows.append({
                "method": method, "objective.n_negatives": n, "train.seed": seed,
                "status": state, "probe_error_px": px if state == "ok" else math.nan,
                "seconds": seconds,
            })  # fmt: skip
    return pd.DataFrame(rows)


def scaled(factor: float, cell: tuple[str, int] = ("gaussian", 8)) -> pd.DataFrame:
    return night({**BASE, cell: [factor * v for v in BASE[cell]]})


def run(
    tonight: pd.DataFrame, baseline: pd.DataFrame | None = None, history: int = 0, **kw: Any
) -> nightly.Comparison:
    baseline = night(BASE) if baseline is None else baseline
    """Tonight against `baseline` (default: BASE), with `history` copies of it as history."""
    return compare(tonight, baseline, [baseline] * history, AXES, SEEDS, **kw)


def by_cell(result: nightly.Comparison) -> pd.DataFrame:
    return result.cells.set_index("cell")


def test_identical_nights_pass_with_every_delta_exactly_zero() -> None:
    result = run(night(BASE), history=7)
    assert result.verdict == "pass" and result.findings == []
    cells = by_cell(result)
    assert list(cells.index) == ["gaussian/8", "bilinear/29"]
    for column in ("delta_px", "delta_low", "delta_high", "rel_delta", "rel_low", "rel_high"):
        assert (cells[column] == 0.0).all(), column
    assert list(cells["n_pairs"]) == [3, 3] and list(cells["history_z"]) == [0.0, 0.0]
    assert list(cells["finding"]) == ["pass", "pass"]
    # able to fail: a change in the 12th digit is seen as a nonzero delta (and still a pass)
    nudged = night({**BASE, ("gaussian", 8): [1.0, 2.0 + 1e-12, 4.0]})
    moved = by_cell(run(nudged)).loc["gaussian/8"]
    assert moved["delta_high"] > 0 and run(nudged).verdict == "pass"


def test_a_cell_20_percent_worse_on_every_seed_is_a_regression() -> None:
    result = run(scaled(1.2))
    assert result.verdict == "regression"
    cell = by_cell(result).loc["gaussian/8"]
    assert cell["delta_px"] == pytest.approx(0.4)  # deltas 0.2, 0.4, 0.8
    assert (cell["delta_low"], cell["delta_high"]) == pytest.approx((0.2, 0.8))  # n=3: [min, max]
    assert (cell["rel_low"], cell["rel_high"]) == pytest.approx((0.2, 0.2))
    assert (
        cell["finding"] == "regression" and by_cell(result).loc["bilinear/29", "finding"] == "pass"
    )
    [finding] = result.findings
    assert (finding.kind, finding.cell, finding.severity) == (
        "regression",
        "gaussian/8",
        "regression",
    )
    assert finding.text.startswith("regression gaussian/8: +0.4 px (+20.0%)")
    for part in ("[+0.2, +0.8] px", "95% percentile bootstrap", "10000 resamples, seed 0",
                 "tolerance 0.05 px and 5%", "no history"):  # fmt: skip
        assert part in finding.text, part


@pytest.mark.parametrize(
    ("tonight", "verdict"),
    [
        (scaled(0.8), "improvement"),
        (scaled(1.04), "pass"),  # within the 5 % tolerance
        (scaled(0.96), "pass"),
        (night({**BASE, ("gaussian", 8): [1.2, 2.4, 4.0]}), "pass"),  # one seed unchanged
        (night({**BASE, ("gaussian", 8): [1.2, 2.4, 4.12]}), "pass"),  # one seed +3 %
    ],
)
def test_the_rule_needs_every_seed_beyond_both_tolerances(
    tonight: pd.DataFrame, verdict: str
) -> None:
    assert run(tonight).verdict == verdict


def test_absolute_tolerance_guards_near_perfect_cells() -> None:
    tiny = {("gaussian", 8): [0.1, 0.1, 0.1]}
    assert run(night({("gaussian", 8): [0.14] * 3}), night(tiny)).verdict == "pass"  # +0.04 px
    assert run(night({("gaussian", 8): [0.16] * 3}), night(tiny)).verdict == "regression"
    # +40 % on every seed, but two seeds move by only 0.04 px: the px interval's low end decides
    mixed = {("gaussian", 8): [0.1, 0.1, 1.0]}
    assert run(night({("gaussian", 8): [0.14, 0.14, 1.4]}), night(mixed)).verdict == "pass"


def test_improvement_names_the_cell_and_its_interval() -> None:
    [finding] = run(scaled(0.8)).findings
    assert finding.kind == "improvement" and finding.text.startswith(
        "improvement gaussian/8: -0.4 px"
    )
    assert "[-0.8, -0.2] px" in finding.text


@pytest.mark.parametrize(
    ("state", "kind", "verdict"),
    [("diverged", "failed", "regression"), ("error", "failed", "regression"),
     ("stopped", "lost", "pass")],
)  # fmt: skip
def test_seeds_that_stop_being_ok(state: str, kind: str, verdict: str) -> None:
    result = run(night(BASE, {("gaussian", 8, 1): state}))
    assert result.verdict == verdict
    [finding] = result.findings
    assert (finding.kind, finding.cell) == (kind, "gaussian/8")
    assert f"seed 1 {state} tonight, ok in the baseline" in finding.text
    assert by_cell(result).loc["gaussian/8", "n_pairs"] == 2
    # able to fail: diverged in both nights is nothing new
    both = night(BASE, {("gaussian", 8, 1): state})
    assert run(both, both).findings == []


def test_a_seed_absent_tonight_is_lost() -> None:
    tonight = night(BASE).query("not (method == 'gaussian' and `train.seed` == 2)")
    [finding] = run(tonight).findings
    assert (finding.kind, finding.text) == (
        "lost",
        "lost gaussian/8: seed 2 absent tonight, ok in the baseline",
    )


def test_missing_and_new_cells() -> None:
    tonight = night({("gaussian", 8): BASE[("gaussian", 8)], ("laplace", 8): [3.0, 3.0, 3.0]})
    result = run(tonight)
    kinds = {(f.kind, f.cell, f.severity) for f in result.findings}
    assert kinds == {("new", "laplace/8", "info"), ("missing", "bilinear/29", "warning")}
    assert result.verdict == "pass"
    assert list(result.cells["cell"]) == ["gaussian/8", "laplace/8", "bilinear/29"]
    assert by_cell(result).loc["bilinear/29", "method"] == "bilinear"
    nothing = run(night(BASE).iloc[:0])  # a night with no trials: every cell missing
    assert [f.kind for f in nothing.findings] == ["missing", "missing"]


def test_slowdown_is_its_own_finding_and_tiny_trials_are_not_slow() -> None:
    result = run(night(BASE, seconds=25.0), night(BASE, seconds=10.0))
    assert result.verdict == "pass"
    assert {f.kind for f in result.findings} == {"slowdown"}
    assert "x2.50 (10 s -> 25 s) over 3 paired seeds; tolerance x1.5" in result.findings[0].text
    assert list(result.cells["seconds_ratio"]) == [2.5, 2.5]
    assert run(night(BASE, seconds=14.0), night(BASE, seconds=10.0)).findings == []  # x1.4
    assert run(night(BASE, seconds=0.09), night(BASE, seconds=0.03)).findings == []  # +0.06 s


def test_flat_history_has_mad_zero_and_the_floor_keeps_z_finite() -> None:
    result = run(scaled(1.2), history=7)
    cell = by_cell(result).loc["gaussian/8"]
    # history medians all 2.0, MAD 0: scale = max(0.05, 0.05 * 2.0) / 3; tonight median 2.4
    assert cell["history_z"] == pytest.approx(0.4 / (0.1 / 3)) and cell["history_nights"] == 7
    assert (
        result.verdict == "regression"
        and "history z +12.00 over 7 nights" in result.findings[0].text
    )


def test_a_cell_as_noisy_as_its_history_is_within_history() -> None:
    history = [night({**BASE, ("gaussian", 8): [f * v for v in BASE[("gaussian", 8)]]})
               for f in (1.0, 1.3, 0.7, 1.25, 0.75)]  # fmt: skip
    result = compare(scaled(1.2), history[0], history, AXES, SEEDS)
    cell = by_cell(result).loc["gaussian/8"]
    # medians 2.0, 2.6, 1.4, 2.5, 1.5: median 2.0, MAD 0.5; z = 0.4 / (1.4826 * 0.5)
    assert cell["history_z"] == pytest.approx(0.4 / (1.4826 * 0.5))
    assert result.verdict == "pass" and [f.kind for f in result.findings] == ["within_history"]


def test_fewer_than_three_nights_of_history_give_no_z() -> None:
    result = run(scaled(1.2), history=2)
    assert math.isnan(by_cell(result).loc["gaussian/8", "history_z"])
    assert result.verdict == "regression"
    # a cell counts only the nights it ran: bilinear/29 is absent from two of four
    without = night({("gaussian", 8): BASE[("gaussian", 8)]})
    history = [night(BASE), without, without, night(BASE)]
    cells = by_cell(compare(scaled(1.2), history[0], history, AXES, SEEDS))
    assert list(cells["history_nights"]) == [4, 2] and math.isnan(
        cells.loc["bilinear/29", "history_z"]
    )
    assert cells.loc["gaussian/8", "history_z"] == pytest.approx(12.0)


def test_first_night_is_the_baseline() -> None:
    result = compare(night(BASE), None, [], AXES, SEEDS)
    assert result.verdict == "baseline" and result.findings == []
    assert result.cells["delta_px"].isna().all() and list(result.cells["tonight_px"]) == [2.0, 6.0]


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="lacks column 'seconds'"):
        compare(night(BASE).drop(columns="seconds"), None, [], AXES, SEEDS)
    with pytest.raises(ValueError, match="cell gaussian/8 has seed 0 twice"):
        compare(pd.concat([night(BASE), night(BASE).iloc[:1]]), None, [], AXES, SEEDS)
    with pytest.raises(ValueError, match=r"nightly.tolerance.slowdown must be > 1"):
        Tolerance(slowdown=0.9)


# --- slow references, straight from the definitions -------------------------------------


def reference_interval(
    values: list[float], picks: np.ndarray, confidence: float
) -> tuple[float, float]:
    """Bootstrap by definition: each resample's median, then the percentiles (linear)."""
    ordered = sorted(values)
    medians = sorted(statistics.median([ordered[p] for p in row]) for row in picks)

    def percentile(q: float) -> float:
        h = (len(medians) - 1) * q
        below = math.floor(h)
        above = min(below + 1, len(medians) - 1)
        return medians[below] + (h - below) * (medians[above] - medians[below])

    return percentile((1 - confidence) / 2), percentile((1 + confidence) / 2)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 10])
def test_bootstrap_matches_the_definition(n: int) -> None:
    values = np.random.default_rng(n).lognormal(size=n)
    fast = nightly.bootstrap_median_interval(values, 500, np.random.default_rng(7), 0.9)
    picks = np.random.default_rng(7).integers(0, n, size=(500, n))  # the same draws
    assert tuple(fast) == pytest.approx(reference_interval(list(values), picks, 0.9), abs=1e-12)
    # able to fail: the mean's bootstrap is another interval
    means = sorted(np.mean(np.sort(values)[row]) for row in picks)
    if n > 2:
        assert fast[0] != pytest.approx(float(np.quantile(means, 0.05)), abs=1e-6)


def test_three_seeds_collapse_to_min_and_max() -> None:
    values = np.array([0.3, -0.1, 0.7])
    interval = nightly.bootstrap_median_interval(values, 10_000, np.random.default_rng(0))
    assert tuple(interval) == (-0.1, 0.7)


def reference_z(tonight: float, medians: list[float], tol: Tolerance) -> float:
    if len(medians) < 3:
        return math.nan
    center = statistics.median(medians)
    mad = statistics.median(abs(m - center) for m in medians)
    floor = max(tol.abs_px, tol.rel * abs(center)) / tol.history_z
    return (tonight - center) / max(1.4826 * mad, floor)


def test_compare_matches_a_slow_reference_on_random_nights() -> None:
    rng = np.random.default_rng(3)
    cells = {(m, n): list(rng.lognormal(1.0, 0.5, 4)) for m in ("a", "b", "c") for n in (8, 29)}
    nights = [night({c: list(np.array(v) * rng.lognormal(0, 0.1, 4)) for c, v in cells.items()},
                    {("b", 8, 3): "diverged"} if i == 0 else None) for i in range(6)]  # fmt: skip
    tonight, history = nights[0], nights[1:]
    result = compare(tonight, history[0], history, AXES, SEEDS, resamples=300, seed=5)
    tol = Tolerance()
    for (method, n), _ in cells.items():
        label = f"{method}/{n}"
        row = by_cell(result).loc[label]
        px = {int(s): v for s, v in zip(*_seed_values(tonight, method, n), strict=True)}
        base = dict(zip(*_seed_values(history[0], method, n), strict=True))
        seeds = sorted(set(px) & set(base))
        deltas = [px[s] - base[s] for s in seeds]
        assert row["n_pairs"] == len(seeds) and row["delta_px"] == pytest.approx(
            statistics.median(deltas)
        )
        assert row["rel_delta"] == pytest.approx(
            statistics.median(d / base[s] for d, s in zip(deltas, seeds, strict=True))
        )
        rng_cell = np.random.default_rng([5, zlib.crc32(label.encode())])
        picks = rng_cell.integers(0, len(seeds), size=(300, len(seeds)))
        low, high = reference_interval(deltas, picks, 0.95)
        assert (row["delta_low"], row["delta_high"]) == pytest.approx((low, high))
        medians = [statistics.median(_seed_values(h, method, n)[1]) for h in history]
        assert row["history_z"] == pytest.approx(
            reference_z(statistics.median(px.values()), medians, tol)
        )


def _seed_values(trials: pd.DataFrame, method: str, n: int) -> tuple[list[int], list[float]]:
    ok = trials.query("method == @method and `objective.n_negatives` == @n and status == 'ok'")
    return list(ok["train.seed"]), list(ok["probe_error_px"])


def test_robust_z_by_hand() -> None:
    tol = Tolerance()
    # history 1, 2, 3, 4, 100: median 3, MAD 1 (a far night does not move it)
    z = nightly.robust_z(np.array(6.0), np.array([1.0, 2.0, 3.0, 4.0, 100.0]), tol)
    assert float(z) == pytest.approx(3 / 1.4826)
    assert np.isnan(nightly.robust_z(np.array(6.0), np.array([1.0, np.nan, 3.0]), tol))


# --- real trials: bench/data/nightly-noise.csv (nightly-small on CPU) --------------------

NOISE = Path(__file__).resolve().parents[2] / "bench" / "data" / "nightly-noise.csv"


def measured_night(threads: int, repeat: int = 0) -> pd.DataFrame:
    runs = pd.read_csv(NOISE, comment="#").query("`train.seed` < 3")
    return runs.query("threads == @threads and repeat == @repeat").reset_index(drop=True)


def test_same_code_twice_on_cpu_is_a_pass_with_every_delta_exactly_zero() -> None:
    first, again = measured_night(1), measured_night(1, repeat=1)  # two runs of the same code
    result = compare(again, first, [first] * 3, AXES, SEEDS)
    assert result.verdict == "pass" and len(result.cells) == 9  # 4 couplings x 2 N + control
    assert (result.cells["n_pairs"] == 3).all() and (result.cells["delta_px"] == 0.0).all()
    assert (result.cells[["delta_low", "delta_high"]] == 0.0).all().all()
    # able to fail: another thread count is another summation order, and deltas are nonzero
    other = compare(measured_night(2), first, [first] * 3, AXES, SEEDS)
    assert (other.cells["delta_high"] - other.cells["delta_low"] > 0).sum() == 8  # untrained: 0
    assert other.verdict == "pass"  # that noise is within the tolerance


def test_error_rate_bench_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    """bench/nightly_error_rates.py --smoke: its array path makes compare()'s calls, and on
    the measured nondeterminism the default rule has no false alarm and misses nothing."""
    sys.path.insert(0, str(NOISE.parents[1]))
    try:
        import nightly_error_rates
    finally:
        sys.path.remove(str(NOISE.parents[1]))
    nightly_error_rates.main(["--smoke"])
    out = capsys.readouterr().out
    assert "compare() makes the same calls as the array path on 10 simulated nights" in out
    assert "| nondeterminism | 3 | none | 0.00% | 0.00% | 0.00% | 100.00% | 100.00% |" in out


@pytest.mark.parametrize("gap", [False, True])
def test_seeds_read_back_as_floats_still_pair(tmp_path: Path, gap: bool) -> None:
    """A seed column with an empty cell reads back 0.0, 1.0, ...: no seed paired with
    tonight's 0, 1, ..., every cell had 0 pairs, and a night 5x worse passed."""
    base = night(BASE).astype({"train.seed": float})
    if gap:  # a trial of a cell with no seed (another grid block's): written empty
        base.loc[len(base)] = {**base.iloc[0].to_dict(), "method": "other", "train.seed": None}
    base.to_csv(tmp_path / "base.csv", index=False)
    read = pd.read_csv(tmp_path / "base.csv")
    assert read["train.seed"].dtype == float
    result = run(scaled(5.0), read)
    assert list(by_cell(result).loc[["gaussian/8", "bilinear/29"], "n_pairs"]) == [3, 3]
    assert result.verdict == "regression"


@pytest.mark.parametrize("px", [-4.45, math.inf])
def test_a_probe_error_that_is_no_distance_makes_a_table_unfit(px: float) -> None:
    """A baseline reading -4.45 or inf px was compared as if measured."""
    bad = night(BASE)
    bad.loc[1, "probe_error_px"] = px
    assert nightly.unfit(bad, AXES, SEEDS) == (
        f"trials table: probe_error_px holds {px} in row 2, not a distance (>= 0, finite; "
        "empty where a trial has none)"
    )
    assert nightly.unfit(night(BASE), AXES, SEEDS) is None
