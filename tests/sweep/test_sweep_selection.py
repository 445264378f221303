"""sweep/selection.py: the search's choice per cell, by its own metric and direction."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sweep_helpers import write_spec

from ssvae_core.sweep import selection, spec


def _search(tmp_path: Path, mode: str, metric: str) -> spec.SweepSpec:
    body = f"""\
        grid: {{coupling.kind: [gaussian, laplace]}}
        search:
          metric: {metric}
          mode: {mode}
          num_samples: 3
          space: {{train.lr: {{dist: loguniform, low: 1.0e-3, high: 0.1}}}}
        """
    return spec.load(write_spec(tmp_path, f"s-{mode}", body))


def _trials() -> pd.DataFrame:
    rows = [
        ("a", "gaussian", 0.01, "ok", 2.0, 1.0), ("b", "gaussian", 0.02, "ok", 1.0, 3.0),
        ("c", "gaussian", 0.03, "diverged", float("nan"), float("nan")),
        ("d", "laplace", 0.01, "ok", 4.0, 0.5), ("e", "laplace", 0.05, "stopped", 0.1, 9.0),
    ]  # fmt: skip
    columns = ["trial_id", "coupling.kind", "train.lr", "status", "probe_error_px", "mi_estimate"]
    return pd.DataFrame(rows, columns=columns)


def test_each_cell_selects_its_best_finished_trial_by_the_search_metric(tmp_path: Path) -> None:
    low = selection.selected(_search(tmp_path, "min", "probe_error_px"), _trials())
    assert low["trial_id"].to_dict() == {"gaussian": "b", "laplace": "d"}  # e was stopped
    high = selection.selected(_search(tmp_path, "max", "mi_estimate"), _trials())
    assert high["trial_id"].to_dict() == {"gaussian": "b", "laplace": "d"}
    other = selection.selected(_search(tmp_path, "min", "mi_estimate"), _trials())
    assert other["trial_id"].to_dict() == {"gaussian": "a", "laplace": "d"}
