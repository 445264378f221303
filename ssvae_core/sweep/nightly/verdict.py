"""A `Comparison` -> ``verdict.md`` and two PNG figures (matplotlib, Agg).

``verdict.md``: the verdict, how the numbers were computed, one line per finding, then one
table row per cell (baseline, tonight, paired delta and its interval, relative delta and its
interval, history z, time ratio, the cell's findings). Figures: `plot_paired_deltas` (each
cell's median paired delta with its interval against the tolerance band, in px and in %) and
`plot_cell_history` (each cell's median over the nights, tonight highlighted).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ssvae_core.files import replacing, write_text
from ssvae_core.sweep.nightly.compare import Comparison

COLOURS = {
    "regression": "#c0392b",
    "failed": "#c0392b",
    "improvement": "#1e8449",
    "within_history": "#d68910",
    "pass": "#566573",
}


def _as_float(value: object) -> float:
    return float(value) if isinstance(value, int | float) else math.nan


def _num(value: object, spec: str = ".3g", scale: float = 1.0) -> str:
    number = _as_float(value) * scale
    if math.isnan(number):
        return "-"
    return f"{0.0 if float(f'{number:{spec}}') == 0 else number:{spec}}"  # no "-0.00"


def _ci(low: object, high: object, scale: float = 1.0) -> str:
    if math.isnan(_as_float(low)):
        return "-"
    return f"[{_num(low, '+.3g', scale)}, {_num(high, '+.3g', scale)}]"


def verdict_markdown(comparison: Comparison, title: str = "nightly") -> str:
    """The text of ``verdict.md``."""
    tol = comparison.tolerance
    lines = [
        f"# {title}: {comparison.verdict}",
        "",
        f"Method: {comparison.method}. A regression: the interval of the paired delta lies wholly "
        f"above {tol.abs_px:g} px and that of the relative delta wholly above {tol.rel:.0%}, and "
        f"(with >= 3 earlier nights) history z > {tol.history_z:g}; an improvement is the mirror "
        f"image. With 3 to 5 pairs a percentile interval of the median is [min, max] of the "
        f"deltas (coverage 1 - 2^(1-n): 75 % at n = 3), so every seed must be beyond the "
        f"tolerance. Slowdown: median seconds per trial above x{tol.slowdown:g}.",
        "",
        "## Findings",
        "",
    ]
    lines += [f"- {f.text}" for f in comparison.findings] or ["- none"]
    lines += [
        "",
        "## Cells",
        "",
        "| cell | pairs | baseline px | tonight px | paired delta px | interval px | relative "
        "delta | interval % | history z (nights) | time ratio | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in comparison.cells.to_dict("records"):
        lines.append(
            f"| {row['cell']} | {row['n_pairs']} | {_num(row['baseline_px'])} "
            f"| {_num(row['tonight_px'])} | {_num(row['delta_px'], '+.3g')} "
            f"| {_ci(row['delta_low'], row['delta_high'])} "
            f"| {_num(row['rel_delta'], '+.3g', 100)}% "
            f"| {_ci(row['rel_low'], row['rel_high'], 100)} "
            f"| {_num(row['history_z'], '+.2f')} ({row['history_nights']}) "
            f"| {_num(row['seconds_ratio'], '.2f')} | {row['finding'] or '-'} |"
        )
    return "\n".join(lines) + "\n"


def _colour(finding: str) -> str:
    first = finding.split(",")[0] if finding else "pass"
    return COLOURS.get(first, COLOURS["pass"])


def _z(value: object) -> str:
    return "no history" if math.isnan(_as_float(value)) else f"z {_num(value, '+.1f')}"


def plot_paired_deltas(comparison: Comparison, path: str | Path) -> Path:
    """Per cell (one row each, coloured by its finding): the median paired delta (dot) and
    its interval (bar), in px against +-abs_px and in % against +-rel (grey bands)."""
    cells = comparison.cells[comparison.cells["n_pairs"] > 0]
    tol = comparison.tolerance
    y = np.arange(len(cells))[::-1]
    fig, axes = plt.subplots(1, 2, figsize=(12, 1.6 + 0.42 * max(len(cells), 1)), sharey=True)
    panels = [
        ("delta", "delta_px", 1.0, tol.abs_px, "px"),
        ("rel", "rel_delta", 100.0, tol.rel * 100, "%"),
    ]
    for ax, (key, point, scale, band, unit) in zip(axes, panels, strict=True):
        ax.axvspan(-band, band, color="#e5e8e8", zorder=0)
        ax.axvline(0, color="black", lw=0.8)
        for yi, row in zip(y, cells.to_dict("records"), strict=True):
            colour = _colour(str(row["finding"]))
            low, high = row[f"{key}_low"] * scale, row[f"{key}_high"] * scale
            ax.plot([low, high], [yi, yi], color=colour, lw=3, solid_capstyle="butt")
            ax.plot(row[point] * scale, yi, "o", color=colour, ms=6)
        ax.set_xlabel(f"tonight - baseline, median over paired seeds ({unit})")
        ax.set_title(f"paired delta ({unit}); grey: tolerance ±{band:g} {unit}", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    for yi, finding in zip(y, cells["finding"], strict=True):
        axes[1].annotate(str(finding), (1.01, yi), xycoords=("axes fraction", "data"),
                         va="center", fontsize=8, color=_colour(str(finding)))  # fmt: skip
    axes[0].set_yticks(
        y, [f"{c} (n={n})" for c, n in zip(cells["cell"], cells["n_pairs"], strict=True)]
    )
    axes[0].set_ylim(-0.7, len(cells) - 0.3)
    fig.suptitle(f"nightly verdict: {comparison.verdict}   ({comparison.method})", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_cell_history(comparison: Comparison, path: str | Path) -> Path:
    """One panel per cell: its median probe error per night (oldest left, tonight a star in
    the colour of its finding), the history's median (dashed) and the band z = +-history_z
    around it (grey; never narrower than the tolerance, see `compare`)."""
    nights, tol = comparison.nights, comparison.tolerance
    cells = comparison.cells.set_index("cell")
    names = [c for c in cells.index if c in set(nights["cell"])]
    columns = min(4, max(len(names), 1))
    rows = max(math.ceil(len(names) / columns), 1)
    fig, axes = plt.subplots(rows, columns, figsize=(3.3 * columns, 2.5 * rows), squeeze=False)
    for ax, cell in zip(axes.flat, names, strict=False):
        row = cells.loc[cell]
        mine = nights[nights["cell"] == cell]
        x, median = -mine["night"].to_numpy(), mine["median_px"].to_numpy(float)
        order = np.argsort(x)
        past = x < 0
        ax.plot(x[order], median[order], "-", color="#aab7b8", lw=1)
        ax.plot(x[past], median[past], "o", color="#566573", ms=4, label="earlier nights")
        center, scale = _as_float(row["history_median"]), _as_float(row["history_scale"])
        if not math.isnan(center):
            half = tol.history_z * scale
            ax.axhspan(
                center - half,
                center + half,
                color="#e5e8e8",
                zorder=0,
                label=f"|z| <= {tol.history_z:g}",
            )
            ax.axhline(center, ls="--", color="#566573", lw=0.8)
            low, high = (
                np.nanmin([*median, center - 1.5 * half]),
                np.nanmax([*median, center + 1.5 * half]),
            )
            ax.set_ylim(low - 0.08 * (high - low), high + 0.08 * (high - low))
        colour = _colour(str(row["finding"]))
        ax.plot(x[~past], median[~past], "*", color=colour, ms=13, label="tonight")
        ax.set_title(f"{cell}  ({_z(row['history_z'])})", fontsize=9, color=colour)
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_xlabel("night (0 = tonight)", fontsize=8)
        ax.set_ylabel("median probe error (px)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(names) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    with replacing(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def write_verdict(comparison: Comparison, out: str | Path, title: str = "nightly") -> list[Path]:
    """``verdict.md``, ``paired-deltas.png`` and ``cell-history.png`` into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "verdict.md", verdict_markdown(comparison, title))
    return [
        out / "verdict.md",
        plot_paired_deltas(comparison, out / "paired-deltas.png"),
        plot_cell_history(comparison, out / "cell-history.png"),
    ]
