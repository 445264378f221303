"""Pairs (x, y) of known mutual information: the ground truth of the estimator checks.

Every task is built from the componentwise-correlated pair of Poole et al. 2019 (section 5),

    x ~ N(0, I_d),  y = rho x + sqrt(1 - rho^2) eps,  I(x; y) = -d/2 log(1 - rho^2) nats:

- ``gaussian``: that pair (the staircase of Poole et al.);
- ``student_t``: the same pair divided by one shared sqrt(W / nu), W ~ chi^2_nu, i.e. a
  multivariate Student-t. Its MI is the Gaussian term plus c(nu, d, d) > 0 (the shared scale
  makes even uncorrelated components dependent; Arellano-Valle et al. 2013);
- ``*-halfcube``, ``*-asinh``: a strictly monotone map applied to every coordinate of x and
  of y. MI is invariant under it; an estimator's critic has to undo it.

Each `Task` samples a batch with a requested MI and gives the optimal critic
log p(x, y) / (p(x) p(y)). `problems` binds a task to one MI (or reads pairs from a file);
`critics` trains the estimators' critics on them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from scipy import special

from ssvae_core.registry import lookup


def rho_for_mi(mi_nats: float, dim: int = 20) -> float:
    """The componentwise correlation giving I(x; y) = mi_nats: rho = sqrt(1 - exp(-2 I / d))."""
    if mi_nats < 0:
        raise ValueError(f"mi_nats must be >= 0, got {mi_nats!r}")
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim!r}")
    rho = math.sqrt(-math.expm1(-2.0 * mi_nats / dim))
    # Near rho = 1 float64 runs out: at d = 20, 360 to 374 nats all give one rho (360.4 nats)
    # and beyond that rho = 1 (y = x, infinite MI). The task must have the MI it is labelled.
    held = mi_for_rho(rho, dim) if rho < 1.0 else math.inf
    if not math.isclose(held, mi_nats, rel_tol=1e-6, abs_tol=1e-9):
        raise ValueError(
            f"{mi_nats:g} nats over {dim} dimensions is beyond float64 precision (the pairs "
            f"would hold {held:g})"
        )
    return rho


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


def _entropy_term(nu: float) -> float:
    """f(nu) = log Gamma(nu / 2) - nu / 2 psi(nu / 2), the building block of `student_t_offset`."""
    return math.lgamma(nu / 2) - nu / 2 * float(special.digamma(nu / 2))


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
        """x [B, D], y [B, D] with I(x; y) = mi_nats (ValueError below the task's floor)."""
        self.rho(mi_nats, dim)
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
    return lookup(TASKS, name, "task")
