"""A validated `SweepSpec` -> what Ray Tune runs: the Tuner runs, their spaces, Optuna, ASHA.

A sweep is one or more *Tuner runs* (each a ``tune.Tuner`` under ``SWEEP_DIR/NAME``): the grid
as one run (``grid``: a ``grid_search`` over the cells' indices, so a grid may be a union of
products; with ``resources.fuse``, over the first cell of each fused `SweepSpec.groups`;
in either case the costliest first, `longest_first`, unless a scheduler runs),
or, when the spec has a ``search``, one Optuna (TPE) study per grid cell
(``cell-000``, ...), whose searched keys are Ray Tune domains that `OptunaSearch` converts. A
trial's Ray config holds its ``cell`` and its searched values (`SweepSpec.trial_params`).
Nothing is computed here; Ray is imported here, not in `spec`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from ssvae_core.sweep.spec import SweepSpec
from ssvae_core.train import relative_cost

# A search dimension (`sections.DISTRIBUTIONS`) -> a Ray Tune domain; int bounds inclusive.
DOMAINS: dict[str, Callable[[float, float], Any]] = {
    "loguniform": lambda low, high: tune.loguniform(low, high),
    "uniform": lambda low, high: tune.uniform(low, high),
    "int": lambda low, high: tune.randint(int(low), int(high) + 1),
}


def tuner_runs(spec: SweepSpec) -> list[tuple[str, dict[str, Any]]]:
    """(Tuner run name, Ray param space): one grid run, or one Optuna run per grid cell."""
    if spec.search is None:
        return [("grid", {"cell": tune.grid_search(start_order(spec))})]
    domains = {key: DOMAINS[p.dist](p.low, p.high) for key, p in spec.space}
    return [(f"cell-{c.index:03d}", {"cell": c.index, **domains}) for c in spec.cells]


def start_order(spec: SweepSpec) -> list[int]:
    """The grid's Ray trials (each named by its first cell) in the order Ray starts them:
    `longest_first`, or grid order under a scheduler (ASHA compares trials as they reach
    each rung, so the order is part of its decisions; the file's order keeps them)."""
    if spec.scheduler is not None:
        return [group[0] for group in spec.groups]
    return longest_first(spec)


def longest_first(spec: SweepSpec) -> list[int]:
    """The grid's Ray trials (each named by its first cell), the costliest first
    (`train.relative_cost`, summed over a fused trial's cells; ties in grid order).

    Ray starts a grid's trials in this order, each on the first free slot: longest first, the
    last to start are short, and the sweep does not end on one long trial running alone
    beside idle slots. A trial's own numbers do not depend on the order (its seed); which
    trials a ``budget.time_budget_s`` leaves unfinished does. Tables stay in grid order
    (`runner.trial_rows`).
    """

    def cost(group: tuple[int, ...]) -> float:
        return sum(relative_cost(spec.cells[cell].config) for cell in group)

    return [group[0] for group in sorted(spec.groups, key=cost, reverse=True)]


def searcher(spec: SweepSpec) -> OptunaSearch | None:
    """Optuna's TPE over the searched keys (seeded), or None for a plain grid."""
    if spec.search is None:
        return None
    import optuna  # imported by OptunaSearch: its logger is set at import, so quieted after

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created" per cell
    return OptunaSearch(metric=spec.metric, mode=spec.mode, seed=spec.search.seed)


def _asha(spec: SweepSpec) -> ASHAScheduler:
    """ASHA on ``epoch``: max_t one past the longest trial, so survivors finish themselves."""
    assert spec.scheduler is not None
    return ASHAScheduler(
        time_attr="epoch",
        max_t=spec.longest + 1,  # a searched train.epochs' high bound too
        grace_period=spec.scheduler.grace_period,
        reduction_factor=spec.scheduler.reduction_factor,
    )


SCHEDULERS: dict[str, Callable[[SweepSpec], Any]] = {"asha": _asha}  # `sections.SCHEDULERS`


def scheduler(spec: SweepSpec) -> Any:
    """The spec's trial scheduler (`SCHEDULERS`), or None."""
    return None if spec.scheduler is None else SCHEDULERS[spec.scheduler.kind](spec)
