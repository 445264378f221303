"""Critics trained on pairs of known MI: how close each estimator gets to the truth.

Poole et al. 2019 (section 5) train a critic on pairs of known MI; so does this module, on
the `problems` (tasks of `tasks` at one MI, or pairs from a file). A coupling
(`ssvae_core.couplings`) is trained as the critic on (x, y) with the loss of an estimator
(`ssvae_core.objectives`), and its estimate is compared with the truth.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import pandas as pd
import torch

from ssvae_core.couplings import COUPLINGS, build_coupling, coupling_params
from ssvae_core.mi_bench import DEFAULT_BATCH, DEFAULT_LR, DEFAULT_STEPS
from ssvae_core.mi_bench.problems import Problem
from ssvae_core.objectives import ESTIMATORS, get_estimator, get_loss
from ssvae_core.optim import Adam

EVAL_BATCHES = 32
OPTIMAL = "(true log-ratio)"
OPTIMAL_OFFSET = {"nwj": 1.0}  # NWJ is tight at f = 1 + log p/q; the others at log p/q
# Initial scales fitted to this task (unit-variance data, d = 20): the couplings' defaults
# (lengthscale 0.05, fixed temperature 0.1) suit the balls latents, not these Gaussians, and
# Adam at lr 5e-4 moves log L by only ~lr per step. The optimal Gaussian-coupling L for
# I = 2..10 nats is 1.4..0.7 (L^2 = (1 - rho^2) / rho).
TASK_CRITIC_PARAMS: dict[str, dict[str, object]] = {
    "gaussian": {"lengthscale": 1.0},
    "laplace": {"lengthscale": 1.0},
    "student_t": {"lengthscale": 1.0},
    "cosine": {"learn_temperature": True},
}
COLUMNS = ["task", "estimator", "coupling", "true_mi", "seed", "estimate"]
Critic = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def evaluate(
    estimator: str, critic: Critic, problem: Problem, batch: int = 64, seed: int = 0
) -> float:
    """`ESTIMATORS[estimator]` of critic(x, y) [B, B] averaged over EVAL_BATCHES scoring batches."""
    estimate_fn = get_estimator(estimator)
    generator = torch.Generator().manual_seed(10_000 + seed)
    with torch.no_grad():
        estimates = [
            estimate_fn(critic(*problem.sample(batch, generator, train=False)))
            for _ in range(EVAL_BATCHES)
        ]
    return float(torch.stack(estimates).mean())


def train_estimator(
    estimator: str,
    coupling: str,
    problem: Problem,
    steps: int = DEFAULT_STEPS,
    batch: int = DEFAULT_BATCH,
    lr: float = DEFAULT_LR,
    seed: int = 0,
    critic_params: Mapping[str, Any] | None = None,
) -> float:
    """Train `coupling` as the critic with `LOSSES[estimator]`; return its MI estimate (nats).

    Adam on batches (x [B, dx], y [B, dy]) of `problem`; log_f = coupling(x, y) [B, B]. The
    returned value is `evaluate` after training (NaN if training diverged). critic_params go
    to `build_coupling` (default: TASK_CRITIC_PARAMS). Everything is seeded by `seed`; the
    global RNG is untouched.
    """
    if critic_params is None:
        critic_params = TASK_CRITIC_PARAMS.get(coupling, {})
    loss_fn = get_loss(estimator)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        critic = build_coupling(coupling, *problem.dims, **critic_params)
    parameters = list(critic.parameters())
    if not parameters:  # e.g. a fixed-temperature cosine: nothing to train
        return evaluate(estimator, critic, problem, batch=batch, seed=seed)
    optimizer = Adam(parameters, lr=lr)
    train_generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        loss = loss_fn(critic(*problem.sample(batch, train_generator)))
        if not torch.isfinite(loss):
            return math.nan
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return evaluate(estimator, critic, problem, batch=batch, seed=seed)


def staircase(
    problems: Sequence[Problem],
    estimators: Sequence[str] = tuple(ESTIMATORS),
    couplings: Sequence[str] = tuple(COUPLINGS),
    steps: int = DEFAULT_STEPS,
    seeds: Sequence[int] = (0, 1),
    include_optimal: bool = True,
    on_row: Callable[[dict[str, object]], None] | None = None,
) -> pd.DataFrame:
    """Every (problem, estimator, coupling, seed): one `train_estimator` run.

    Returns a DataFrame with columns `COLUMNS`. With include_optimal, each estimator also gets
    rows with coupling OPTIMAL where the problem knows its log-ratio: its value at the true
    critic (no training), i.e. the estimator's own bias at this batch size. `on_row` sees every
    row as it is made (progress). Unknown names are a ValueError before any training.
    """
    for name in estimators:
        get_estimator(name)
    for name in couplings:
        coupling_params(name)
    rows: list[dict[str, object]] = []

    def add(row: dict[str, object]) -> None:
        rows.append(row)
        if on_row is not None:
            on_row(row)

    for problem, estimator, coupling, seed in itertools.product(
        problems, estimators, couplings, seeds
    ):
        estimate = train_estimator(estimator, coupling, problem, steps=steps, seed=seed)
        add(_row(problem, estimator, coupling, seed, estimate))
    if include_optimal:
        for row in optimal_rows(problems, estimators, seeds):
            add(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def _row(problem: Problem, estimator: str, coupling: str, seed: int, estimate: float) -> dict:
    values = (problem.name, estimator, coupling, problem.true_mi, seed, estimate)
    return dict(zip(COLUMNS, values, strict=True))


def optimal_rows(
    problems: Sequence[Problem], estimators: Sequence[str], seeds: Sequence[int]
) -> list[dict[str, object]]:
    """Each estimator at the optimal critic of each problem that knows it: rows of `COLUMNS`.

    The optimal critic is log p(x, y) / (p(x) p(y)), plus `OPTIMAL_OFFSET` for NWJ, whose
    bound is tight at f = 1 + log p / q (Poole et al. 2019); the value is then the
    estimator's own bias and variance at this batch size.
    """
    rows = []
    known = [p for p in problems if p.knows_log_ratio]
    for problem, estimator, seed in itertools.product(known, estimators, seeds):
        critic = partial(_optimal_critic, problem, OPTIMAL_OFFSET.get(estimator, 0.0))
        estimate = evaluate(estimator, critic, problem, seed=seed)
        rows.append(_row(problem, estimator, OPTIMAL, seed, estimate))
    return rows


def _optimal_critic(
    problem: Problem, offset: float, x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """x [B, dx], y [M, dy] -> the problem's true log-ratio [B, M] plus `offset`."""
    ratio = problem.log_ratio(x, y)
    assert ratio is not None
    return ratio + offset
