"""What a sweep would run, said before it runs: ``ssvae sweep FILE --dry-run`` (`describe`),
and the grid cells that would train the same runs (`same_runs`) or search a key they do not
use (`idle_searches`), which every ``ssvae sweep`` warns of.

Two cells train the same run when every setting their runs use (`config.used`: what the
mode trains with, defaults included) is equal: ``grid: {method: [untrained, gaussian],
train.lr: [0.01, 0.1]}`` trains the untrained control twice, since it has no optimiser.
That may be meant (a flat reference on each learning rate's row of the table) but costs a
trial each, so it is a warning, not a refusal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ssvae_core import config
from ssvae_core.sweep import grid
from ssvae_core.sweep.preflight import trials_at_once
from ssvae_core.sweep.spec import Cell, SweepSpec


@dataclass(frozen=True)
class SameRun:
    """A cell that trains the same runs as an earlier one; `keys`: what they differ in."""

    first: Cell
    again: Cell
    keys: tuple[str, ...]

    def __str__(self) -> str:
        both = f"grid cells ({self.first.label}) and ({self.again.label}) train the same run"
        if not self.keys:  # one config spelt two ways (another axis, an empty method)
            return f"{both}: their settings are the same"
        mode, keys = self.again.config.train.mode, ", ".join(self.keys)
        return f"{both}: they differ only in {keys}, which train.mode {mode} does not use"


def same_runs(spec: SweepSpec) -> list[SameRun]:
    """Each cell whose runs use the same settings as an earlier cell's (in grid order)."""
    first: dict[str, Cell] = {}
    found = []
    for cell in spec.cells:
        key = json.dumps(config.used(cell.config), sort_keys=True, default=str)
        if key not in first:
            first[key] = cell
            continue
        a, b = (config.flatten(config.to_dict(c.config)) for c in (first[key], cell))
        found.append(SameRun(first[key], cell, tuple(k for k in a if a[k] != b[k])))
    return found


def idle_searches(spec: SweepSpec) -> list[str]:
    """One line per grid cell whose mode does not use a searched key (``search.space``): its
    search's trials differ only there, so they train the same run."""
    found = []
    for cell in spec.cells:
        used = config.used(cell.config)
        idle = [key for key, _ in spec.space if key not in used]
        if idle:
            n = spec.search.num_samples if spec.search else 0
            what = (
                f"its {n} trials train the same run"
                if len(idle) == len(spec.space)
                else "the values searched change nothing in its trials"
            )
            found.append(
                f"grid cell ({cell.label}) searches {', '.join(idle)}, which train.mode "
                f"{cell.config.train.mode} does not use: {what}"
            )
    return found


def describe(spec: SweepSpec, directory: Path, resume: bool = False) -> str:
    """What ``ssvae sweep`` would run for `spec` into `directory` (``--resume``: `resume`):
    the trials, their resources and budget, one line per grid cell, where the results go."""
    cells, search = spec.cells, spec.search
    lines = [f"sweep {spec.name}: {spec.n_trials} trial(s), study report {spec.report!r}"]
    if search is not None:
        lines.append(
            f"  an Optuna study of {search.num_samples} trial(s) in each of {len(cells)} grid "
            f"cell(s), {search.mode}imising {search.metric}, over "
            + ", ".join(key for key, _ in spec.space)
        )
    if spec.resources.fuse > 1:
        lines.append(
            f"  fused: {len(cells)} cells as {len(spec.groups)} Ray trial(s) (resources.fuse "
            f"{spec.resources.fuse})"
        )
    each = f"{spec.resources.cpu:g} CPU" + (
        f" and {spec.resources.gpu:g} GPU" if spec.resources.gpu else ""
    )
    lines.append(
        f"  each Ray trial: {each}; {trials_at_once(spec)} at once on this machine"
        + (f", at most {spec.execution.max_concurrent}" if spec.execution.max_concurrent else "")
    )
    if spec.scheduler is not None:
        lines.append(f"  scheduler: {spec.scheduler.kind}")
    if spec.budget.time_budget_s is not None:
        lines.append(f"  time budget: {spec.budget.time_budget_s:g} s")
    axes = [key for key, _ in spec.axes]
    rows = [["cell", *axes, "mode", "epochs"]]
    for cell in cells:
        row = cell.row(spec.axes)
        values = ["" if row[key] is grid.ABSENT else str(row[key]) for key in axes]
        train = cell.config.train
        epochs = "-" if train.mode == "untrained" else str(train.epochs)
        rows.append([str(cell.index), *values, train.mode, epochs])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines += [
        "  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    there = resume and (directory / "sweep.yaml").exists()  # `storage.check_state` passed
    lines.append(f"  results: {directory} ({'the sweep there continued' if there else 'new'})")
    lines.append(f"  MLflow experiment: {spec.experiment}")
    return "\n".join(lines)
