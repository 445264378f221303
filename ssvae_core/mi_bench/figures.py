"""The MI benchmark's figure: every estimate's bias, per task, estimator and critic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ssvae_core.figures import plt, save

MARKERS = "os^Dv<>Px*"


def estimator_bias(results: pd.DataFrame, path: str | Path, limit: float = 8.0) -> Path:
    """Estimate minus true MI (nats) for every run of `critics.staircase`: one panel per
    task, estimators along x, couplings as colours, the true MI as the marker. Values beyond
    ±`limit` (or NaN: diverged) are drawn hollow at the edge of the panel."""
    tasks = list(results["task"].unique())
    estimators, couplings = list(results["estimator"].unique()), list(results["coupling"].unique())
    mis = sorted(results["true_mi"].unique())
    fig, axes = plt.subplots(
        1, len(tasks), figsize=(3.2 * len(tasks) + 1, 3.8), sharey=True, squeeze=False
    )
    width = 0.8 / len(couplings)
    for ax, task in zip(axes[0], tasks, strict=True):
        for c, coupling in enumerate(couplings):
            for m, mi in enumerate(mis):
                rows = results[
                    (results["task"] == task)
                    & (results["coupling"] == coupling)
                    & (results["true_mi"] == mi)
                ]
                x = np.array(
                    [estimators.index(e) - 0.4 + (c + 0.5) * width for e in rows["estimator"]]
                )
                bias = (rows["estimate"] - mi).to_numpy(dtype=float)
                inside = np.abs(bias) <= limit
                edge = np.where(np.isnan(bias), -limit, np.clip(bias, -limit, limit))
                style = {"s": 16, "marker": MARKERS[m % len(MARKERS)], "alpha": 0.8}
                ax.scatter(x[inside], bias[inside], color=f"C{c}", **style,
                           label=coupling if m == 0 else None)  # fmt: skip
                ax.scatter(
                    x[~inside], edge[~inside], facecolors="none", edgecolors=f"C{c}", **style
                )
        ax.axhline(0.0, color="black", lw=0.8)
        ax.set_ylim(-limit * 1.05, limit * 1.05)
        ax.set_xticks(range(len(estimators)), estimators)
        ax.set_title(task)
    axes[0][0].set_ylabel("estimate − true MI (nats)")
    shapes = ", ".join(f"{MARKERS[m % len(MARKERS)]} I={mi:g}" for m, mi in enumerate(mis))
    title = f"critic ({shapes};\nhollow: beyond ±{limit:g} or NaN)"
    axes[0][-1].legend(fontsize=7, title=title, title_fontsize=7)
    return save(fig, path)
