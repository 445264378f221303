"""Estimators on tasks of known mutual information: the estimator checks of the project.

Poole et al. 2019 (section 5) train a critic on pairs of known MI; so does this module, on the
tasks of `ssvae_core.known_mi` (correlated Gaussians, a Student-t, and invertible transforms of
them). A coupling (`ssvae_core.couplings`) is trained as the critic on (x, y) pairs with the
loss of an estimator (`ssvae_core.objectives`), and its estimate is compared with the truth.

    python -m ssvae_core.gaussians [--tasks ...] [--steps N] [--seeds K] [--out table.md]

prints markdown tables, one per task (mean ± std over seeds; estimator x coupling rows,
true-MI columns), and with ``--figure`` plots each estimate's bias.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import partial

import numpy as np
import pandas as pd
import torch

from ssvae_core.couplings import COUPLINGS, build_coupling, coupling_params
from ssvae_core.known_mi import TASKS, Task, get_task
from ssvae_core.objectives import ESTIMATORS, get_estimator, get_loss

DEFAULT_STEPS = 2000
DEFAULT_MIS: tuple[float, ...] = (2.0, 4.0, 6.0, 8.0, 10.0)
EVAL_BATCHES = 32
OPTIMAL = "(true log-ratio)"
OPTIMAL_OFFSET = {"nwj": 1.0}  # NWJ is tight at f = 1 + log p/q; the others at log p/q
# Initial scales fitted to this task (unit-variance data, d = 20): the couplings' defaults
# (lengthscale 0.1, fixed temperature 0.1) suit the balls latents, not these Gaussians, and Adam
# at lr 5e-4 moves log L by only ~lr per step. The optimal Gaussian-coupling L for I = 2..10
# nats is 1.4..0.7 (L^2 = (1 - rho^2) / rho).
TASK_CRITIC_PARAMS: dict[str, dict[str, object]] = {
    "gaussian": {"lengthscale": 1.0},
    "laplace": {"lengthscale": 1.0},
    "student_t": {"lengthscale": 1.0},
    "cosine": {"learn_temperature": True},
}


def evaluate(
    estimator: str,
    critic: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    mi_nats: float,
    batch: int = 64,
    seed: int = 0,
    dim: int = 20,
    task: str = "gaussian",
) -> float:
    """`ESTIMATORS[estimator]` of critic(x, y) [B, B] averaged over EVAL_BATCHES fresh batches."""
    estimate_fn, sampler = get_estimator(estimator), get_task(task)
    generator = torch.Generator().manual_seed(10_000 + seed)
    with torch.no_grad():
        estimates = [
            estimate_fn(critic(*sampler.sample(batch, mi_nats, dim, generator)))
            for _ in range(EVAL_BATCHES)
        ]
    return float(torch.stack(estimates).mean())


def train_estimator(
    estimator: str,
    coupling: str,
    mi_nats: float,
    steps: int = DEFAULT_STEPS,
    batch: int = 64,
    lr: float = 5e-4,
    seed: int = 0,
    dim: int = 20,
    critic_params: Mapping[str, object] | None = None,
    task: str = "gaussian",
) -> float:
    """Train `coupling` as the critic with `LOSSES[estimator]`; return its MI estimate (nats).

    Adam on fresh batches of (x [B, D], y [B, D]) from `TASKS[task]`; log_f = coupling(x, y)
    [B, B]. The returned value is `ESTIMATORS[estimator]` averaged over EVAL_BATCHES fresh
    batches after training (NaN if training diverged). critic_params go to `build_coupling`
    (default: TASK_CRITIC_PARAMS). Everything is seeded by `seed`; global RNG is untouched.
    """
    if critic_params is None:
        critic_params = TASK_CRITIC_PARAMS.get(coupling, {})
    loss_fn, sampler = get_loss(estimator), get_task(task)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        critic = build_coupling(coupling, dim, **critic_params)
    parameters = list(critic.parameters())
    if not parameters:  # e.g. a fixed-temperature cosine: nothing to train
        return evaluate(estimator, critic, mi_nats, batch=batch, seed=seed, dim=dim, task=task)
    optimizer = torch.optim.Adam(parameters, lr=lr)
    train_generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = sampler.sample(batch, mi_nats, dim, train_generator)
        loss = loss_fn(critic(x, y))
        if not torch.isfinite(loss):
            return math.nan
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return evaluate(estimator, critic, mi_nats, batch=batch, seed=seed, dim=dim, task=task)


COLUMNS = ["task", "estimator", "coupling", "true_mi", "seed", "estimate"]


def staircase(
    estimators: Sequence[str] = tuple(ESTIMATORS),
    couplings: Sequence[str] = tuple(COUPLINGS),
    mis: Sequence[float] = DEFAULT_MIS,
    steps: int = DEFAULT_STEPS,
    seeds: Sequence[int] = (0, 1),
    include_optimal: bool = True,
    tasks: Sequence[str] = ("gaussian",),
    on_row: Callable[[dict[str, object]], None] | None = None,
) -> pd.DataFrame:
    """Every (task, estimator, coupling, true MI, seed): one `train_estimator` run.

    Returns a DataFrame with columns `COLUMNS`. With include_optimal, each estimator also gets
    rows with coupling OPTIMAL: its value for the true log-ratio critic (no training), i.e. the
    estimator's own bias at this batch size. `on_row` sees every row as it is made (progress).
    """
    for name in estimators:
        get_estimator(name)
    for name in couplings:
        coupling_params(name)
    for name in tasks:
        get_task(name).rho(max(mis), 20)  # the name and the MI range, before any training
        get_task(name).rho(min(mis), 20)
    rows: list[dict[str, object]] = []

    def add(*values: object) -> None:
        rows.append(dict(zip(COLUMNS, values, strict=True)))
        if on_row is not None:
            on_row(rows[-1])

    for task, estimator, coupling, mi, seed in itertools.product(
        tasks, estimators, couplings, mis, seeds
    ):
        estimate = train_estimator(estimator, coupling, mi, steps=steps, seed=seed, task=task)
        add(task, estimator, coupling, float(mi), seed, estimate)
    if include_optimal:
        for row in optimal_rows(tasks, estimators, mis, seeds):
            add(*row.values())
    return pd.DataFrame(rows, columns=COLUMNS)


def optimal_rows(
    tasks: Sequence[str], estimators: Sequence[str], mis: Sequence[float], seeds: Sequence[int]
) -> list[dict[str, object]]:
    """Each estimator at the optimal critic of each task (no training): rows of `COLUMNS`.

    The optimal critic is log p(x, y) / (p(x) p(y)), plus `OPTIMAL_OFFSET` for NWJ, whose
    bound is tight at f = 1 + log p / q (Poole et al. 2019); the value is then the
    estimator's own bias and variance at this batch size.
    """
    rows = []
    for task, estimator, mi, seed in itertools.product(tasks, estimators, mis, seeds):
        offset = OPTIMAL_OFFSET.get(estimator, 0.0)
        critic = partial(_optimal_critic, task=get_task(task), mi_nats=mi, offset=offset)
        estimate = evaluate(estimator, critic, mi, seed=seed, task=task)
        values = (task, estimator, OPTIMAL, float(mi), seed, estimate)
        rows.append(dict(zip(COLUMNS, values, strict=True)))
    return rows


def _optimal_critic(
    x: torch.Tensor, y: torch.Tensor, *, task: Task, mi_nats: float, offset: float
) -> torch.Tensor:
    """x [B, D], y [M, D] -> the task's true log-ratio [B, M] plus `offset`."""
    return task.log_ratio(x, y, mi_nats) + offset


def with_optimal_recomputed(results: pd.DataFrame) -> pd.DataFrame:
    """`results` with its OPTIMAL rows evaluated again (cheap: nothing is trained)."""
    trained = results[results["coupling"] != OPTIMAL]
    if len(trained) == len(results):
        return results
    old = results[results["coupling"] == OPTIMAL]
    rows = optimal_rows(
        list(old["task"].unique()),
        list(old["estimator"].unique()),
        sorted(old["true_mi"].unique()),
        sorted(int(s) for s in old["seed"].unique()),
    )
    return pd.concat([trained, pd.DataFrame(rows, columns=COLUMNS)], ignore_index=True)


def markdown_table(results: pd.DataFrame) -> str:
    """`staircase` results -> markdown: estimator x coupling rows, true-MI columns, mean ± std.

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


def main(argv: Sequence[str] | None = None) -> None:
    """The command line: train the suite, print (and optionally save) the tables."""
    parser = argparse.ArgumentParser(prog="python -m ssvae_core.gaussians", description=__doc__)
    parser.add_argument("--tasks", default="gaussian", help=f"of {', '.join(TASKS)}")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--seeds", type=int, default=2, help="number of seeds (0..K-1)")
    parser.add_argument("--estimators", default=",".join(ESTIMATORS))
    parser.add_argument("--couplings", default=",".join(COUPLINGS))
    parser.add_argument("--mis", default=",".join(f"{mi:g}" for mi in DEFAULT_MIS))
    parser.add_argument("--out", default=None, help="also write the markdown tables here")
    parser.add_argument("--csv", default=None, help="also write every run (one row each) here")
    parser.add_argument("--figure", default=None, help="also plot every estimate's bias here")
    parser.add_argument("--smoke-test", action="store_true", help="tiny run: 20 steps, 1 seed")
    parser.add_argument(
        "--from-csv",
        metavar="CSV",
        help="train nothing: redraw the tables and figure from the rows of a --csv",
    )
    args = parser.parse_args(argv)
    if args.from_csv is not None:
        results = with_optimal_recomputed(pd.read_csv(args.from_csv))
        header = f"Tables redrawn from `{args.from_csv}`; the {OPTIMAL} rows recomputed."
        write_outputs(results, header, args.out, args.csv, args.figure)
        return
    steps, n_seeds = (20, 1) if args.smoke_test else (args.steps, args.seeds)
    tasks, estimators = args.tasks.split(","), args.estimators.split(",")
    couplings, mis = args.couplings.split(","), [float(mi) for mi in args.mis.split(",")]
    total = len(tasks) * len(estimators) * (len(couplings) + 1) * len(mis) * n_seeds
    start = time.perf_counter()

    done = itertools.count(1)

    def progress(row: Mapping[str, object]) -> None:
        fields = " ".join(f"{k}={v}" for k, v in row.items())
        elapsed = time.perf_counter() - start
        print(f"[{elapsed:6.0f}s] {next(done)}/{total} {fields}", file=sys.stderr, flush=True)

    try:
        results = staircase(
            estimators, couplings, mis, steps, range(n_seeds), True, tasks, progress
        )
    except ValueError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    seconds = time.perf_counter() - start
    command = " ".join(
        ["python -m ssvae_core.gaussians", *(sys.argv[1:] if argv is None else argv)]
    )
    header = (
        f"`{command}` on {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}: {steps} Adam steps "
        f"(batch 64, lr 5e-4) per cell and seed, seeds 0..{n_seeds - 1}, mean ± std; "
        f"wall time {seconds:.0f} s with {torch.get_num_threads()} torch thread(s)."
    )
    write_outputs(results, header, args.out, args.csv, args.figure)


def write_outputs(
    results: pd.DataFrame,
    header: str,
    out: str | None,
    csv: str | None,
    figure: str | None,
) -> None:
    """Print the header and tables; write them, the rows and the bias figure where asked."""
    many = results["task"].nunique() > 1
    tables = markdown_tables(results) if many else markdown_table(results)
    document = f"{header}\n\n{tables}\n"
    print(document)
    if out is not None:
        with open(out, "w", encoding="utf-8") as handle:
            handle.write(document)
    if csv is not None:
        results.to_csv(csv, index=False)
    if figure is not None:
        from ssvae_core.figures import estimator_bias

        estimator_bias(results, figure)


if __name__ == "__main__":
    main()
