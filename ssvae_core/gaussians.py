"""Correlated-Gaussian tasks of known mutual information (Poole et al. 2019, section 5).

x ~ N(0, I_d) and y = rho x + sqrt(1 - rho^2) eps, eps ~ N(0, I_d), componentwise, so
I(x; y) = -d/2 log(1 - rho^2) nats. A coupling (`ssvae_core.couplings`) is trained directly as
the critic on (x, y) pairs with the loss of an estimator (`ssvae_core.objectives`) and its
estimate is compared with the true value: the estimator checks of the project.

    python -m ssvae_core.gaussians [--steps N] [--seeds K] [--out table.md]

prints a markdown table (mean ± std over seeds; estimator x coupling rows, true-MI columns).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import partial

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


def evaluate(
    estimator: str,
    critic: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    mi_nats: float,
    batch: int = 64,
    seed: int = 0,
    dim: int = 20,
) -> float:
    """`ESTIMATORS[estimator]` of critic(x, y) [B, B] averaged over EVAL_BATCHES fresh batches."""
    estimate_fn = get_estimator(estimator)
    generator = torch.Generator().manual_seed(10_000 + seed)
    with torch.no_grad():
        estimates = [
            estimate_fn(critic(*sample_correlated(batch, mi_nats, dim, generator=generator)))
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
) -> float:
    """Train `coupling` as the critic with `LOSSES[estimator]`; return its MI estimate (nats).

    Adam on fresh batches of (x [B, D], y [B, D]); log_f = coupling(x, y) [B, B]. The returned
    value is `ESTIMATORS[estimator]` averaged over EVAL_BATCHES fresh batches after training
    (NaN if training diverged). critic_params go to `build_coupling` (default:
    TASK_CRITIC_PARAMS). Everything is seeded by `seed`; global RNG state is untouched.
    """
    if critic_params is None:
        critic_params = TASK_CRITIC_PARAMS.get(coupling, {})
    loss_fn = get_loss(estimator)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        critic = build_coupling(coupling, dim, **critic_params)
    parameters = list(critic.parameters())
    if not parameters:  # e.g. a fixed-temperature cosine: nothing to train
        return evaluate(estimator, critic, mi_nats, batch=batch, seed=seed, dim=dim)
    optimizer = torch.optim.Adam(parameters, lr=lr)
    train_generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y = sample_correlated(batch, mi_nats, dim, generator=train_generator)
        loss = loss_fn(critic(x, y))
        if not torch.isfinite(loss):
            return math.nan
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return evaluate(estimator, critic, mi_nats, batch=batch, seed=seed, dim=dim)


def staircase(
    estimators: Sequence[str] = tuple(ESTIMATORS),
    couplings: Sequence[str] = tuple(COUPLINGS),
    mis: Sequence[float] = DEFAULT_MIS,
    steps: int = DEFAULT_STEPS,
    seeds: Sequence[int] = (0, 1),
    include_optimal: bool = True,
) -> pd.DataFrame:
    """Every (estimator, coupling, true MI, seed): one `train_estimator` run.

    Returns a DataFrame with columns estimator, coupling, true_mi, seed, estimate. With
    include_optimal, each estimator also gets rows with coupling OPTIMAL: its value for the true
    log-ratio critic (no training), i.e. the estimator's own bias at this batch size.
    """
    for name in estimators:
        get_estimator(name)
    for name in couplings:
        coupling_params(name)
    rows = [
        {
            "estimator": estimator,
            "coupling": coupling,
            "true_mi": float(mi),
            "seed": seed,
            "estimate": train_estimator(estimator, coupling, mi, steps=steps, seed=seed),
        }
        for estimator in estimators
        for coupling in couplings
        for mi in mis
        for seed in seeds
    ]
    if include_optimal:
        rows += [
            {
                "estimator": estimator,
                "coupling": OPTIMAL,
                "true_mi": float(mi),
                "seed": seed,
                "estimate": evaluate(estimator, partial(true_log_ratio, mi_nats=mi), mi, seed=seed),
            }
            for estimator in estimators
            for mi in mis
            for seed in seeds
        ]
    return pd.DataFrame(rows, columns=["estimator", "coupling", "true_mi", "seed", "estimate"])


def markdown_table(results: pd.DataFrame) -> str:
    """`staircase` results -> markdown: estimator x coupling rows, true-MI columns, mean ± std.

    Rows keep the order of first appearance (so OPTIMAL comes last within each estimator).
    """
    ordered = results.assign(
        estimator=pd.Categorical(results["estimator"], results["estimator"].unique()),
        coupling=pd.Categorical(results["coupling"], results["coupling"].unique()),
    )
    keys = ["estimator", "coupling", "true_mi"]
    stats = ordered.groupby(keys, observed=True)["estimate"].agg(["mean", "std"])
    mis = sorted(results["true_mi"].unique())
    lines = [
        "| estimator | coupling | " + " | ".join(f"I = {mi:g}" for mi in mis) + " |",
        "|---|---|" + "---:|" * len(mis),
    ]
    for (estimator, coupling), group in stats.groupby(level=[0, 1], observed=True):
        by_mi = group.droplevel([0, 1])
        cells = [
            f"{by_mi.loc[mi, 'mean']:.2f}"
            + ("" if pd.isna(by_mi.loc[mi, "std"]) else f" ± {by_mi.loc[mi, 'std']:.2f}")
            for mi in mis
        ]
        lines.append(f"| {estimator} | {coupling} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """The command line: train the staircase and print (and optionally save) the table."""
    parser = argparse.ArgumentParser(prog="python -m ssvae_core.gaussians", description=__doc__)
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--seeds", type=int, default=2, help="number of seeds (0..K-1)")
    parser.add_argument("--estimators", default=",".join(ESTIMATORS))
    parser.add_argument("--couplings", default=",".join(COUPLINGS))
    parser.add_argument("--mis", default=",".join(f"{mi:g}" for mi in DEFAULT_MIS))
    parser.add_argument("--out", default=None, help="also write the markdown table here")
    parser.add_argument("--smoke-test", action="store_true", help="tiny run: 20 steps, 1 seed")
    args = parser.parse_args(argv)
    steps, n_seeds = (20, 1) if args.smoke_test else (args.steps, args.seeds)
    start = time.perf_counter()
    results = staircase(
        estimators=args.estimators.split(","),
        couplings=args.couplings.split(","),
        mis=[float(mi) for mi in args.mis.split(",")],
        steps=steps,
        seeds=range(n_seeds),
    )
    seconds = time.perf_counter() - start
    command = " ".join(
        ["python -m ssvae_core.gaussians", *(sys.argv[1:] if argv is None else argv)]
    )
    header = (
        f"`{command}` on {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}: {steps} Adam steps "
        f"(batch 64, lr 5e-4) per cell and seed, seeds 0..{n_seeds - 1}, mean ± std; "
        f"wall time {seconds:.0f} s with {torch.get_num_threads()} torch thread(s)."
    )
    document = f"{header}\n\n{markdown_table(results)}\n"
    print(document)
    if args.out is not None:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(document)


if __name__ == "__main__":
    main()
