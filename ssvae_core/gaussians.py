"""Tasks of known mutual information: the estimator checks of the project.

Poole et al. 2019 (section 5) train a critic on pairs of known MI; so does this module, on a
small suite of tasks (`TASKS`), all built from the componentwise-correlated pair

    x ~ N(0, I_d),  y = rho x + sqrt(1 - rho^2) eps,  I(x; y) = -d/2 log(1 - rho^2) nats:

- ``gaussian``: that pair (the staircase of Poole et al.);
- ``student_t``: the same pair divided by one shared sqrt(W / nu), W ~ chi^2_nu, i.e. a
  multivariate Student-t. Its MI is the Gaussian term plus c(nu, d, d) > 0 (the shared scale
  makes even uncorrelated components dependent; Arellano-Valle et al. 2013);
- ``*-halfcube``, ``*-asinh``: a strictly monotone map applied to every coordinate of x and
  of y. MI is invariant under it; an estimator's critic has to undo it.

A coupling (`ssvae_core.couplings`) is trained as the critic on (x, y) pairs with the loss of
an estimator (`ssvae_core.objectives`), and its estimate is compared with the true value.

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
from dataclasses import dataclass
from datetime import datetime
from functools import partial

import numpy as np
import pandas as pd
import torch

from ssvae_core.couplings import COUPLINGS, build_coupling, coupling_params
from ssvae_core.objectives import ESTIMATORS, get_estimator, get_loss

DEFAULT_STEPS = 2000
DEFAULT_MIS: tuple[float, ...] = (2.0, 4.0, 6.0, 8.0, 10.0)
EVAL_BATCHES = 32
OPTIMAL = "(true log-ratio)"
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


def rho_for_mi(mi_nats: float, dim: int = 20) -> float:
    """The componentwise correlation giving I(x; y) = mi_nats: rho = sqrt(1 - exp(-2 I / d))."""
    if mi_nats < 0:
        raise ValueError(f"mi_nats must be >= 0, got {mi_nats!r}")
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim!r}")
    return math.sqrt(-math.expm1(-2.0 * mi_nats / dim))


def mi_for_rho(rho: float, dim: int = 20) -> float:
    """The analytic I(x; y) = -d/2 log(1 - rho^2) nats of the task with correlation rho."""
    return -0.5 * dim * math.log1p(-(rho**2))


def sample_correlated(
    batch: int, mi_nats: float, dim: int = 20, *, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of pairs with I(x; y) = mi_nats: x [B, D], y [B, D] (float32).

    y = rho x + sqrt(1 - rho^2) eps componentwise, rho = rho_for_mi(mi_nats, dim).
    """
    rho = rho_for_mi(mi_nats, dim)
    x = torch.randn(batch, dim, generator=generator)
    noise = torch.randn(batch, dim, generator=generator)
    return x, rho * x + math.sqrt(1.0 - rho**2) * noise


def true_log_ratio(x: torch.Tensor, y: torch.Tensor, mi_nats: float) -> torch.Tensor:
    """The optimal critic log p(y_j | x_i) / p(y_j): x [B, D], y [M, D] -> log_f [B, M]."""
    dim = x.shape[1]
    rho = rho_for_mi(mi_nats, dim)
    residual = (y[None, :, :] - rho * x[:, None, :]).square().sum(dim=-1)  # [B, M]
    log_marginal = -0.5 * y.square().sum(dim=-1)  # [M], up to the constant shared with p(y|x)
    return (
        -residual / (2 * (1 - rho**2)) - log_marginal[None, :] - 0.5 * dim * math.log1p(-(rho**2))
    )


# ---------------------------------------------------------------- the task suite


def _entropy_term(nu: float) -> float:
    """f(nu) = log Gamma(nu / 2) - nu / 2 psi(nu / 2), the building block of `student_t_offset`."""
    return math.lgamma(nu / 2) - nu / 2 * float(torch.special.digamma(torch.tensor(nu / 2.0)))


def student_t_offset(dof: int, dim: int) -> float:
    """c(nu, d, d) = I(x; y) of a d + d multivariate Student-t minus its Gaussian term (nats).

    For a Student-t with nu degrees of freedom and scale matrix [[I, rho I], [rho I, I]],
    I(x; y) = -d/2 log(1 - rho^2) + f(nu) + f(nu + 2d) - 2 f(nu + d), f as `_entropy_term`
    (Arellano-Valle, Contreras-Reyes and Genton 2013). c > 0 even at rho = 0.
    """
    f = _entropy_term
    return f(dof) + f(dof + 2 * dim) - 2 * f(dof + dim)


def _student_t_log_ratio(x: torch.Tensor, y: torch.Tensor, rho: float, dof: int) -> torch.Tensor:
    """log p(x_i, y_j) / (p(x_i) p(y_j)) of the Student-t task: x [B, D], y [M, D] -> [B, M]."""
    dim, nu = x.shape[1], float(dof)
    one_minus = 1.0 - rho**2
    xx, yy = x.square().sum(-1), y.square().sum(-1)  # [B], [M]
    mahalanobis = (xx[:, None] - 2 * rho * (x @ y.T) + yy[None, :]) / one_minus  # [B, M]
    constant = (
        math.lgamma((nu + 2 * dim) / 2) + math.lgamma(nu / 2) - 2 * math.lgamma((nu + dim) / 2)
    ) - 0.5 * dim * math.log(one_minus)
    joint = -(nu + 2 * dim) / 2 * torch.log1p(mahalanobis / nu)
    marginals = (nu + dim) / 2 * (torch.log1p(xx / nu)[:, None] + torch.log1p(yy / nu)[None, :])
    return constant + joint + marginals


# Strictly monotone maps applied to every coordinate (MI is invariant), and their inverses.
TRANSFORMS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], ...]] = {
    "identity": (lambda v: v, lambda u: u),
    "halfcube": (lambda v: v * v.abs().sqrt(), lambda u: u.sign() * u.abs().pow(2.0 / 3.0)),
    "asinh": (torch.asinh, torch.sinh),
}


@dataclass(frozen=True)
class Task:
    """A pair (x, y) of known I(x; y): correlated Gaussian (``dof=None``) or Student-t with
    ``dof`` (an integer >= 1) degrees of freedom, then ``transform`` on every coordinate."""

    dof: int | None = None
    transform: str = "identity"

    def offset(self, dim: int) -> float:
        """The MI at rho = 0 (nats): 0 for the Gaussian, c(nu, d, d) for the Student-t."""
        return 0.0 if self.dof is None else student_t_offset(self.dof, dim)

    def rho(self, mi_nats: float, dim: int) -> float:
        """The componentwise correlation giving I(x; y) = mi_nats."""
        floor = self.offset(dim)
        if mi_nats < floor:
            raise ValueError(f"this task's MI is at least {floor:.3f} nats at d = {dim}")
        return rho_for_mi(mi_nats - floor, dim)

    def sample(
        self, batch: int, mi_nats: float, dim: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, D], y [B, D] with I(x; y) = mi_nats."""
        x, y = sample_correlated(batch, mi_nats - self.offset(dim), dim, generator=generator)
        if self.dof is not None:  # W ~ chi^2_nu as a sum of nu squared normals
            w = torch.randn(batch, self.dof, generator=generator).square().sum(1, keepdim=True)
            scale = (w / self.dof).rsqrt()
            x, y = x * scale, y * scale
        forward = TRANSFORMS[self.transform][0]
        return forward(x), forward(y)

    def log_ratio(self, x: torch.Tensor, y: torch.Tensor, mi_nats: float) -> torch.Tensor:
        """The optimal critic log p(x_i, y_j) / (p(x_i) p(y_j)): x [B, D], y [M, D] -> [B, M].

        The transform's Jacobians cancel in the ratio, so it is the base task's at the inverse.
        """
        inverse = TRANSFORMS[self.transform][1]
        x, y = inverse(x), inverse(y)
        if self.dof is None:
            return true_log_ratio(x, y, mi_nats)
        return _student_t_log_ratio(x, y, self.rho(mi_nats, x.shape[1]), self.dof)


TASKS: dict[str, Task] = {
    "gaussian": Task(),
    "gaussian-halfcube": Task(transform="halfcube"),
    "student_t": Task(dof=3),
    "student_t-asinh": Task(dof=3, transform="asinh"),
}


def get_task(name: str) -> Task:
    """`TASKS[name]`, with an error listing the valid names."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose from {sorted(TASKS)}")
    return TASKS[name]


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
    for task, estimator, mi, seed in itertools.product(
        tasks, estimators, mis, seeds if include_optimal else ()
    ):
        critic = partial(get_task(task).log_ratio, mi_nats=mi)
        add(
            task,
            estimator,
            OPTIMAL,
            float(mi),
            seed,
            evaluate(estimator, critic, mi, seed=seed, task=task),
        )
    return pd.DataFrame(rows, columns=COLUMNS)


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
        cells = [_cell(*by_mi.loc[mi, ["mean", "std", "count", "size"]]) for mi in mis]
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
        "--from-csv", metavar="CSV", help="train nothing: redraw the tables and figure from --csv"
    )
    args = parser.parse_args(argv)
    if args.from_csv is not None:
        results = pd.read_csv(args.from_csv)
        write_outputs(
            results, f"Tables redrawn from `{args.from_csv}`.", args.out, None, args.figure
        )
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
