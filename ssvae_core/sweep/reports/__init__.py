"""The studies' reports: a sweep's trials table -> figures (PNG) and a markdown summary.

A sweep file names its study's report with ``report:`` (default ``fig1c``). At the end of the
sweep, and again on ``ssvae report FILE``, `write` draws the probe error of every cell
(``fig1c.png``, every sweep) and runs the study's own report, ``REPORTS[name]``: one module of
this package each, whose ``report(trials, context, out)`` writes its figures into `out` and
returns them with its tables as markdown (``summary.md``; the tables of the docs pages).

Trials are paired by seed: an arm is a grid cell (its axes but the seed axes), and a pair is
one value of the seed axes (``train.seed``, and ``data.seed`` if swept), so a method and its
control share the video and the initialisation.

- ``fig1c``: probe error per method and seed, and each method against the ``untrained``
  control of the same seed (the encoder at its initialisation, same probe).
- ``critics``: final MI estimate against probe error, per estimator (Tschannen et al. 2019).
- ``negatives``: probe error and the InfoNCE bound against N, with the ceiling log(N + 1).
- ``lengthscale``: fixed and learned L of the Gaussian prior N(z, L^2) (eqs. 35-36) against
  the initial L, and the learned L against the balls' true per-frame displacement.
- ``stochastic``: probe error, ELBO (eq. 20) and its Jensen gap (eqs. 18, 22) per encoder.

This module imports no plotting library: a sweep file is validated against `REPORTS`
without loading matplotlib; a report's module loads when it runs.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING

from ssvae_core.config import RunConfig
from ssvae_core.errors import ConfigError, shown
from ssvae_core.files import write_text
from ssvae_core.metrics import as_numbers
from ssvae_core.sweep.grid import ABSENT
from ssvae_core.sweep.sections import SEED_AXES

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportContext:
    """What a report knows of its sweep: its name, the axes of a cell, the base config."""

    name: str
    group_axes: Sequence[str]
    base: RunConfig


@dataclass(frozen=True)
class ReportOutput:
    """What a study's report wrote (its PNGs) and its tables as markdown."""

    figures: list[Path]
    markdown: str


@dataclass(frozen=True)
class Report:
    """A study's report: the module of this package that draws it, the grid axes it reads
    (checked when a sweep file is parsed), the trials table's metric columns it reads
    beyond `COLUMNS` (checked by ``ssvae report`` before it draws) and the figures it may
    write."""

    module: str
    axes: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    figures: tuple[str, ...] = ()  # the PNGs it may write: none is left from an earlier draw


COLUMNS = ("status", "probe_error_px")  # what every report reads (fig1c.png of every sweep)
REPORTS: dict[str, Report] = {
    "fig1c": Report("fig1c", figures=("fig1c-paired.png",)),
    "critics": Report(
        "critics",
        ("coupling.kind", "objective.estimator"),
        ("mi_estimate",),
        ("critics-mi-vs-probe.png",),
    ),
    "negatives": Report(
        "negatives",
        ("coupling.kind", "objective.n_negatives"),
        ("mi_estimate",),
        ("negatives.png",),
    ),
    "lengthscale": Report(
        "lengthscale",
        ("coupling.learn_lengthscale", "coupling.lengthscale"),
        ("lengthscale", "mi_estimate"),
        ("lengthscale.png",),
    ),
    "stochastic": Report(
        "stochastic", ("method", "train.seed"), ("elbo", "elbo_gap"), ("stochastic.png",)
    ),
}


def columns(name: str) -> tuple[str, ...]:
    """The trials table's columns report `name` cannot draw without (its grid axes come from
    the sweep): `COLUMNS` and its own metrics."""
    return (*COLUMNS, *REPORTS[name].metrics)


def check_values(
    name: str,
    trials: pd.DataFrame,
    axes: Sequence[tuple[str, Sequence[object]]],
    where: str,
    partial: Collection[str] = (),
    most: int | None = None,
    one_per_cell: bool = False,
) -> None:
    """A `ConfigError` naming the column and row of a trials table value report `name`
    would misread (``ssvae report`` on a table edited or written elsewhere): more rows than
    the sweep's `most` trials (a table of 400 000 rows took minutes), a status the runner
    never writes (an empty one: a row cut short), a metric that is no number (``abc`` was
    dropped by one study and a traceback in another; ``True`` was drawn as 1), a probe error
    below 0 or infinite, a seed that is no integer (``0.5`` became a seed of its own), a
    value the sweep's grid does not have on one of its axes (``x`` among ``True``/``False``
    read every row as learned), and with `one_per_cell` (a grid, no search) a second row of
    one cell. An empty metric is a trial that failed; ``-`` on an axis in `partial` (one
    some grid blocks lack), a cell of such a block."""
    import numpy as np

    from ssvae_core.sweep.tables import STATUSES

    def refuse(column: str, bad: pd.Series, what: str) -> None:
        line = int(bad.to_numpy().nonzero()[0][0])
        value = trials[column].iloc[line]
        value = value.item() if hasattr(value, "item") else value  # numpy's scalars: as read
        raise ConfigError(f"{where}: row {line + 1}: {column} holds {shown(value)}, not {what}")

    if most is not None and len(trials) > most:
        raise ConfigError(
            f"{where}: {len(trials)} rows, more than the sweep's {most} trials: not its table"
        )
    if "status" in trials.columns:
        refuse_if = ~trials["status"].isin(STATUSES)
        if refuse_if.any():
            refuse("status", refuse_if, f"one of {', '.join(STATUSES)}")
    for column in ("probe_error_px", *REPORTS[name].metrics):  # the numbers it draws
        if column not in trials.columns:
            continue
        values = trials[column]
        if values.dtype == bool:
            refuse(column, values.notna(), "a number")
        numbers = as_numbers(values)
        bad = numbers.isna() & values.notna()
        if bad.any():
            refuse(column, bad, "a number")
        if column == "probe_error_px":  # a distance in pixels
            bad = numbers.notna() & ~(np.isfinite(numbers) & (numbers >= 0))
            if bad.any():
                refuse(column, bad, "a finite error >= 0 px")
    for column, allowed in axes:
        if column not in trials.columns:
            continue
        values = trials[column]
        given = [v for v in allowed if v is not None]  # None: an empty cell, as written
        grid = f"a value of the grid ({', '.join(map(str, allowed))})"
        if None not in allowed and values.isna().any():  # an empty cell: a row cut short
            refuse(column, values.isna(), grid)
        if column in partial:  # the runner's '-': a cell of a block without this axis
            values = values.where(values.astype(str) != ABSENT)
        numbers = as_numbers(values)
        if column in SEED_AXES:
            seed = (numbers == numbers.round()) & (numbers >= 0) & (numbers < 2**63)  # not inf
            bad = values.notna() & (numbers.isna() | ~seed | (values.dtype == bool))
            if bad.any():
                refuse(column, bad, "an integer seed")
        if column in SEED_AXES or all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in given
        ):
            bad = values.notna() & numbers.isna()  # objective.n_negatives: `abc`
            if bad.any():  # was pandas' "Unable to parse string" with neither row nor column
                refuse(column, bad, "a number")
            exact = {_number(v) for v in given}  # seeds beyond 2**53 too: not as floats
            bad = values.notna() & ~values.map(_number).isin(exact)
        else:  # a method, a coupling's name, True/False: as the runner writes them
            bad = values.notna() & ~values.astype(str).isin([str(v) for v in given])
        if bad.any():  # a seed or N the sweep never ran, `x` among True/False: edited
            refuse(column, bad, grid)
    present = [column for column, _ in axes if column in trials.columns]
    if one_per_cell and present:
        again = trials.duplicated(subset=present)
        if again.any():
            line = int(again.to_numpy().nonzero()[0][0])
            raise ConfigError(
                f"{where}: row {line + 1}: a second trial of one grid cell "
                f"({', '.join(f'{c}={trials[c].iloc[line]}' for c in present)}); a grid sweep "
                "has one"
            )


def _number(value: object) -> Decimal | None:
    """A number as written, exactly (``9007199254740993`` is not the float it rounds to;
    ``1``, ``1.0`` and ``1e0`` are one), or None for no number."""
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _failures(trials: pd.DataFrame) -> str:
    """A line above the summary's tables where no trial finished ok ("" where one did)."""
    if "status" not in trials or (trials["status"] == "ok").any():
        return ""
    counts = ", ".join(f"{n} {status}" for status, n in trials["status"].value_counts().items())
    return (
        f"**No trial finished ok** ({len(trials)} trials: {counts}), so there is nothing to "
        "compare; each trial's status and error are in trials.csv.\n\n"
    )


def write(
    name: str, trials: pd.DataFrame, context: ReportContext, out: Path, strict: bool = False
) -> list[Path]:
    """The probe error per cell (``fig1c.png``), report `name`'s figures and ``summary.md``.

    At the end of a sweep (``strict=False``) a failing report is logged and skipped: the
    finished sweep must not be lost to it. ``ssvae report`` passes ``strict=True``.
    """
    from ssvae_core.sweep.reports.common import probe_error_by_cell

    out.mkdir(parents=True, exist_ok=True)
    summary = out / "summary.md"
    for stale in (summary, out / "fig1c.png", *(out / f for f in REPORTS[name].figures)):
        stale.unlink(missing_ok=True)  # never one from an earlier draw beside the new ones
    title = f"{context.name}: probe error per cell (median bar, one point per trial)"
    module = importlib.import_module(f"{__name__}.{REPORTS[name].module}")
    with warnings.catch_warnings():  # a constant input's rank correlation, a mean of none:
        warnings.simplefilter("ignore", RuntimeWarning)  # NaN, shown as - in the tables
        files = [probe_error_by_cell(trials, context.group_axes, out / "fig1c.png", title)]
        try:
            output: ReportOutput = module.report(trials, context, out)
        except Exception:
            if strict:
                raise
            log.exception("the %r report failed; redraw it with `ssvae report`", name)
            return files
    write_text(summary, f"# {context.name}\n\n{_failures(trials)}{output.markdown}\n")
    return [*files, *output.figures, summary]
