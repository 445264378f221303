"""A search's selected configurations, scored again on data the search never saw.

Optuna (and ASHA) select each cell's best trial by the search's metric (`spec.metric`:
``probe_error_px`` of the held-out frames of the sweep's video, unless the spec names
another). Reporting that same number as the result is optimistic: the best of many noisy
scores is biased low. So after a search, each cell's selected configuration is trained
again on a second video (``data.seed`` + `TEST_SEED_SHIFT`: other balls, other paths, the
same seeds for the weights) and probed there. The tables and MLflow then report both, under
distinct names: ``validation_px`` (the selected trial's probe error on the sweep's video)
and ``test_px`` (on the second video); where the search chose by the probe error, their
difference is the selection's bias.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ssvae_core import loader
from ssvae_core.metrics import as_numbers
from ssvae_core.sweep.grid import ABSENT
from ssvae_core.sweep.reports.common import markdown
from ssvae_core.sweep.spec import SweepSpec
from ssvae_core.sweep.tables import cell_label
from ssvae_core.train import fit

TEST_SEED_SHIFT = 1_000_003  # far from any seed a grid uses
COLUMNS = ["cell", "trial_id", "validation_px", "test_px", "bias_px", "test_data_seed"]
SECTION = (
    "\n## Selected by the search, scored on a second video\n\n"
    "`validation_px`: the selected trial's probe error on the sweep's video (the search chose "
    "by the spec's `metric`, the probe error unless it names another); `test_px`: the same "
    f"configuration trained again on another video (data.seed + {TEST_SEED_SHIFT}); `bias_px` "
    "= validation - test, the selection's optimism where it chose by the probe error.\n\n"
)


def add_section(summary: Path, scored: pd.DataFrame) -> None:
    """Append the selected configurations' scores (`score_selected`, or ``selected.csv``
    read back) to a sweep's ``summary.md``, where there is one."""
    if summary.exists():
        with open(summary, "a", encoding="utf-8") as fh:
            fh.write(SECTION + markdown(scored.drop(columns="trial_id", errors="ignore")) + "\n")


def redraw_section(directory: Path, out: Path) -> None:
    """``ssvae report`` of a searched sweep in `directory`: its ``selected.csv`` (where the
    sweep wrote one) appended again to the ``summary.md`` just redrawn in `out`."""
    if (directory / "selected.csv").is_file():
        add_section(
            out / "summary.md", pd.read_csv(directory / "selected.csv", dtype={"cell": str})
        )


def selected(spec: SweepSpec, trials: pd.DataFrame) -> pd.DataFrame:
    """Each cell's best finished trial by the search's metric and mode: one row per cell."""
    done = trials[trials["status"] == "ok"].copy()
    done[spec.metric] = as_numbers(done[spec.metric])
    done = done.dropna(subset=[spec.metric]).assign(cell=cell_label(done, spec.group_axes))
    ascending = spec.mode == "min"
    ordered = done.sort_values(spec.metric, ascending=ascending, kind="stable")
    return ordered.drop_duplicates("cell").set_index("cell")


def score_selected(spec: SweepSpec, trials: pd.DataFrame) -> pd.DataFrame:
    """Train each cell's selected configuration on the second video; one row per cell
    (`COLUMNS`), in the order the cells first appear. One torch thread: reproducible."""
    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    cells = list(dict.fromkeys(cell_label(trials, spec.group_axes)))
    best = selected(spec, trials)
    for cell in (c for c in cells if c in best.index):
        trial = best.loc[cell]
        params = {key: trial[key] for key, _ in spec.axes if key in trial.index}
        params = {k: v for k, v in params.items() if pd.notna(v) and v != ABSENT}
        params |= {key: trial[key] for key, _ in spec.space}
        cfg = spec.trial_config(params)
        shifted = cfg.data.seed + TEST_SEED_SHIFT
        cfg = loader.from_dict({"data": {"seed": shifted}}, cfg)
        result = fit(cfg)
        validation = float(trial["probe_error_px"])
        rows.append(
            {
                "cell": cell,
                "trial_id": trial["trial_id"],
                "validation_px": validation,
                "test_px": result.probe_error_px,
                "bias_px": validation - result.probe_error_px,
                "test_data_seed": shifted,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)
