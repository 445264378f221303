"""``ssvae nightly history SPEC_NAME``: the history of a spec's nightlies, from MLflow alone.

The newest finished nightly is compared again with the ones before it (`compare`), and the
cells' medians per night are written as ``history.csv`` and ``history.md`` beside the
figure of each cell's history (``cell-history.png``) and the verdict of every night.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ssvae_core.errors import ConfigError, url_shown
from ssvae_core.files import write_text
from ssvae_core.sweep.nightly import history
from ssvae_core.sweep.nightly.compare import compare
from ssvae_core.sweep.nightly.verdict import plot_cell_history
from ssvae_core.sweep.reports.common import markdown
from ssvae_core.sweep.runlog import client
from ssvae_core.sweep.sections import SEED_AXES
from ssvae_core.sweep.tracking import TrackingUnavailable, resolve_uri

DEFAULT_NIGHTS = 7


def _nights(uri: str, name: str, limit: int) -> list[Any]:
    try:
        mlflow = client(uri)  # a database URI connects here: no server, no driver
        experiments = [e.experiment_id for e in mlflow.search_experiments()]
        runs = [
            run
            for experiment in experiments
            for run in history.nightlies(mlflow, experiment, name, status="FINISHED")
        ]
    except Exception as err:
        raise TrackingUnavailable(f"MLflow at {uri} is unreachable: {err}", uri) from err
    runs.sort(key=lambda run: run.info.start_time, reverse=True)
    return runs[: limit + 1]


def history_report(name: str, uri: str, out: Path, nights: int | None = None) -> list[Path]:
    """Write the history of spec `name` into `out`; the paths. ConfigError: no nightly."""
    uri = resolve_uri(uri)
    runs = _nights(uri, name, DEFAULT_NIGHTS if nights is None else nights)
    if not runs:
        raise ConfigError(f"{name}: no finished nightly of this spec at {url_shown(uri)}")
    mlflow = client(uri)
    tables = [history.trials(mlflow, run) for run in runs]
    axes = [c for c in tables[0].columns if c in _grid_columns(tables[0])]
    seeds = [a for a in SEED_AXES if a in axes]
    cells = [a for a in axes if a not in seeds]
    comparison = compare(
        tables[0], tables[1] if len(tables) > 1 else None, tables[1:], cells, seeds,
        lookback=len(tables) - 1,
    )  # fmt: skip
    names = {i: run.info.run_name for i, run in enumerate(runs)}
    table = comparison.nights.assign(night=comparison.nights["night"].map(names))
    wide = table.pivot(index="cell", columns="night", values="median_px")
    wide = wide[[names[i] for i in range(len(runs)) if names[i] in wide.columns]]
    wide = wide.reindex([c for c in comparison.cells["cell"] if c in wide.index])  # grid order
    verdicts = pd.DataFrame(
        {"night": [names[i] for i in range(len(runs))],
         "verdict": [run.data.tags.get(history.VERDICT_TAG, "-") for run in runs],
         "run_id": [run.info.run_id for run in runs]}
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "history.csv", wide.to_csv())
    text = f"# {name}: nightly history (median probe error, px; newest first)\n\n"
    text += markdown(wide.reset_index()) + "\n\n" + markdown(verdicts) + "\n"
    write_text(out / "history.md", text)
    figure = plot_cell_history(comparison, out / "cell-history.png")
    return [out / "history.csv", out / "history.md", figure]


def _grid_columns(trials: pd.DataFrame) -> list[str]:
    """The grid axes of a trials table: the columns between its ``trial_id`` and ``status``."""
    columns = list(trials.columns)
    return columns[columns.index("trial_id") + 1 : columns.index("status")]
