"""The MI benchmark's rows -> markdown tables (estimator x coupling rows, true-MI columns)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ssvae_core.mi_bench.critics import COLUMNS, OPTIMAL, optimal_rows
from ssvae_core.mi_bench.problems import Problem, synthetic


def markdown_table(results: pd.DataFrame) -> str:
    """`critics.staircase` rows -> markdown: estimator x coupling rows, true-MI columns,
    mean ± std over seeds.

    Rows keep the order of first appearance (so OPTIMAL comes last within each estimator).
    Runs whose estimate is NaN (training diverged) or infinite are left out of the mean and
    counted in the cell.
    """
    ordered = results.assign(
        estimator=pd.Categorical(results["estimator"], results["estimator"].unique()),
        coupling=pd.Categorical(results["coupling"], results["coupling"].unique()),
    )
    keys = ["estimator", "coupling", "true_mi"]
    finite = ordered.assign(estimate=ordered["estimate"].where(np.isfinite(ordered["estimate"])))
    stats = finite.groupby(keys, observed=True)["estimate"].agg(["mean", "std", "count", "size"])
    mis = sorted(results["true_mi"].unique())
    lines = [
        "| estimator | coupling | " + " | ".join(f"I = {mi:g}" for mi in mis) + " |",
        "|---|---|" + "---:|" * len(mis),
    ]
    for (estimator, coupling), group in stats.groupby(level=[0, 1], observed=True):
        by_mi = group.droplevel([0, 1])
        cells = [
            _cell(*by_mi.loc[mi, ["mean", "std", "count", "size"]]) if mi in by_mi.index else "-"
            for mi in mis
        ]
        lines.append(f"| {estimator} | {coupling} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(mean: float, std: float, finite: float, runs: float) -> str:
    """``mean ± std`` over the finite estimates, noting runs that gave NaN or ±inf."""
    finite, runs = int(finite), int(runs)
    if finite == 0:
        return f"NaN/inf ({runs} of {runs})"

    def number(value: float) -> str:
        return f"{value:.2f}" if abs(value) < 1e4 else f"{value:.1e}"

    text = number(mean) if pd.isna(std) else f"{number(mean)} ± {number(std)}"
    return text if finite == runs else f"{text} ({runs - finite} of {runs} NaN/inf)"


def markdown_tables(results: pd.DataFrame) -> str:
    """One `markdown_table` per task, each under a heading with the task's name."""
    return "\n\n".join(
        f"### {task}\n\n{markdown_table(group)}"
        for task, group in results.groupby("task", sort=False)
    )


def with_optimal_recomputed(results: pd.DataFrame) -> pd.DataFrame:
    """`results` with its OPTIMAL rows evaluated again (cheap: nothing is trained)."""
    trained = results[results["coupling"] != OPTIMAL]
    if len(trained) == len(results):
        return results
    old = results[results["coupling"] == OPTIMAL]
    cases = old[["task", "true_mi"]].drop_duplicates()
    problems: list[Problem] = [synthetic(t, mi) for t, mi in cases.itertuples(index=False)]
    rows = optimal_rows(
        problems,
        list(old["estimator"].unique()),
        sorted(int(s) for s in old["seed"].unique()),
    )
    return pd.concat([trained, pd.DataFrame(rows, columns=COLUMNS)], ignore_index=True)
