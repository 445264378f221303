"""The studies' reports: a sweep's trials table -> figures (PNG) and a markdown summary.

A sweep file names its study with ``report:`` (default ``fig1c``); at the end of the sweep,
and again on ``ssvae report FILE``, `STUDIES[name](trials, spec, out)` writes the study's
figures into `out` and returns them with a markdown summary (the tables of the docs pages).
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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats

from ssvae_core.balls import Video, simulate
from ssvae_core.figures import save
from ssvae_core.sweep.report import cell_label
from ssvae_core.sweep.sections import SEED_AXES

if TYPE_CHECKING:
    from ssvae_core.sweep.spec import SweepSpec

CONTROL = "untrained"


@dataclass(frozen=True)
class StudyReport:
    """What a study's report wrote (its PNGs) and its tables as markdown."""

    figures: list[Path]
    markdown: str


# ---------------------------------------------------------------- helpers


def finished(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials that ended ``ok``, with the metric columns as floats."""
    done = trials[trials["status"] == "ok"].copy()
    metrics = (
        "probe_error_px",
        "mi_estimate",
        "lengthscale",
        "sigma",
        "elbo",
        "elbo_gap",
        "z_step",
    )
    for column in metrics:
        if column in done:
            done[column] = pd.to_numeric(done[column], errors="coerce")
    return done


def markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """A DataFrame as a markdown table (numbers to `digits` significant figures, NaN as -)."""

    def cell(value: object) -> str:
        if isinstance(value, float | np.floating):
            return "-" if math.isnan(value) else f"{value:.{digits}g}"
        return str(value)

    lines = ["| " + " | ".join(map(str, table.columns)) + " |"]
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(table.shape[1])) + "|")
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join(lines)


def by_seed(
    trials: pd.DataFrame, group_axes: Sequence[str], value: str = "probe_error_px"
) -> pd.DataFrame:
    """`value` of the ok trials per arm (rows, grid order) and seed (sorted columns).

    An arm is a cell of `group_axes`, a seed one value of the seed axes present. Raises
    ValueError if an (arm, seed) holds more than one trial (a search), rather than drop any.
    """
    seeds = [axis for axis in SEED_AXES if axis in trials]
    if not seeds:
        raise ValueError(f"no seed axis ({', '.join(SEED_AXES)}) to pair trials by")
    labelled = trials.assign(arm=cell_label(trials, group_axes), seed=cell_label(trials, seeds))
    done = finished(labelled)
    if done.duplicated(["arm", "seed"]).any():
        raise ValueError("several trials per arm and seed: nothing to pair")
    table = done.pivot(index="arm", columns="seed", values=value)
    arms = [a for a in labelled["arm"].unique() if a in table.index]
    return table.reindex(index=arms, columns=sorted(table.columns, key=_natural))


def _natural(label: str) -> tuple[float, ...]:
    """Sort key for seed labels like '2' or '0/1': numerically where they are numbers."""
    return tuple(
        float(part) if part.lstrip("-").isdigit() else math.inf for part in label.split("/")
    )


def _spread(values: pd.Series) -> str:
    """``median (min-max)`` of the finite values, or '-'."""
    values = values.dropna()
    if values.empty:
        return "-"
    return f"{values.median():.3g} ({values.min():.3g}–{values.max():.3g})"


def _legend(ax: plt.Axes, title: str | None = None) -> None:
    """A small legend, if anything on `ax` has a label (no trial finished: none)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, title=title)


# ---------------------------------------------------------------- Fig. 1C with its control


def fig1c(trials: pd.DataFrame, spec: SweepSpec, out: Path) -> StudyReport:
    """Probe error per arm and seed; each arm against the untrained control of its seed."""
    try:
        errors = by_seed(trials, spec.group_axes)
    except ValueError:  # no seeds or a search: the medians per cell
        medians = finished(trials.assign(arm=cell_label(trials, spec.group_axes)))
        medians = medians.groupby("arm", sort=False)["probe_error_px"].median()
        return StudyReport([], markdown(medians.rename("median (px)").reset_index()))
    table = errors.rename(columns=lambda s: f"seed {s} (px)")
    table["median (px)"] = errors.median(axis=1)
    if CONTROL in errors.index:
        gain = errors.loc[CONTROL] - errors  # px gained over the same seed's untrained encoder
        wins = [f"{int((g > 0).sum())}/{int(g.notna().sum())}" for _, g in gain.iterrows()]
        table["beats untrained (seeds)"] = wins
        table["px gained (mean)"] = gain.mean(axis=1)
        table["untrained ÷ method (median)"] = (errors.loc[CONTROL] / errors).median(axis=1)
        table.loc[CONTROL, "beats untrained (seeds)"] = "-"
        table.loc[CONTROL, ["px gained (mean)", "untrained ÷ method (median)"]] = math.nan
    figure = _paired_figure(errors, out / "fig1c-paired.png", spec.name)
    arm = "/".join(spec.group_axes) or "cell"
    return StudyReport([figure], markdown(table.rename_axis(arm).reset_index()))


def _paired_figure(errors: pd.DataFrame, path: Path, name: str) -> Path:
    """One line per seed across the arms (log y): the pairing the table summarises."""
    fig, ax = plt.subplots(figsize=(1.5 + 1.1 * len(errors), 3.5))
    x = np.arange(len(errors))
    for i, seed in enumerate(errors.columns):
        ax.plot(x, errors[seed], "-o", color=f"C{i}", ms=4, label=f"seed {seed}", alpha=0.8)
    ax.set_xticks(x, list(errors.index), rotation=20)
    ax.set(yscale="log", ylabel="probe error (px)", title=f"{name}: paired by seed")
    _legend(ax)
    return save(fig, path)


# ---------------------------------------------------------------- critics x estimators


def critics(trials: pd.DataFrame, spec: SweepSpec, out: Path) -> StudyReport:
    """MI estimate vs probe error; Spearman correlation per estimator across trials."""
    done = finished(trials)
    coupling, estimator = "coupling.kind", "objective.estimator"
    rows = []
    for (c, e), group in trials.groupby([coupling, estimator], sort=False):
        ok = done[(done[coupling] == c) & (done[estimator] == e)]
        rows.append(
            {
                "critic (coupling)": c,
                "estimator": e,
                "probe px: median (min–max)": _spread(ok["probe_error_px"]),
                "MI estimate (mean)": ok["mi_estimate"].mean(),
                "MI estimate (std)": ok["mi_estimate"].std(),
                "not ok": int((group["status"] != "ok").sum()),
            }
        )
    correlation = []
    for e, group in done.groupby(estimator, sort=False):
        rho, p = stats.spearmanr(group["mi_estimate"], group["probe_error_px"])
        correlation.append({"estimator": e, "trials": len(group), "spearman rho": rho, "p": p})
    text = markdown(pd.DataFrame(rows)) + "\n\n" + markdown(pd.DataFrame(correlation))
    fig, axes = plt.subplots(1, done[estimator].nunique() or 1, figsize=(11, 3.6), squeeze=False)
    kinds = list(trials[coupling].unique())
    for ax, (e, group) in zip(axes[0], done.groupby(estimator, sort=False), strict=False):
        for k, kind in enumerate(kinds):
            points = group[group[coupling] == kind]
            ax.scatter(points["mi_estimate"], points["probe_error_px"], color=f"C{k}", label=kind)
        ax.set(yscale="log", xlabel=f"final {e} estimate (nats)", title=e)
    axes[0][0].set_ylabel("probe error (px)")
    _legend(axes[0][-1], title="critic")
    return StudyReport([save(fig, out / "critics-mi-vs-probe.png")], text)


# ---------------------------------------------------------------- number of negatives


def negatives(trials: pd.DataFrame, spec: SweepSpec, out: Path) -> StudyReport:
    """Probe error and MI estimate against N per coupling; the ceiling log(N + 1)."""
    coupling, n = "coupling.kind", "objective.n_negatives"
    in_batch = spec.base.train.batch_size - 1  # n_negatives null: the paper's in-batch N
    done = finished(trials.assign(**{n: pd.to_numeric(trials[n]).fillna(in_batch)}))
    summary = done.groupby([n, coupling], sort=True).agg(
        probe_px=("probe_error_px", "median"), mi=("mi_estimate", "mean")
    )
    table = summary.unstack(coupling)
    table.columns = [f"{c}: {'probe px (median)' if m == 'probe_px' else 'MI'}" for m, c in table]
    table.insert(0, "log(N+1)", np.log(table.index.to_numpy(dtype=float) + 1))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for k, (kind, group) in enumerate(done.groupby(coupling, sort=False)):
        for ax, column in ((left, "probe_error_px"), (right, "mi_estimate")):
            ax.scatter(group[n], group[column], color=f"C{k}", s=12, alpha=0.6)
            median = group.groupby(n)[column].median()
            ax.plot(median.index, median.values, "-", color=f"C{k}", label=kind)
    grid = np.array(sorted(done[n].unique()), dtype=float)
    right.plot(grid, np.log(grid + 1), "k--", label="log(N + 1)")
    left.set(xscale="log", yscale="log", xlabel="negatives N", ylabel="probe error (px)")
    right.set(xscale="log", xlabel="negatives N", ylabel="InfoNCE estimate (nats)")
    for ax in (left, right):
        _legend(ax)
    path = save(fig, out / "negatives.png")
    return StudyReport([path], markdown(table.reset_index().rename(columns={n: "N"})))


# ---------------------------------------------------------------- lengthscale


def true_step(video: Video) -> float:
    """The balls' RMS per-coordinate displacement between frames, in encoder coordinates.

    The encoder's coordinates span [-1, 1] over the image (`encoder.CentreOfMassEncoder`), so
    one pixel is 2 / size. The maximum-likelihood L of the prior N(z, L^2 I) of eq. 35 on the
    true positions is this value.
    """
    size = video.frames.shape[1]
    steps = np.diff(video.positions.astype(np.float64), axis=0) * (2.0 / size)  # [T - 1, K, 2]
    return float(np.sqrt(np.mean(steps**2)))


def lengthscale(trials: pd.DataFrame, spec: SweepSpec, out: Path) -> StudyReport:
    """Probe error and final L against the initial L, learned and fixed; the true step."""
    done = finished(trials)
    learn, initial = "coupling.learn_lengthscale", "coupling.lengthscale"
    step = true_step(simulate(spec.base.data, spec.base.data.seed))
    rows = []
    for (learned, start), group in done.groupby([learn, initial], sort=True):
        rows.append(
            {
                "L": "learned" if learned else "fixed",
                "initial L": start,
                "probe px: median (min–max)": _spread(group["probe_error_px"]),
                "final L (mean)": group["lengthscale"].mean(),
                "final L / true step": group["lengthscale"].mean() / step,
                "z step (mean)": group["z_step"].mean() if "z_step" in group else math.nan,
                "MI (mean)": group["mi_estimate"].mean(),
            }
        )
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for k, (learned, group) in enumerate(done.groupby(learn, sort=False)):
        label = "learned L" if learned else "fixed L"
        median = group.groupby(initial)["probe_error_px"].median()
        left.scatter(group[initial], group["probe_error_px"], color=f"C{k}", s=12, alpha=0.6)
        left.plot(median.index, median.values, "-", color=f"C{k}", label=label)
        right.scatter(group[initial], group["lengthscale"], color=f"C{k}", s=14, label=label)
    grid = np.array(sorted(done[initial].unique()), dtype=float)
    if len(grid):
        right.plot(grid, grid, ":", color="0.5", label="final = initial")
    right.axhline(step, color="k", ls="--", label=f"true step {step:.3g}")
    if "z_step" in done and done["z_step"].notna().any():
        right.scatter(done[initial], done["z_step"], marker="x", color="0.4", label="z step")
    left.set(xscale="log", yscale="log", xlabel="initial L", ylabel="probe error (px)")
    right.set(xscale="log", yscale="log", xlabel="initial L", ylabel="final L (and z step)")
    for ax in (left, right):
        _legend(ax)
    header = (
        f"True per-frame step of the balls (RMS per coordinate, encoder units): {step:.4g}. "
        "z step: the same RMS change of the learned representation between frames, the "
        "maximum-likelihood L of eq. 35 for it.\n\n"
    )
    return StudyReport([save(fig, out / "lengthscale.png")], header + markdown(pd.DataFrame(rows)))


# ---------------------------------------------------------------- stochastic encoders


def stochastic(trials: pd.DataFrame, spec: SweepSpec, out: Path) -> StudyReport:
    """Probe error, ELBO and Jensen gap per encoder; ELBO paired by seed with deterministic."""
    arm, reference = "method", "deterministic"
    done = finished(trials)
    elbo = by_seed(trials, [arm], "elbo")
    rows = []
    for name, group in done.groupby(arm, sort=False):
        row = {
            "encoder": name,
            "probe px: median (min–max)": _spread(group["probe_error_px"]),
            "final sigma": group["sigma"].mean() if "sigma" in group else math.nan,
            "ELBO (eq. 20)": group["elbo"].mean(),
            "Jensen gap": group["elbo_gap"].mean(),
            "ELBO at mean z": pd.to_numeric(group.get("elbo_at_mean"), errors="coerce").mean(),
        }
        if reference in elbo.index:
            row["ELBO − deterministic (paired)"] = (elbo.loc[name] - elbo.loc[reference]).mean()
        rows.append(row)
    names = list(trials[arm].unique())
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    panels = ("probe_error_px", "elbo", "elbo_gap")
    titles = ("probe error (px)", "ELBO estimate (nats)", "Jensen gap (nats)")
    for ax, column, title in zip(axes, panels, titles, strict=True):
        for i, name in enumerate(names):
            values = done.loc[done[arm] == name, column]
            ax.plot(np.full(len(values), i), values, "o", color="C3", ms=4)
            if len(values.dropna()):
                ax.bar(i, values.median(), color="0.85", edgecolor="0.3")
        ax.set_xticks(range(len(names)), names, rotation=25)
        ax.set_title(title)
    if (done["probe_error_px"] > 0).any():
        axes[0].set_yscale("log")
    return StudyReport([save(fig, out / "stochastic.png")], markdown(pd.DataFrame(rows)))


@dataclass(frozen=True)
class Study:
    """A study's report and the grid axes it reads (checked when a sweep file is parsed)."""

    report: Callable[[pd.DataFrame, SweepSpec, Path], StudyReport]
    axes: tuple[str, ...] = ()


STUDIES: dict[str, Study] = {
    "fig1c": Study(fig1c),
    "critics": Study(critics, ("coupling.kind", "objective.estimator")),
    "negatives": Study(negatives, ("coupling.kind", "objective.n_negatives")),
    "lengthscale": Study(lengthscale, ("coupling.learn_lengthscale", "coupling.lengthscale")),
    "stochastic": Study(stochastic, ("method", "train.seed")),
}
