"""Sweep results -> pandas tables: one row per trial, one row per cell, as printed.

One row per trial (`trial_rows` in the runner): its grid axes and searched values, ``status``
(``ok`` | ``diverged`` | ``stopped`` by the scheduler or budget | ``error``), final
``probe_error_px``, ``mi_estimate``, learned ``lengthscale``, ``seconds``, its MLflow run, and
where it trained (``device``: cuda or cpu; ``cuda_visible_devices``: the GPU Ray gave it).

`cell_table` aggregates trials per grid cell - the grid axes without the replicate axes
(``train.seed``), e.g. method, or coupling x N x estimator - over seeds (and search trials):
mean, spread (std) and best of the probe error over the trials that finished, mean MI
estimate, learned lengthscale and seconds per trial, and counts per status. In a search, the
searched values of the cell's best trial are added (``best.train.lr``, ...).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ssvae_core.files import replacing, write_text
from ssvae_core.metrics import as_numbers
from ssvae_core.sweep.grid import METHOD_AXIS

STATUSES = ("ok", "diverged", "stopped", "error")


def read_trials(path: Path) -> pd.DataFrame:
    """A ``trials.csv`` (`write`) as written: only an empty field is empty, so a method named
    NA, nan, 01 or true keeps its name (pandas would read NaN, 1 or True)."""
    return pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={METHOD_AXIS: str})


def cell_label(trials: pd.DataFrame, group_axes: Sequence[str]) -> pd.Series:
    """Each trial's cell as short text: its group axes' values joined by '/' (``gaussian/8``).

    A missing value (an axis of another grid block, or null read back from a CSV) reads
    ``-``, however the table was read: the label of a cell is the same from memory and file.
    """
    if not group_axes:
        return pd.Series("all", index=trials.index, dtype=object)
    if trials.empty:
        return pd.Series([], index=trials.index, dtype=object)
    values = trials[list(group_axes)]
    text = values.astype(object).where(values.notna(), "-").map(str)
    return text.agg("/".join, axis=1).astype(object)


def cell_table(
    trials: pd.DataFrame, group_axes: Sequence[str], searched: Sequence[str] = ()
) -> pd.DataFrame:
    """One row per cell (in grid order): statistics over its trials (see the module doc)."""
    trials = trials.assign(cell=cell_label(trials, group_axes))
    rows = []
    for cell, group in trials.groupby("cell", sort=False):
        done = group[group["status"] == "ok"]
        errors = done["probe_error_px"].astype(float)
        row: dict[str, object] = {"cell": cell}
        row |= {axis: group[axis].iloc[0] for axis in group_axes}
        row |= {
            "trials": len(group),
            "probe_error_px_median": errors.median(),
            "probe_error_px_mean": errors.mean(),
            "probe_error_px_std": errors.std(ddof=1) if len(errors) > 1 else np.nan,
            "probe_error_px_best": errors.min(),
            "mi_estimate_mean": done["mi_estimate"].astype(float).mean(),
            "lengthscale_mean": as_numbers(done.get("lengthscale")).mean(),
            "seconds_mean": group["seconds"].astype(float).mean(),
        }
        row |= {f"n_{status}": int((group["status"] == status).sum()) for status in STATUSES}
        if searched and len(errors):
            best = done.loc[errors.idxmin()]
            row |= {f"best.{key}": best[key] for key in searched}
        rows.append(row)
    return pd.DataFrame(rows)


def write(trials: pd.DataFrame, cells: pd.DataFrame, out: Path) -> list[Path]:
    """``trials`` and ``results`` (cells) as CSV and parquet in `out`; the paths."""
    paths = []
    for name, table in (("trials", trials), ("results", cells)):
        for suffix in ("csv", "parquet"):
            path = out / f"{name}.{suffix}"
            if suffix == "csv":
                write_text(path, table.to_csv(index=False))
            else:
                with replacing(path) as tmp:
                    table.astype(
                        {c: str for c in table.columns if table[c].dtype == object}
                    ).to_parquet(tmp, index=False)
            paths.append(path)
    return paths


def headline_metrics(cells: pd.DataFrame) -> dict[str, float]:
    """Per cell, its median probe error (``gaussian/8.probe_error_px_median``): the numbers a
    sweep's parent run shows in MLflow; NaN (no trial finished) is left out."""
    found = {}
    for _, row in cells.iterrows():
        key = re.sub(r"[^A-Za-z0-9_\-. /:]", "_", str(row["cell"]))
        for column in ("probe_error_px_median", "validation_px", "test_px"):
            value = row.get(column)
            if value is not None and pd.notna(value):
                found[f"{key}.{column}"] = float(value)
    return found


def format_cells(cells: pd.DataFrame) -> str:
    """The table as printed at the end of a sweep: the columns a reader compares."""
    columns = [
        "cell", "trials", "probe_error_px_median", "probe_error_px_mean", "probe_error_px_std",
        "probe_error_px_best",
        "mi_estimate_mean", "lengthscale_mean", "seconds_mean", "n_diverged", "n_stopped",
        "n_error", "validation_px", "test_px",
    ]  # fmt: skip
    shown = cells[[c for c in columns if c in cells] + [c for c in cells if c.startswith("best.")]]
    renamed = shown.rename(
        columns=lambda c: c.replace("probe_error_px_", "px_").replace("_mean", "")
    )
    return renamed.to_string(index=False, float_format=lambda v: f"{v:.3g}", na_rep="-")
