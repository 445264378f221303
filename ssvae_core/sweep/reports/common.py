"""What the reports share: finished trials, pairing by seed, markdown, the cell chart."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ssvae_core import figures
from ssvae_core.metrics import METRICS, as_numbers
from ssvae_core.sweep.sections import SEED_AXES
from ssvae_core.sweep.tables import cell_label

CONTROL = "untrained"


def finished(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials that ended ``ok``, with the metric columns as floats."""
    done = trials[trials["status"] == "ok"].copy()
    for column in METRICS:
        if column in done:
            done[column] = as_numbers(done[column])
    return done


def markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """A DataFrame as a markdown table (numbers to `digits` significant figures, NaN as -);
    one with no column (nothing was measured) as a line that says so."""
    if table.shape[1] == 0:
        return "(no values: no trial to show)"

    def cell(value: object) -> str:
        if isinstance(value, float | np.floating):
            return "-" if math.isnan(value) else f"{value:.{digits}g}"
        return str(value)

    lines = ["| " + " | ".join(map(str, table.columns)) + " |"]
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(table.shape[1])) + "|")
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join(lines)


def by_seed(
    trials: pd.DataFrame, group_axes: Sequence[str], value: str = "probe_error_px"
) -> pd.DataFrame:
    """`value` of the ok trials per arm (rows, grid order) and seed (sorted columns).

    An arm is a cell of `group_axes`, a seed one value of the seed axes present. Raises
    ValueError if an (arm, seed) holds more than one trial (a search), rather than drop any.
    """
    seeds = [axis for axis in SEED_AXES if axis in trials]
    if not seeds:
        raise ValueError(f"no seed axis ({', '.join(SEED_AXES)}) to pair trials by")
    labelled = trials.assign(arm=cell_label(trials, group_axes), seed=cell_label(trials, seeds))
    done = finished(labelled)
    if done.duplicated(["arm", "seed"]).any():
        raise ValueError("several trials per arm and seed: nothing to pair")
    table = done.pivot(index="arm", columns="seed", values=value)
    arms = [a for a in labelled["arm"].unique() if a in table.index]
    return table.reindex(index=arms, columns=sorted(table.columns, key=natural_order))


def natural_order(label: str) -> tuple[float, ...]:
    """Sort key for seed labels like '2' or '0/1': numerically where they are numbers."""
    return tuple(
        float(part) if part.lstrip("-").isdigit() else math.inf for part in label.split("/")
    )


def spread(values: pd.Series) -> str:
    """``median (min-max)`` of the finite values, or '-'."""
    values = values.dropna()
    if values.empty:
        return "-"
    return f"{values.median():.3g} ({values.min():.3g}–{values.max():.3g})"


def legend(ax: plt.Axes, title: str | None = None) -> None:
    """A small legend, if anything on `ax` has a label (no trial finished: none)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, title=title)


def probe_error_by_cell(
    trials: pd.DataFrame, group_axes: Sequence[str], path: Path, title: str
) -> Path:
    """Fig. 1C for any sweep: per cell, the median probe error and one point per trial."""
    labelled = trials.assign(cell=cell_label(trials, group_axes))
    done = labelled[labelled["status"] == "ok"]
    errors = {
        str(cell): list(done.loc[done["cell"] == cell, "probe_error_px"].astype(float))
        for cell in labelled["cell"].drop_duplicates()
    }
    return figures.probe_error_bars(errors, path, title=title)
