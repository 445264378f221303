"""Sweep YAML -> a validated, frozen `SweepSpec` (no Ray here: `space` builds the Tuner runs).

A sweep file (``sweeps/*.yaml``; its first line is a comment with the command that runs it)::

    name: smoke                    # default: the file's stem; the MLflow experiment too
    base: {preset: small, data.size: 32, train.epochs: 2}     # a preset + RunConfig keys
    methods: {...}                 # optional: named override bundles for the `method` axis
    grid: {method: [gaussian, bilinear], train.seed: [0, 1]}  # a product, or a list (`grid`)
    search:                        # optional: an Optuna (TPE) study inside every grid cell
      metric: probe_error_px
      mode: min
      num_samples: 12
      space: {train.lr: {dist: loguniform, low: 1.0e-4, high: 0.1}}
    scheduler: {kind: asha, grace_period: 2, reduction_factor: 3}   # optional
    resources: {cpu: 1, gpu: 0.25}   # fuse: K trains up to K grid cells as one model
    budget: {time_budget_s: 3600, max_trials: 200}
    max_concurrent: 4
    max_failures: 3
    report: fig1c                  # the study's figures and summary (`reports.REPORTS`)
    nightly: {tolerance: {abs_px: 0.05, rel: 0.05}}   # how `ssvae nightly` judges it

Keys under ``base``, ``methods.*``, ``grid`` and ``search.space`` are RunConfig keys, dotted
(``train.lr``) or nested. The grid axis ``method`` picks a bundle from `config.METHODS`
(the Fig. 1C methods: supervised, gaussian, bilinear, untrained), updated by ``methods``: a
new name is a new bundle, a built-in name keeps what it does not set (``supervised: {train.lr:
0.01}`` is still supervised, with Adam, at lr 0.01).

`parse` counts the cells first (a grid beyond ``budget.max_trials`` or `MAX_CELLS` is refused
before any is built), then builds EVERY trial config with `loader.from_dict` - each grid
cell, and each cell with the search keys at their low and at their high bounds - so a bad
value fails here with a `ConfigError` naming the dotted key, before Ray starts or any MLflow
run exists. ``overrides`` (``ssvae nightly --set``) apply to every trial, last.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from ssvae_core import config, loader, safe_yaml
from ssvae_core.config import RunConfig
from ssvae_core.couplings import coupling_params
from ssvae_core.errors import ConfigError, check, key_shown, shown, within
from ssvae_core.errors import check_name as choose
from ssvae_core.fused import fuse_key
from ssvae_core.metrics import SEARCHABLE
from ssvae_core.sweep import grid
from ssvae_core.sweep.grid import METHOD_AXIS
from ssvae_core.sweep.reports import REPORTS, ReportContext
from ssvae_core.sweep.sections import (
    SEED_AXES,
    Budget,
    Execution,
    NightlySection,
    Resources,
    SchedulerSpec,
    SearchOptions,
    SearchParam,
    parse_search,
    section,
)
from ssvae_core.sweep.storage import check_name_component

MAX_CELLS = 10_000  # a grid beyond this is a typo, not a study
_TOP_KEYS = (
    "name", "experiment", "description", "base", "methods", "grid", "search",
    "scheduler", "resources", "budget", "max_concurrent", "max_failures", "report", "nightly",
)  # fmt: skip


@dataclass(frozen=True)
class Cell:
    """One point of the grid: its axis values (its block's axes) and its validated config."""

    index: int
    params: grid.Params
    config: RunConfig

    @property
    def label(self) -> str:
        return grid.label(self.params)

    def row(self, axes: grid.Axes) -> dict[str, Any]:
        """Its value on every axis of the sweep (`grid.ABSENT` for other blocks' axes)."""
        own = dict(self.params)
        return {key: own.get(key, grid.ABSENT) for key, _ in axes}


@dataclass(frozen=True)
class SweepSpec:
    name: str
    experiment: str  # the MLflow experiment
    description: str  # the parent run's note in the MLflow UI
    text: str  # the YAML source, logged to the parent run
    base: RunConfig
    methods: Mapping[str, Mapping[str, Any]]  # method name -> nested overrides
    axes: grid.Axes  # every axis of any grid block (`grid.union`)
    search: SearchOptions | None
    space: tuple[tuple[str, SearchParam], ...]
    scheduler: SchedulerSpec | None
    resources: Resources
    budget: Budget
    execution: Execution
    report: str = "fig1c"  # a key of `reports.REPORTS`
    cells: tuple[Cell, ...] = ()
    overrides: Mapping[str, Any] = field(default_factory=dict)  # nested; every trial, last
    nightly: NightlySection = field(default_factory=NightlySection)  # `ssvae nightly` judges

    @property
    def metric(self) -> str:
        return self.search.metric if self.search else "probe_error_px"

    @property
    def mode(self) -> str:
        return self.search.mode if self.search else SEARCHABLE["probe_error_px"]

    @property
    def n_trials(self) -> int:
        return len(self.cells) * (self.search.num_samples if self.search else 1)

    @property
    def group_axes(self) -> list[str]:
        """The grid axes that name a table cell: all but the replicate (seed) axes."""
        return [key for key, _ in self.axes if key not in SEED_AXES]

    def trial_config(self, params: Mapping[str, Any]) -> RunConfig:
        """The config of the trial with these axis and searched values (then `overrides`)."""
        searched = dict(self.space)
        values: dict[str, Any] = {}
        if METHOD_AXIS in params:
            loader.merge(values, deepcopy(dict(self.methods[params[METHOD_AXIS]])))
        axes = {  # nested as one mapping: two axes that set one key are refused
            key: searched[key].coerce(value) if key in searched else value
            for key, value in params.items()
            if key != METHOD_AXIS
        }
        loader.merge(values, loader.nest(axes, "grid"))
        loader.merge(values, deepcopy(dict(self.overrides)))
        return loader.from_dict(values, self.base)

    def corner_configs(self, cell: Cell) -> Iterator[tuple[str, RunConfig]]:
        """Where and the config of the cell's trials at each corner of the search space (every
        searched key at its low bound, then each in turn at its high one); none without a
        search. A config that cannot be built is a `ConfigError` naming the corner."""
        for corner in _corners(self.space):
            where = f"search.space at {corner}, grid cell {cell.label}"
            yield where, within(where, self.trial_config, {**dict(cell.params), **corner})

    @cached_property
    def longest(self) -> int:
        """The most epochs a trial may train: the grid's cells', or the search's high bound
        where it varies ``train.epochs`` (ASHA's last rung sits past it, `space._asha`)."""
        epochs = [cell.config.train.epochs for cell in self.cells]
        if (searched := dict(self.space).get("train.epochs")) is not None:
            epochs.append(int(searched.high))
        return max(epochs)

    @cached_property
    def groups(self) -> tuple[tuple[int, ...], ...]:
        """The cells each Ray trial trains: one each, or with ``resources.fuse: K`` up to K
        cells of one `fused.fuse_key` (in grid order; a cell that cannot fuse trains alone).
        A Ray trial is named by its first cell."""
        return fused_groups(self.cells, self.resources.fuse)

    def members(self, cell: int) -> tuple[int, ...]:
        """The cells of the Ray trial whose first cell is `cell`."""
        return next(group for group in self.groups if group[0] == cell)

    def trial_params(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """A trial's axis values and searched values, from its Ray config (``cell`` + searched)."""
        searched = {key: config[key] for key, _ in self.space if key in config}
        return {**dict(self.cells[int(config["cell"])].params), **searched}

    def report_context(self) -> ReportContext:
        """What the study's report needs to know of this sweep."""
        return ReportContext(self.name, self.group_axes, self.base)


def fused_groups(cells: tuple[Cell, ...], fuse: int) -> tuple[tuple[int, ...], ...]:
    """Cells in groups of up to `fuse` that share a `fused.fuse_key`, in grid order."""
    if fuse == 1:
        return tuple((cell.index,) for cell in cells)
    by_key: dict[Any, list[int]] = {}
    for cell in cells:
        key = fuse_key(cell.config)
        by_key.setdefault(cell.index if key is None else key, []).append(cell.index)
    chunks = [
        tuple(members[start : start + fuse])
        for members in by_key.values()
        for start in range(0, len(members), fuse)
    ]
    return tuple(sorted(chunks))


def _check_fuse(spec: SweepSpec) -> None:
    """``resources.fuse`` packs grid trials; a search or a trial scheduler cannot use it."""
    if spec.resources.fuse == 1:
        return
    check(
        spec.search is None,
        "resources.fuse",
        "fuses grid cells into one trial; a search (Optuna) proposes one trial at a time, "
        "so set resources.fuse: 1 or drop search",
    )
    check(
        spec.scheduler is None,
        "resources.fuse",
        "fuses cells that train together; a scheduler (ASHA) stops single trials, so set "
        "resources.fuse: 1 or drop scheduler",
    )


def _check_swept_couplings(spec: SweepSpec) -> None:
    """A swept ``coupling.*`` key must be a parameter of the coupling of every cell it is in."""
    for cell in spec.cells:
        swept = [key for key, _ in cell.params] + [key for key, _ in spec.space]
        for key in (k for k in swept if k.startswith("coupling.") and k != "coupling.kind"):
            cfg, field = cell.config, key.split(".", 1)[1]
            ssl = cfg.train.mode == "ssl"
            what = (
                f"the coupling {cfg.coupling.kind!r} of grid cell ({cell.label}) has no {field!r}"
                if ssl
                else f"grid cell ({cell.label}) trains no coupling (train.mode {cfg.train.mode})"
            )
            ok = ssl and field in coupling_params(cfg.coupling.kind)
            check(ok, key, f"{what}: sweeping it changes nothing")


def _corners(space: tuple[tuple[str, SearchParam], ...]) -> list[dict[str, Any]]:
    """Every searched key at its low bound, then each one in turn at its high bound."""
    if not space:
        return []
    low = {key: p.coerce(p.low) for key, p in space}
    return [low] + [{**low, key: p.coerce(p.high)} for key, p in space]


def _methods(raw: Any) -> dict[str, dict[str, Any]]:
    """`config.METHODS` updated by the file's ``methods`` (nested overrides per name)."""
    extra = {} if raw is None else raw
    check(isinstance(extra, Mapping), "methods", f"expected a mapping, got {shown(extra)}")
    methods = deepcopy(config.METHODS)
    for name, bundle in extra.items():  # a built-in one updated, not replaced
        check(isinstance(name, str), "methods", f"a method's name is text, got {shown(name)}; "
              "quote it")  # fmt: skip
        nested = loader.nest(bundle, f"methods.{name}")
        for part, values in nested.items():  # `train: 5` was named `train` alone, later
            ok = isinstance(values, Mapping)
            check(ok, f"methods.{name}.{part}", f"expected a mapping, got {shown(values)}")
        loader.check_keys(nested, f"methods.{name}.")  # not '(in grid cell method=...)'
        loader.merge(methods.setdefault(str(name), {}), nested)
    return methods


def _check_methods_used(raw: Any, blocks: tuple[grid.Axes, ...]) -> None:
    """Each method the file defines is on a grid block's method axis: one that is not (a
    misspelt ``gausian``) was neither used nor checked."""
    used = {v for axes in blocks for key, values in axes if key == METHOD_AXIS for v in values}
    for name in raw if isinstance(raw, Mapping) else ():
        check(
            name in used,
            f"methods.{name}",
            f"not on any grid block's method axis ({', '.join(sorted(map(str, used))) or 'none'}); "
            "a misspelt name?",
        )


def parse(
    text: str,
    default_name: str = "sweep",
    where: str = "<sweep>",
    overrides: Mapping[str, Any] | None = None,
) -> SweepSpec:
    """Validate a sweep file's text; every trial config is built (see the module doc).

    overrides: nested config values applied to every trial, last (``--set``).
    """
    raw = safe_yaml.read_yaml(text, where)
    check(isinstance(raw, Mapping), where, f"expected a mapping of sections, got {shown(raw)}")
    for key in raw:
        check(key in _TOP_KEYS, key_shown(key), f"unknown key; valid keys: {', '.join(_TOP_KEYS)}")
    try:
        name = check_name_component(raw.get("name", default_name), "name")
    except ConfigError as err:
        if "name" in raw:
            raise
        raise ConfigError(f"{err} (the file's name); set name: in the file") from None
    experiment = raw.get("experiment", name)
    ok = isinstance(experiment, str) and experiment.strip() != ""
    check(ok, "experiment", f"expected a non-empty MLflow experiment name, got {shown(experiment)}")
    base_raw = dict(loader.nest(raw.get("base") or {}, "base"))
    preset = base_raw.pop("preset", config.DEFAULT_PRESET)
    choose(preset, "base.preset", config.PRESETS)
    methods = _methods(raw.get("methods"))
    blocks = grid.parse_grid(raw.get("grid"), methods)
    _check_methods_used(raw.get("methods"), blocks)
    axes = grid.union(blocks)
    search, space = parse_search(raw.get("search"))
    both = {key for key, _ in space} & {key for key, _ in axes}
    check(not both, f"search.space.{min(both, default='')}", "also a grid axis")
    searched = {key for key, _ in space}
    check(METHOD_AXIS not in searched, f"search.space.{METHOD_AXIS}",
          "a method is a name, not a number to search; make it a grid axis")  # fmt: skip
    scheduler = raw.get("scheduler")
    study = raw.get("report", "fig1c")
    choose(study, "report", REPORTS)
    missing = [a for a in REPORTS[study].axes if not grid.in_every_block(blocks, a)]
    check(not missing, "report", f"study {study!r} needs grid axes {', '.join(missing)}")
    budget = section(Budget, raw.get("budget"), "budget.")
    _check_size(grid.count(blocks), search, budget)
    again = grid.repeated(blocks)  # after the count: it walks every cell
    check(again is None, "grid", f"the cell ({again}) is in two blocks: it would train twice")
    spec = SweepSpec(
        name=name,
        experiment=experiment,
        description=str(raw.get("description", "")),
        text=text,
        base=within("base", loader.from_dict, base_raw, config.PRESETS[preset]),
        methods=methods,
        axes=axes,
        search=search,
        space=space,
        scheduler=None if scheduler is None else section(SchedulerSpec, scheduler, "scheduler."),
        resources=section(Resources, raw.get("resources"), "resources."),
        budget=budget,
        execution=section(
            Execution, {k: raw[k] for k in ("max_concurrent", "max_failures") if k in raw}, ""
        ),
        report=study,
        overrides=_checked_overrides(loader.nest(overrides or {}, "--set")),
        nightly=section(NightlySection, raw.get("nightly"), "nightly."),
    )
    cells = []
    for index, params in enumerate(grid.cells(blocks)):
        where = f"grid cell {grid.label(params)}"
        cells.append(Cell(index, params, within(where, spec.trial_config, dict(params))))
        list(spec.corner_configs(cells[-1]))  # each built, so each validated
    spec = replace(spec, cells=tuple(cells))
    _check_overrides(spec)
    _check_methods(spec, raw.get("methods") or {})
    _check_swept_couplings(spec)
    _check_fuse(spec)
    if spec.scheduler is not None:
        _check_scheduler(spec.scheduler, spec.cells, spec.longest)
    return spec


def _check_scheduler(scheduler: SchedulerSpec, cells: Sequence[Cell], epochs: int) -> None:
    """What ASHA needs of the trials (`space._asha`), checked here rather than by Ray once
    the sweep has started: a probe every epoch (between probes `fit` reports the last one
    again), a grace period within the longest trial, and rungs at most one per epoch (a
    factor near 1 made Ray build billions of them)."""
    every = sorted({cell.config.probe.every_epochs for cell in cells})
    check(
        every == [1],
        "base.probe.every_epochs",
        f"must be 1 with a scheduler (ASHA compares trials on every epoch's probe), got {every}",
    )
    grace, factor = scheduler.grace_period, scheduler.reduction_factor
    check(
        grace <= epochs,
        "scheduler.grace_period",
        f"must be <= train.epochs ({epochs}, the longest trial), got {grace}",
    )
    rungs = math.log((epochs + 1) / grace) / math.log(factor)  # ASHA's max_t: epochs + 1
    least = ((epochs + 1) / grace) ** (1 / (epochs + 1))
    check(
        rungs <= epochs + 1,
        "scheduler.reduction_factor",
        f"must be >= {least:.4g} over {epochs} epochs (ASHA's rungs, at most one per epoch), "
        f"got {factor}",
    )


def _checked_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """``--set`` values, their keys and types checked alone: an error names ``--set``, not
    the first grid cell built with them."""
    for key in overrides:
        check(key not in _TOP_KEYS, f"--set {key}", f"{key} is a section of the sweep file, not of "
              "a trial's config (what --set changes); set it in the file")  # fmt: skip
    loader.check_keys(overrides, "--set ")
    return overrides


def _check_overrides(spec: SweepSpec) -> None:
    """``--set`` applies last, to every trial (`SweepSpec.trial_config`), so a key the sweep
    varies (a grid axis or a searched key) is refused: ``--set train.seed=5`` on a nightly
    trained every seed cell with seed 5, labelled 0, 1 and 2, and paired them. Called once
    the trials are built, so the overrides are known to be sections of known keys."""
    swept = {key for key, _ in spec.axes} | {key for key, _ in spec.space}
    for key in config.flatten(spec.overrides):
        check(key not in swept, f"--set {key}", "the sweep varies it (a grid axis or searched)")


def _check_methods(spec: SweepSpec, written: Mapping[str, Any]) -> None:
    """A setting the file's ``methods`` gives a method (`written`) that its cell replaces is
    refused: a grid axis of its block with another value, or a searched key. The method ran
    at the cell's value under its own name, silently (``ssvae fig1c`` refuses the same). A
    built-in bundle's settings (``supervised``'s Adam at lr 0.03) a grid may vary."""
    searched = {key for key, _ in spec.space}
    for cell in spec.cells:
        params = dict(cell.params)
        name = params.get(METHOD_AXIS)
        if not isinstance(name, str) or name not in written:
            continue
        for key, value in config.flatten(loader.nest(written[name])).items():
            if key in searched or (key in params and params[key] != value):
                raise ConfigError(
                    f"methods.{name}.{key}: the grid or the search varies {key} too, and its "
                    f"values replace the method's ({value!r}); leave it out of one of them"
                )


def _check_size(n_cells: int, search: SearchOptions | None, budget: Budget) -> None:
    """Refuse a grid over `MAX_CELLS` or over ``budget.max_trials``, before building it."""
    n_trials = n_cells * (search.num_samples if search else 1)
    limit = budget.max_trials
    check(
        limit is None or n_trials <= limit,
        "budget.max_trials",
        f"the sweep has {n_trials} trials, more than {limit}; shrink the grid or "
        "search.num_samples, or raise the limit",
    )
    check(
        n_cells <= MAX_CELLS,
        "grid",
        f"{n_cells} cells, more than {MAX_CELLS}; shrink the grid (or split the study)",
    )


WHAT = "sweep file (sweeps/NAME.yaml)"  # how a message names it


def load(
    path: str | Path, overrides: Mapping[str, Any] | None = None, text: str | None = None
) -> SweepSpec:
    """`parse` a sweep file; its name defaults to the file's stem. A `ConfigError` names the
    path of a file that is missing, a directory or not YAML. text: the file's, read already
    (a pipe, ``<(...)``, can be read once only)."""
    path = Path(path)
    text = safe_yaml.read_text(path, WHAT) if text is None else text
    return parse(text, default_name=path.stem, where=str(path), overrides=overrides)
