"""The small sections of a sweep file, each a frozen dataclass checked in ``__post_init__``.

Built from YAML by `section` with the core's strict loader, so an unknown key, a wrong type or
a value out of range is a `ConfigError` naming the dotted key (``resources.gpu: must be >= 0``).
Nothing here imports Ray: `space` turns these into Ray Tune and Optuna objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ssvae_core import loader
from ssvae_core.errors import check, shown
from ssvae_core.errors import check_name as choose
from ssvae_core.metrics import SEARCHABLE
from ssvae_core.sweep.nightly.compare import LOOKBACK, RESAMPLES, Tolerance

SEED_AXES = ("train.seed", "data.seed")  # replicate axes: tables aggregate over and pair by them
# The names a sweep file may use; `space` maps each to Ray Tune (a test checks they agree).
DISTRIBUTIONS = ("loguniform", "uniform", "int")  # int bounds are inclusive
SCHEDULERS = ("asha",)
T = TypeVar("T")


@dataclass(frozen=True)
class SearchParam:
    """One searched key: ``dist`` in `DISTRIBUTIONS`, bounds [low, high] (int: inclusive)."""

    dist: str = "uniform"
    low: float = 0.0
    high: float = 1.0

    def __post_init__(self) -> None:
        choose(self.dist, "dist", DISTRIBUTIONS)
        check(self.low < self.high, "high", f"must be > low ({self.low}), got {self.high}")
        if self.dist == "loguniform":
            check(self.low > 0, "low", f"must be > 0 for loguniform, got {self.low}")
        if self.dist == "int":
            whole = self.low.is_integer() and self.high.is_integer()
            check(whole, "low", f"int bounds must be whole, got {self.low}, {self.high}")

    def coerce(self, value: Any) -> Any:
        """A sampled value as the config expects it (int for ``int``, else float)."""
        return int(value) if self.dist == "int" else float(value)


@dataclass(frozen=True)
class SearchOptions:
    """The ``search`` section less its ``space``: what Optuna optimises, and how long."""

    metric: str = "probe_error_px"
    mode: str = "min"
    num_samples: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        choose(self.metric, "metric", SEARCHABLE)
        choose(self.mode, "mode", ("min", "max"))
        check(self.num_samples >= 1, "num_samples", f"must be >= 1, got {self.num_samples}")
        ok = 0 <= self.seed <= 2**32 - 1  # Optuna's; refused by Ray after the sweep started
        check(ok, "seed", f"must be in [0, 2**32 - 1], got {self.seed}")


@dataclass(frozen=True)
class SchedulerSpec:
    """ASHA on ``epoch``; its top rung sits past ``train.epochs``, so survivors finish."""

    kind: str = "asha"
    grace_period: int = 1
    reduction_factor: float = 2.0

    def __post_init__(self) -> None:
        choose(self.kind, "kind", SCHEDULERS)
        check(self.grace_period >= 1, "grace_period", f"must be >= 1, got {self.grace_period}")
        factor = self.reduction_factor
        check(factor > 1, "reduction_factor", f"must be > 1, got {factor}")


RESOURCE_UNIT = 0.0001  # Ray refuses a nonzero share below it (MIN_RESOURCE_GRANULARITY)


@dataclass(frozen=True)
class Resources:
    """Per trial; ``gpu`` may be fractional (0.25: four trials share a GPU).

    ``wait_for_nodes_s``: on a cluster that adds nodes, how long to wait for one that holds a
    trial before refusing (0: refuse at once when no live node does; `cluster`).
    ``fuse``: up to this many grid cells of one shape train as one fused model in one Ray
    trial (`ssvae_core.fused`), each still its own MLflow run, checkpoint and result row.
    """

    cpu: float = 1.0
    gpu: float = 0.0
    wait_for_nodes_s: float = 0.0
    fuse: int = 1

    def __post_init__(self) -> None:
        check(self.cpu > 0, "cpu", f"must be > 0, got {self.cpu}")
        check(self.gpu >= 0, "gpu", f"must be >= 0, got {self.gpu}")
        for key, amount in (("cpu", self.cpu), ("gpu", self.gpu)):
            check(
                amount == 0 or amount >= RESOURCE_UNIT,
                key,
                f"must be 0 or >= {RESOURCE_UNIT} (the finest share Ray schedules), got {amount}",
            )
        check(self.fuse >= 1, "fuse", f"must be >= 1, got {self.fuse}")
        check(self.wait_for_nodes_s >= 0, "wait_for_nodes_s", "must be >= 0")


@dataclass(frozen=True)
class Budget:
    time_budget_s: float | None = None
    max_trials: int | None = None  # a guard: a sweep with more trials is refused

    def __post_init__(self) -> None:
        seconds, trials = self.time_budget_s, self.max_trials
        check(seconds is None or seconds > 0, "time_budget_s", f"must be > 0, got {seconds}")
        check(trials is None or trials >= 1, "max_trials", f"must be >= 1, got {trials}")


@dataclass(frozen=True)
class Execution:
    """The top-level ``max_concurrent`` (None: as many as resources allow), ``max_failures``."""

    max_concurrent: int | None = None
    max_failures: int = 3

    def __post_init__(self) -> None:
        n = self.max_concurrent
        check(n is None or n >= 1, "max_concurrent", f"must be >= 1, got {n}")
        check(self.max_failures >= 0, "max_failures", f"must be >= 0, got {self.max_failures}")


@dataclass(frozen=True)
class NightlyTolerance:
    """How far a cell may move before ``ssvae nightly`` calls it a regression (or an
    improvement): its paired delta's interval beyond ``abs_px`` and beyond ``rel`` of the
    baseline. Defaults measured in docs/nightly.md (`nightly.compare.Tolerance`)."""

    abs_px: float = Tolerance.abs_px
    rel: float = Tolerance.rel

    def __post_init__(self) -> None:
        check(self.abs_px > 0, "abs_px", f"must be > 0, got {self.abs_px}")
        check(self.rel > 0, "rel", f"must be > 0, got {self.rel}")


MAX_RESAMPLES = 100_000  # ten times the default


@dataclass(frozen=True)
class NightlySection:
    """The ``nightly`` section: the tolerance, the slowdown ratio that is a finding, the
    history's z threshold and length (``--history`` overrides it), and the bootstrap."""

    tolerance: NightlyTolerance = field(default_factory=NightlyTolerance)
    slowdown: float = Tolerance.slowdown
    history_z: float = Tolerance.history_z
    history: int = LOOKBACK
    resamples: int = RESAMPLES
    seed: int = 0

    def __post_init__(self) -> None:
        check(self.slowdown > 1, "slowdown", f"must be > 1, got {self.slowdown}")
        check(self.history_z > 0, "history_z", f"must be > 0, got {self.history_z}")
        check(self.history >= 0, "history", f"must be >= 0, got {self.history}")
        check(  # each draws a resample of every cell's pairs: 10**12 was 21.8 TiB, after training
            100 <= self.resamples <= MAX_RESAMPLES,
            "resamples",
            f"must be in [100, {MAX_RESAMPLES}], got {self.resamples}",
        )
        ok = 0 <= self.seed <= 2**63 - 1  # numpy's generator; refused after a night's training
        check(ok, "seed", f"must be in [0, 2**63 - 1], got {self.seed}")


def section(cls: type[T], raw: Any, prefix: str) -> T:
    """A section dataclass from a mapping: unknown keys, types and ranges name the key."""
    return loader.build(cls, cls(), {} if raw is None else raw, prefix)


def parse_search(raw: Any) -> tuple[SearchOptions | None, tuple[tuple[str, SearchParam], ...]]:
    """``search`` -> its options and its space ((key, `SearchParam`) per searched key)."""
    if raw is None:
        return None, ()
    check(isinstance(raw, Mapping), "search", f"expected a mapping, got {shown(raw)}")
    space = raw.get("space")
    ok = isinstance(space, Mapping) and bool(space)
    got = shown(space)
    check(ok, "search.space", f"expected a mapping of key -> {{dist, low, high}}, got {got}")
    options = {k: v for k, v in raw.items() if k != "space"}
    return section(SearchOptions, options, "search."), tuple(
        (str(key), section(SearchParam, value, f"search.space.{key}."))
        for key, value in space.items()
    )
