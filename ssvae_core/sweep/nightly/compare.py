"""Tonight's trials against the baseline night and the history, cell by cell (numpy/pandas).

A trials table has one row per trial: the cell axes (``method``, ``objective.n_negatives``),
the seed axes (``train.seed``: the replicates, matched across nights), ``status`` (ok |
diverged | stopped | error), ``probe_error_px`` (NaN unless ok; lower is better) and
``seconds`` (wall seconds). A cell's label joins its axis values with "/" (``gaussian/8``).
The statistics (in plain words, with their measured error rates: docs/nightly-statistics.md):

- Paired by seed: per seed ok in both nights ``delta = tonight - baseline`` (px) and ``rel =
  delta / baseline``; their medians, each with a 95 % percentile-bootstrap interval
  (`resamples` resamples, ``default_rng([seed, crc32(cell label)])``). With n = 3 seeds it
  is [min, max] (covering the true median with probability 1 - 2/2**3 = 75 %) and the rule
  reads "every seed worse by more than max(abs_px, rel * its baseline)".
- History: ``z = (tonight median - median(H)) / max(1.4826 MAD(H), floor)``, H the cell's
  per-night medians over up to `lookback` earlier nights (z is NaN under `MIN_HISTORY`),
  ``floor = max(abs_px, rel * |median(H)|) / history_z``: on a flat history (MAD 0, as for
  deterministic nights) z passes its threshold exactly where the change passes the tolerance.
- Rule (`classify`): a regression is a cell whose px interval lies wholly above ``abs_px``
  and whose rel interval wholly above ``rel``, and (given a history) whose z exceeds
  ``history_z``; beyond tolerance but not beyond its history is ``within_history`` (a
  warning: the noise the cell always has). An improvement is the mirror image.

Other findings (`SEVERITY`): seeds ok in the baseline that diverged or errored tonight
(``failed``, a regression: the code broke them); seeds stopped or absent tonight (``lost``,
a warning: the budget's or scheduler's doing); a cell gone (``missing``, a warning) or new
(``new``, information); median seconds per trial over the paired seeds up by more than the
``slowdown`` ratio and `MIN_SLOWDOWN_S` (``slowdown``, a warning). Infrastructure failures
are the caller's (exit code 3).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype

from ssvae_core.sweep.tables import cell_label

MIN_HISTORY = 3  # nights needed for a median and MAD; fewer: z is NaN, the paired rule alone
MAD_TO_SD = 1.4826  # MAD of a normal sample times this estimates its standard deviation
MIN_SLOWDOWN_S = 0.5  # a slowdown must also add this much a trial (tiny trials only jitter)
NUMBER_COLUMNS = ("probe_error_px", "seconds")  # a trials table's columns of numbers
SEVERITY = {
    "failed": "regression", "regression": "regression", "improvement": "improvement",
    "within_history": "warning", "lost": "warning", "missing": "warning",
    "slowdown": "warning", "new": "info",
}  # fmt: skip
SEVERITIES = ("regression", "improvement", "warning", "info")  # worst first
CELL_COLUMNS = (
    "n_pairs", "baseline_px", "tonight_px", "delta_px", "delta_low", "delta_high",
    "rel_delta", "rel_low", "rel_high", "history_median", "history_scale", "history_z",
    "history_nights", "seconds_ratio", "finding",
)  # fmt: skip


LOOKBACK = 7  # earlier nights in the history's z (the spec's ``nightly.history``)
RESAMPLES = 10_000  # bootstrap resamples (``nightly.resamples``)


@dataclass(frozen=True)
class Tolerance:
    """How far a cell may move before it is a finding (spec ``nightly.tolerance``).

    Defaults measured by bench/nightly_error_rates.py (docs/nightly-statistics.md) on the
    nondeterminism of bench/data/nightly-noise.csv (same seed, other summation order: median
    0.03 %, 99th percentile 6.7 %, max 8.1 %): ``rel`` 5 % gives no false alarm up to 10x that
    noise and detects a 20 % regression in every cell at 1x (93 % of them at 3x); ``abs_px``
    0.05 px keeps the ~0.55 px Gaussian cells detectable (0.2 px misses half the cells);
    ``history_z`` 3, the robust-z convention. ``slowdown`` x1.5 is a warning only: on the
    shared machine the times were measured on, 23 % of cell-nights crossed it by noise.
    """

    abs_px: float = 0.05  # the spec's defaults too (`sweep.sections.NightlySection`)
    rel: float = 0.05
    slowdown: float = 1.5
    history_z: float = 3.0

    @classmethod
    def of(cls, options: Any) -> Tolerance:
        """The spec's ``nightly`` section (`sweep.sections.NightlySection`, whose defaults
        these are) as a `Tolerance`."""
        t = options.tolerance
        return cls(t.abs_px, t.rel, options.slowdown, options.history_z)

    def __post_init__(self) -> None:
        for name, low in (("abs_px", 0.0), ("rel", 0.0), ("history_z", 0.0), ("slowdown", 1.0)):
            if not getattr(self, name) > low:
                raise ValueError(
                    f"nightly.tolerance.{name} must be > {low:g}: got {getattr(self, name)}"
                )

    def band_px(self, median_px: np.ndarray | float) -> np.ndarray:
        """The tolerance in px around a median: max(abs_px, rel * |median|)."""
        return np.maximum(self.abs_px, self.rel * np.abs(median_px))


@dataclass(frozen=True)
class Finding:
    kind: str  # a key of SEVERITY
    cell: str
    text: str  # one line: the kind, the cell, its numbers and how they were computed

    @property
    def severity(self) -> str:
        return SEVERITY[self.kind]


@dataclass(frozen=True)
class Comparison:
    """`cells`: one row per cell: cell, the cell axes, then `CELL_COLUMNS`. `nights`: the
    cells' median per night (columns cell, night (0 tonight, 1 the newest earlier, ...),
    median_px). `method`: how the intervals and z were computed, for the verdict text."""

    verdict: str  # baseline | pass | improvement | regression
    cells: pd.DataFrame
    findings: list[Finding]
    nights: pd.DataFrame
    tolerance: Tolerance
    method: str


def bootstrap_median_interval(
    values: np.ndarray, resamples: int, rng: np.random.Generator, confidence: float = 0.95
) -> np.ndarray:
    """Percentile-bootstrap interval of the median over the last axis: [..., n] -> [..., 2].

    Each leading row is sorted, then resampled with one shared draw of positions
    [resamples, n]: the median of ``sorted[picks]`` is the mean of ``sorted`` at the two
    middle order statistics of ``picks``, O(resamples) per row instead of O(resamples * n).
    (A resample of the sorted values is a resample of the values.)"""
    n = values.shape[-1]
    ordered = np.sort(values, axis=-1)
    picks = np.sort(rng.integers(0, n, size=(resamples, n)), axis=-1)
    medians = (ordered[..., picks[:, (n - 1) // 2]] + ordered[..., picks[:, n // 2]]) / 2
    tails = [(1 - confidence) / 2, (1 + confidence) / 2]
    return np.moveaxis(np.quantile(medians, tails, axis=-1), 0, -1)


def history_scale(history_px: np.ndarray, tolerance: Tolerance) -> tuple[np.ndarray, np.ndarray]:
    """The history's median and z scale, max(1.4826 MAD, floor): [..., K] (NaN = no night)
    -> two [...]; NaN where fewer than MIN_HISTORY nights. The floor: the module docstring."""
    history_px = np.asarray(history_px, float)
    enough = np.sum(np.isfinite(history_px), axis=-1) >= MIN_HISTORY
    if not np.any(enough):
        return np.full(enough.shape, np.nan), np.full(enough.shape, np.nan)
    history_px = np.where(enough[..., None], history_px, 1.0)  # placeholder rows, masked below
    center = np.nanmedian(history_px, axis=-1)
    mad = np.nanmedian(np.abs(history_px - center[..., None]), axis=-1)
    scale = np.maximum(MAD_TO_SD * mad, tolerance.band_px(center) / tolerance.history_z)
    return np.where(enough, center, np.nan), np.where(enough, scale, np.nan)


def robust_z(tonight_px: np.ndarray, history_px: np.ndarray, tolerance: Tolerance) -> np.ndarray:
    """Robust z of tonight's median against the history: [...] and [..., K] -> [...]."""
    center, scale = history_scale(history_px, tolerance)
    return (np.asarray(tonight_px, float) - center) / scale


def classify(
    interval_px: np.ndarray, interval_rel: np.ndarray, z: np.ndarray, tolerance: Tolerance
) -> np.ndarray:
    """The rule: intervals [..., 2] and z [...] -> "regression" | "improvement" |
    "within_history" | "pass" per cell [...]."""
    worse = (interval_px[..., 0] > tolerance.abs_px) & (interval_rel[..., 0] > tolerance.rel)
    better = (interval_px[..., 1] < -tolerance.abs_px) & (interval_rel[..., 1] < -tolerance.rel)
    no_history = np.isnan(z)
    return np.select(
        [
            worse & (no_history | (z > tolerance.history_z)),
            better & (no_history | (z < -tolerance.history_z)),
            worse | better,
        ],
        ["regression", "improvement", "within_history"],
        "pass",
    )


def _indexed(
    trials: pd.DataFrame, cell_axes: Sequence[str], seed_axes: Sequence[str]
) -> pd.DataFrame:
    """The trials with columns ``cell`` and ``seed`` (labels); one row per (cell, seed)."""
    needed = [*cell_axes, *seed_axes, "status", "probe_error_px", "seconds"]
    absent = [c for c in needed if c not in trials.columns]
    if absent:
        raise ValueError(f"trials table lacks column {absent[0]!r}; it has {list(trials.columns)}")

    if (problem := not_numbers(trials)) is not None:
        raise ValueError(f"trials table: {problem}")
    numbers = {column: trials[column].astype(float) for column in NUMBER_COLUMNS}
    px = numbers["probe_error_px"].to_numpy()
    if (bad := np.flatnonzero(~(np.isnan(px) | (np.isfinite(px) & (px >= 0))))).size:
        row = int(bad[0])
        raise ValueError(f"trials table: probe_error_px holds {px[row]} in row {row + 1}, not a "
                         "distance (>= 0, finite; empty where a trial has none)")  # fmt: skip
    whole = {axis: _as_integers_where_whole(trials[axis]) for axis in seed_axes}
    seeds = pd.DataFrame(whole, index=trials.index)  # seed 0.0 pairs with 0
    out = trials.assign(cell=cell_label(trials, cell_axes), seed=cell_label(seeds, seed_axes))
    out = out.assign(**numbers)
    twice = out[out.duplicated(["cell", "seed"])].head(1).to_dict("records")
    if twice:
        where = f"cell {twice[0]['cell']} has seed {twice[0]['seed']}"
        raise ValueError(f"{where} twice: a grid has one trial per cell and seed")
    return out


def _as_integers_where_whole(values: pd.Series) -> pd.Series:
    """A numeric column with each whole float as a Python int (a column with an empty cell
    reads back as floats, ``0.0``, and its seeds would pair with no other night's ``0``);
    NaN and any other value as it is."""
    if not is_numeric_dtype(values) or is_bool_dtype(values):
        return values

    def whole(value: Any) -> Any:
        is_whole = isinstance(value, float) and math.isfinite(value) and value.is_integer()
        return int(value) if is_whole else value

    return pd.Series([whole(v) for v in values.tolist()], index=values.index, dtype=object)


def not_numbers(trials: pd.DataFrame) -> str | None:
    """What in `trials` is not a number where `NUMBER_COLUMNS` need one (a damaged table:
    pandas reads a column with one ``abc`` as text, and its median is a TypeError), or None.
    An empty cell is a number here (NaN: a trial that diverged has no probe error)."""
    for column in NUMBER_COLUMNS:
        values = trials[column] if column in trials.columns else pd.Series([], dtype=float)
        if is_numeric_dtype(values) and not is_bool_dtype(values):
            continue
        for row, value in enumerate(values):
            if not _number(value):
                return f"column {column!r} holds {str(value)[:40]!r} in row {row + 1}, not a number"
    return None


def _number(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, (bool, np.bool_)):
        return False
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def unfit(trials: pd.DataFrame, cell_axes: Sequence[str], seed_axes: Sequence[str]) -> str | None:
    """Why a night's trials cannot be compared with a grid of `cell_axes` x `seed_axes` (a
    column missing: the spec gained an axis since; a cell and seed twice: it lost one), or
    None when they can."""
    try:
        _indexed(trials, cell_axes, seed_axes)
    except ValueError as err:
        return str(err)
    return None


def _night_medians(trials: pd.DataFrame) -> pd.Series:
    return trials.query("status == 'ok'").groupby("cell", sort=False)["probe_error_px"].median()


def _interval(ci: np.ndarray, unit: str) -> str:
    scale = 100 if unit == "%" else 1
    return f"[{ci[0] * scale:+.3g}, {ci[1] * scale:+.3g}] {unit}"


def compare(
    tonight: pd.DataFrame,
    baseline: pd.DataFrame | None,
    history: Sequence[pd.DataFrame],
    cell_axes: Sequence[str],
    seed_axes: Sequence[str],
    tolerance: Tolerance | None = None,
    *,
    lookback: int = LOOKBACK,
    resamples: int = RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> Comparison:
    """Tonight vs `baseline` (the newest earlier night; None on the first night) and
    `history` (earlier nights, newest first, normally starting with the baseline; the
    first `lookback` are used). Statistics and findings: the module docstring."""
    tol = tolerance or Tolerance()
    boot = f"{confidence:.0%} percentile bootstrap, {resamples} resamples, seed {seed}"
    how = f"median paired delta, {boot}; robust z (median/MAD) over <= {lookback} earlier nights"
    now = _indexed(tonight, cell_axes, seed_axes)
    before = _indexed(baseline, cell_axes, seed_axes) if baseline is not None else now.iloc[:0]
    medians = [_night_medians(_indexed(n, cell_axes, seed_axes)) for n in history[:lookback]]
    medians.insert(0, _night_medians(now))
    nights = pd.DataFrame(
        [(c, i, m) for i, night in enumerate(medians) for c, m in night.items()],
        columns=["cell", "night", "median_px"],
    )
    rows, findings = [], []
    for cell in dict.fromkeys([*now["cell"], *before["cell"]]):
        mine, theirs = now[now["cell"] == cell], before[before["cell"] == cell]
        first = (mine if len(mine) else theirs).iloc[0]
        row: dict[str, object] = {"cell": cell, **{a: first[a] for a in cell_axes}}
        row |= dict.fromkeys(CELL_COLUMNS, np.nan) | {"n_pairs": 0}
        row["tonight_px"] = medians[0].get(cell, np.nan)
        past = np.array([m.get(cell, np.nan) for m in medians[1:]], dtype=float)
        center, scale = history_scale(past, tol)
        z = float((row["tonight_px"] - center) / scale)
        row |= {"history_median": float(center), "history_scale": float(scale), "history_z": z}
        row["history_nights"] = int(np.isfinite(past).sum())
        kinds: list[tuple[str, str]] = []
        if baseline is not None and not len(mine):
            kinds.append(("missing", "cell absent tonight (it ran in the baseline)"))
        elif baseline is not None and not len(theirs):
            kinds.append(("new", "cell new tonight (not in the baseline)"))
        elif baseline is not None:
            kinds += _paired(row, mine, theirs, tol, resamples, confidence, seed, boot)
        row["finding"] = ",".join(k for k, _ in kinds) or ("pass" if len(before) else "")
        findings += [Finding(k, str(cell), f"{k} {cell}: {text}") for k, text in kinds]
        rows.append(row)
    findings.sort(key=lambda f: SEVERITIES.index(f.severity))  # worst first
    worst = [s for s in ("regression", "improvement") if s in {f.severity for f in findings}]
    verdict = "baseline" if baseline is None else [*worst, "pass"][0]
    table = pd.DataFrame(rows, columns=["cell", *cell_axes, *CELL_COLUMNS])
    return Comparison(verdict, table, findings, nights, tol, how)


def _paired(
    row: dict[str, object],
    mine: pd.DataFrame,
    theirs: pd.DataFrame,
    tol: Tolerance,
    resamples: int,
    confidence: float,
    seed: int,
    boot: str,
) -> list[tuple[str, str]]:
    """Fill `row`'s paired columns for a cell in both nights; return its findings."""
    kinds: list[tuple[str, str]] = []
    ok_before = theirs[theirs["status"] == "ok"].set_index("seed")
    gone = mine.set_index("seed")["status"].reindex(ok_before.index).fillna("absent")
    for kind, statuses in (("failed", ("diverged", "error")), ("lost", ("stopped", "absent"))):
        hit = gone[gone.isin(statuses)]
        if len(hit):
            seeds = ", ".join(f"seed {s} {v}" for s, v in hit.items())
            kinds.append((kind, f"{seeds} tonight, ok in the baseline"))
    ok_now = mine[mine["status"] == "ok"].set_index("seed")
    pairs = ok_before.merge(ok_now, left_index=True, right_index=True, suffixes=("", "_now"))
    row["n_pairs"] = len(pairs)
    row["baseline_px"] = ok_before["probe_error_px"].median() if len(ok_before) else np.nan
    if not len(pairs):
        return kinds
    base = pairs["probe_error_px"].to_numpy(float)
    delta = pairs["probe_error_px_now"].to_numpy(float) - base
    rel = np.divide(delta, base, out=np.full_like(delta, np.nan), where=base > 0)
    rng = np.random.default_rng([seed, zlib.crc32(str(row["cell"]).encode())])
    px_ci, rel_ci = bootstrap_median_interval(np.stack([delta, rel]), resamples, rng, confidence)
    row |= {"delta_px": np.median(delta), "delta_low": px_ci[0], "delta_high": px_ci[1]}
    row |= {"rel_delta": np.median(rel), "rel_low": rel_ci[0], "rel_high": rel_ci[1]}
    z = np.array(row["history_z"], dtype=float)
    call = str(classify(px_ci, rel_ci, z, tol))
    if call != "pass":
        nights = f"over {row['history_nights']} nights"
        history = "no history" if np.isnan(z) else f"history z {float(z):+.2f} {nights}"
        kinds.append((call, (
            f"{row['delta_px']:+.3g} px ({row['rel_delta']:+.1%}) median paired delta over "
            f"{len(pairs)} seeds, interval {_interval(px_ci, 'px')}, {_interval(rel_ci, '%')} "
            f"({boot}); tolerance {tol.abs_px:g} px and {tol.rel:.0%}; {history}"
        )))  # fmt: skip
    before_s, now_s = pairs["seconds"].median(), pairs["seconds_now"].median()
    row["seconds_ratio"] = ratio = float(now_s / before_s)
    if ratio > tol.slowdown and now_s - before_s >= MIN_SLOWDOWN_S:
        kinds.append(("slowdown", (
            f"median seconds per trial x{ratio:.2f} ({before_s:.3g} s -> {now_s:.3g} s) over "
            f"{len(pairs)} paired seeds; tolerance x{tol.slowdown:g}"
        )))  # fmt: skip
    return kinds
