"""Lengthscale L of the Gaussian prior N(z, L^2) (eqs. 35-36): fixed or learned, from each
initial L; the learned L against the balls' true step and the representation's own."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ssvae_core.balls import simulate
from ssvae_core.figures import save
from ssvae_core.metrics import position_step
from ssvae_core.sweep.reports import ReportContext, ReportOutput
from ssvae_core.sweep.reports.common import finished, legend, markdown, spread


def report(trials: pd.DataFrame, context: ReportContext, out: Path) -> ReportOutput:
    """Probe error and final L against the initial L, learned and fixed; the true step."""
    done = finished(trials)
    learn, initial = "coupling.learn_lengthscale", "coupling.lengthscale"
    data = context.base.data
    video = simulate(data.balls, data.seed)
    step = position_step(video.positions, data.size)
    rows = []
    for (learned, start), group in done.groupby([learn, initial], sort=True):
        rows.append(
            {
                "L": "learned" if learned else "fixed",
                "initial L": start,
                "probe px: median (min–max)": spread(group["probe_error_px"]),
                "final L (mean)": group["lengthscale"].mean(),
                "final L / true step": group["lengthscale"].mean() / step,
                "z step (mean)": group["z_step"].mean() if "z_step" in group else math.nan,
                "MI (mean)": group["mi_estimate"].mean(),
            }
        )
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for k, (learned, group) in enumerate(done.groupby(learn, sort=False)):
        label = "learned L" if learned else "fixed L"
        median = group.groupby(initial)["probe_error_px"].median()
        left.scatter(group[initial], group["probe_error_px"], color=f"C{k}", s=12, alpha=0.6)
        left.plot(median.index, median.values, "-", color=f"C{k}", label=label)
        right.scatter(group[initial], group["lengthscale"], color=f"C{k}", s=14, label=label)
    grid = np.array(sorted(done[initial].unique()), dtype=float)
    if len(grid):
        right.plot(grid, grid, ":", color="0.5", label="final = initial")
    right.axhline(step, color="k", ls="--", label=f"true step {step:.3g}")
    if "z_step" in done and done["z_step"].notna().any():
        right.scatter(done[initial], done["z_step"], marker="x", color="0.4", label="z step")
    left.set(xscale="log", yscale="log", xlabel="initial L", ylabel="probe error (px)")
    right.set(xscale="log", yscale="log", xlabel="initial L", ylabel="final L (and z step)")
    for ax in (left, right):
        legend(ax)
    header = (
        f"True per-frame step of the balls (RMS per coordinate, encoder units): {step:.4g}. "
        "z step: the same RMS change of the learned representation between frames, the "
        "maximum-likelihood L of eq. 35 for it.\n\n"
    )
    return ReportOutput([save(fig, out / "lengthscale.png")], header + markdown(pd.DataFrame(rows)))
