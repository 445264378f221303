"""What MLflow's web UI shows of a sweep: a colour per table cell, two saved views, a link.

Plain values for `tracking` to log (no MLflow import here). What MLflow 3.17's UI reads, from
its source and checked in a browser by ``tests/e2e/test_mlflow_ui.py``:

- **Run colours.** The run tag ``mlflow.runColor`` (``#rrggbb``) colours a run's dot in the
  runs table and its lines in the charts; without it MLflow hashes a colour from the run id.
  `cell_colour` gives every trial of a table cell (its grid axes without the seed axes) the
  same colour, from matplotlib's default cycle; the parent run is grey (`PARENT_COLOUR`).
- **Saved views** (MLflow >= 3.15). A view is an experiment tag
  ``mlflow.sharedViewState.ID`` whose value is JSON ``{name, createdAt, updatedAt, state}``;
  ``state`` is JSON text of the runs table's settings: ``selectedColumns``, ``columnOrder``
  and ``columnWidths`` (column ids like ``metrics.`probe_error_px```), ``groupBy``, and the
  sort and filter (``orderByKey``, ``searchFilter``). MLflow lists the views under "Views" and opens
  one by the URL parameter ``viewStateShareKey=ID``. `saved_views` writes two:
  ``ssvae-runs``, each sweep's parent run with its trials nested under it and the probe
  error as a column (unsorted: MLflow nests child runs only when the table is sorted by
  start time), and ``ssvae-cells``, the trials grouped by cell, where MLflow shows each
  group's average (its only aggregates are min, max and average; no median).
- **The page an experiment opens on** follows the sidebar's GenAI / Model training switch
  (browser storage, GenAI by default), not the experiment tag ``mlflow.experimentKind``
  (mlflow/mlflow#24498); the URL parameter ``workflowType=machine_learning`` overrides the
  switch, so `link` carries it.

Not possible in MLflow 3.17: columns or grouping shown without opening a view (the defaults
are fixed in the UI, mlflow/mlflow#12764), a saved view with runs expanded (MLflow drops
``runsExpanded`` from a view), a colour for a group row.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from ssvae_core.sweep.grid import Params
from ssvae_core.sweep.sections import SEED_AXES
from ssvae_core.sweep.spec import SweepSpec

RUN_COLOUR_TAG = "mlflow.runColor"
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
RUNS_VIEW, CELLS_VIEW = "ssvae-runs", "ssvae-cells"  # view ids (URL: viewStateShareKey=ID)
# matplotlib's default colour cycle (C0-C9) without its grey, which marks the parent run.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#bcbd22", "#17becf",
)  # fmt: skip
PARENT_COLOUR = "#7f7f7f"
SHOWN_METRICS = ("probe_error_px", "mi_estimate")  # columns of both views, then the metric
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves a sqlite or file store


def cell_of(params: Params) -> Params:
    """A grid point's table cell: its axis values without the seed (replicate) axes."""
    return tuple((key, value) for key, value in params if key not in SEED_AXES)


def cell_colour(spec: SweepSpec, index: int) -> str:
    """The colour of grid point `index`'s cell: cells numbered in grid order, the palette
    cycled (a grid of more cells than colours repeats them)."""
    cells = list(dict.fromkeys(cell_of(cell.params) for cell in spec.cells))
    return PALETTE[cells.index(cell_of(spec.cells[index].params)) % len(PALETTE)]


def _column(kind: str, key: str) -> str:
    """MLflow's id of a runs-table column (``metrics.`probe_error_px```)."""
    return f"{kind}.`{key}`"


def view_state(spec: SweepSpec, grouped: bool) -> dict[str, Any]:
    """The runs table's settings of a view: the metrics, then every axis and searched key as
    a ``sweep.*`` param; grouped by the cell's axes when `grouped` (and the grid has any)."""
    metrics = list(dict.fromkeys([*SHOWN_METRICS, spec.metric]))
    params = [f"sweep.{key}" for key, _ in spec.axes] + [f"sweep.{key}" for key, _ in spec.space]
    columns = [_column("metrics", m) for m in metrics] + [_column("params", p) for p in params]
    state: dict[str, Any] = {
        "selectedColumns": columns,
        # MLflow applies a width only to a column named in the order; metrics before params
        "columnOrder": ["duration", *columns],
        "columnWidths": {column: 180 for column in columns[: len(metrics)]},  # full numbers
        "orderByKey": "attributes.start_time",  # the only order that nests child runs
        "orderByAsc": False,
        "searchFilter": "",
        "groupBy": None,
    }
    if grouped and spec.group_axes:
        keys = [{"mode": "param", "groupByData": f"sweep.{key}"} for key in spec.group_axes]
        state["groupBy"] = {"aggregateFunction": "average", "groupByKeys": keys}
    return state


def saved_views(spec: SweepSpec, now_ms: int) -> dict[str, str]:
    """The experiment tags of the two views (`RUNS_VIEW`, `CELLS_VIEW`): tag key -> value."""
    views = {
        RUNS_VIEW: ("ssvae: sweeps and their trials", False),
        CELLS_VIEW: ("ssvae: trials by cell", True),
    }
    tags = {}
    for view_id, (name, grouped) in views.items():
        state = json.dumps(view_state(spec, grouped), separators=(",", ":"))
        envelope = {"name": name, "createdAt": now_ms, "updatedAt": now_ms, "state": state}
        tags[VIEW_TAG_PREFIX + view_id] = json.dumps(envelope, separators=(",", ":"))
    return tags


def link(uri: str, experiment_id: str, view: str = RUNS_VIEW) -> str:
    """The URL of the experiment's runs table in view `view`, on the training-runs pages.

    An ``http(s)://`` tracking URI is the UI's own address (less any user info); for a sqlite
    or file store it is `LOCAL_UI`, where ``mlflow ui`` started next to the store listens by
    default.
    """
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme in ("http", "https"):  # without a user:password@, which a log would keep
        base = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}".rstrip("/")
    else:
        base = LOCAL_UI
    query = f"workflowType=machine_learning&viewStateShareKey={view}"
    return f"{base}/#/experiments/{experiment_id}/runs?{query}"
