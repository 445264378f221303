"""Number of negatives N: probe error and the InfoNCE bound against N, with log(N + 1)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ssvae_core.figures import save
from ssvae_core.sweep.reports import ReportContext, ReportOutput
from ssvae_core.sweep.reports.common import finished, legend, markdown


def report(trials: pd.DataFrame, context: ReportContext, out: Path) -> ReportOutput:
    """Probe error and MI estimate against N per coupling; the ceiling log(N + 1)."""
    coupling, n = "coupling.kind", "objective.n_negatives"
    in_batch = context.base.train.batch_size - 1  # n_negatives null: the paper's in-batch N
    done = finished(trials.assign(**{n: pd.to_numeric(trials[n]).fillna(in_batch)}))
    summary = done.groupby([n, coupling], sort=True).agg(
        probe_px=("probe_error_px", "median"), mi=("mi_estimate", "mean")
    )
    table = summary.unstack(coupling)
    table.columns = [f"{c}: {'probe px (median)' if m == 'probe_px' else 'MI'}" for m, c in table]
    table.insert(0, "log(N+1)", np.log(table.index.to_numpy(dtype=float) + 1))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for k, (kind, group) in enumerate(done.groupby(coupling, sort=False)):
        for ax, column in ((left, "probe_error_px"), (right, "mi_estimate")):
            ax.scatter(group[n], group[column], color=f"C{k}", s=12, alpha=0.6)
            median = group.groupby(n)[column].median()
            ax.plot(median.index, median.values, "-", color=f"C{k}", label=kind)
    grid = np.array(sorted(done[n].unique()), dtype=float)
    right.plot(grid, np.log(grid + 1), "k--", label="log(N + 1)")
    left.set(xscale="log", yscale="log", xlabel="negatives N", ylabel="probe error (px)")
    right.set(xscale="log", xlabel="negatives N", ylabel="InfoNCE estimate (nats)")
    for ax in (left, right):
        legend(ax)
    path = save(fig, out / "negatives.png")
    return ReportOutput([path], markdown(table.reset_index().rename(columns={n: "N"})))
