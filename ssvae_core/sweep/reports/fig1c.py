"""Fig. 1C with its control: each method against the untrained encoder of the same seed."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ssvae_core.figures import save
from ssvae_core.sweep.reports import ReportContext, ReportOutput
from ssvae_core.sweep.reports.common import CONTROL, by_seed, finished, legend, markdown
from ssvae_core.sweep.tables import cell_label


def report(trials: pd.DataFrame, context: ReportContext, out: Path) -> ReportOutput:
    """Probe error per arm and seed; each arm against the untrained control of its seed."""
    try:
        errors = by_seed(trials, context.group_axes)
    except ValueError:  # no seeds or a search: the medians per cell
        medians = finished(trials.assign(arm=cell_label(trials, context.group_axes)))
        medians = medians.groupby("arm", sort=False)["probe_error_px"].median()
        return ReportOutput([], markdown(medians.rename("median (px)").reset_index()))
    table = errors.rename(columns=lambda s: f"seed {s} (px)")
    table["median (px)"] = errors.median(axis=1)
    control = next((arm for arm in errors.index if CONTROL in str(arm).split("/")), None)
    if control is not None:  # "untrained", or "untrained/-" beside axes it does not have
        gain = errors.loc[control] - errors  # px gained over the same seed's untrained encoder
        wins = [f"{int((g > 0).sum())}/{int(g.notna().sum())}" for _, g in gain.iterrows()]
        table["beats untrained (seeds)"] = wins
        table["px gained (mean)"] = gain.mean(axis=1)
        table["untrained ÷ method (median)"] = (errors.loc[control] / errors).median(axis=1)
        table.loc[control, "beats untrained (seeds)"] = "-"
        table.loc[control, ["px gained (mean)", "untrained ÷ method (median)"]] = math.nan
    figure = paired_by_seed(errors, out / "fig1c-paired.png", context.name)
    arm = "/".join(context.group_axes) or "cell"
    return ReportOutput([figure], markdown(table.rename_axis(arm).reset_index()))


def paired_by_seed(errors: pd.DataFrame, path: Path, name: str) -> Path:
    """One line per seed across the arms (log y): the pairing the table summarises."""
    fig, ax = plt.subplots(figsize=(1.5 + 1.1 * len(errors), 3.5))
    x = np.arange(len(errors))
    for i, seed in enumerate(errors.columns):
        ax.plot(x, errors[seed], "-o", color=f"C{i}", ms=4, label=f"seed {seed}", alpha=0.8)
    ax.set_xticks(x, list(errors.index), rotation=20)
    ax.set(yscale="log", ylabel="probe error (px)", title=f"{name}: paired by seed")
    legend(ax)
    return save(fig, path)
