"""Stochastic encoders (eqs. 18-22): probe error, ELBO and its Jensen gap per encoder."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ssvae_core.figures import save
from ssvae_core.metrics import as_numbers
from ssvae_core.sweep.reports import ReportContext, ReportOutput
from ssvae_core.sweep.reports.common import by_seed, finished, markdown, spread


def report(trials: pd.DataFrame, context: ReportContext, out: Path) -> ReportOutput:
    """Probe error, ELBO and Jensen gap per encoder; ELBO paired by seed with deterministic."""
    arm, reference = "method", "deterministic"
    done = finished(trials)
    elbo = by_seed(trials, [arm], "elbo")
    rows = []
    for name, group in done.groupby(arm, sort=False):
        row = {
            "encoder": name,
            "probe px: median (min–max)": spread(group["probe_error_px"]),
            "final sigma": group["sigma"].mean() if "sigma" in group else math.nan,
            "ELBO (eq. 20)": group["elbo"].mean(),
            "Jensen gap": group["elbo_gap"].mean(),
            "ELBO at mean z": as_numbers(group.get("elbo_at_mean")).mean(),
        }
        if reference in elbo.index:
            row["ELBO − deterministic (paired)"] = (elbo.loc[name] - elbo.loc[reference]).mean()
        rows.append(row)
    names = list(trials[arm].unique())
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    panels = ("probe_error_px", "elbo", "elbo_gap")
    titles = ("probe error (px)", "ELBO estimate (nats)", "Jensen gap (nats)")
    for ax, column, title in zip(axes, panels, titles, strict=True):
        for i, name in enumerate(names):
            values = done.loc[done[arm] == name, column]
            ax.plot(np.full(len(values), i), values, "o", color="C3", ms=4)
            if len(values.dropna()):
                ax.bar(i, values.median(), color="0.85", edgecolor="0.3")
        ax.set_xticks(range(len(names)), names, rotation=25)
        ax.set_title(title)
    if (done["probe_error_px"] > 0).any():
        axes[0].set_yscale("log")
    return ReportOutput([save(fig, out / "stochastic.png")], markdown(pd.DataFrame(rows)))
