"""Couplings log f(z, z'): each one is a prior of the SSVAE (section 3.6 of the paper).

The paper's central identity: InfoNCE is the ELBO of an SSVAE whose prior over the second latent
is the energy-based model P(z'|z) = Q(z') f(z, z') / Z (eq. 30), Z = E_Q(z')[f(z, z')] (eq. 31).
Choosing a coupling f is therefore choosing a prior. Every module here maps

    forward(z [B, D], z_prime [M, D]) -> log_f [B, M],   log_f[i, j] = log f(z_i, z'_j),

for all B x M pairs at once (row i = anchor i, column j = candidate j). Any coupling works with
any estimator of `ssvae_core.objectives`, which only sees the score matrix.

Look-up is by short name through the explicit registry `COUPLINGS`; `build_coupling` validates
the name and the keyword parameters, `coupling_params` lists a coupling's parameters.
"""

from __future__ import annotations

import inspect
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _require_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")


def _require_dim(dim: int) -> None:
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim!r}")


def _squared_distances(z: Tensor, z_prime: Tensor) -> Tensor:
    """Exact squared Euclidean distances, z [B, D], z_prime [M, D] -> [B, M].

    `cdist` without the matrix-product shortcut is exact (0 on the diagonal of cdist(z, z)) and
    its gradient at z == z' is 0, not NaN.
    """
    return torch.cdist(z, z_prime, compute_mode="donot_use_mm_for_euclid_dist").square()


class PositiveScale(nn.Module):
    """A positive scalar or vector stored as its logarithm (learned or fixed).

    value: [] (shape ()) or [D]
    """

    def __init__(self, initial: float, learn: bool, size: int | None = None) -> None:
        super().__init__()
        shape = () if size is None else (size,)
        log_value = torch.full(shape, math.log(initial))
        if learn:
            self.log_value = nn.Parameter(log_value)
        else:
            self.register_buffer("log_value", log_value)

    @property
    def value(self) -> Tensor:
        return self.log_value.exp()


class Bilinear(nn.Module):
    """The original InfoNCE coupling (eq. 5): log f(z, z') = z^T W z', W [D, D] learned.

    Implied prior (eq. 34): P(z'|z) ∝ Q(z') exp(z^T W z'), which does not favour z' near z.
    W starts at the identity.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        _require_dim(dim)
        self.weight = nn.Parameter(torch.eye(dim))

    def forward(self, z: Tensor, z_prime: Tensor) -> Tensor:
        """z [B, D], z_prime [M, D] -> log_f [B, M]."""
        return z @ self.weight @ z_prime.T


class Gaussian(nn.Module):
    """Gaussian-RBF coupling (eq. 36): log f(z, z') = -||z - z'||^2 / (2 L^2).

    Implied prior (eqs. 30, 35): P(z'|z) ∝ Q(z') N(z'; z, L^2 I), i.e. z' is near z.
    With per_dim, one lengthscale per dimension: log f = -sum_d (z_d - z'_d)^2 / (2 L_d^2).
    L is stored as log L (learned unless learn_lengthscale is False).
    """

    def __init__(
        self,
        dim: int,
        lengthscale: float = 0.1,
        learn_lengthscale: bool = True,
        per_dim: bool = False,
    ) -> None:
        super().__init__()
        _require_dim(dim)
        _require_positive("lengthscale", lengthscale)
        self.scale = PositiveScale(lengthscale, learn_lengthscale, dim if per_dim else None)

    @property
    def lengthscale(self) -> Tensor:
        """L: [] or [D] with per_dim."""
        return self.scale.value

    def forward(self, z: Tensor, z_prime: Tensor) -> Tensor:
        """z [B, D], z_prime [M, D] -> log_f [B, M]."""
        lengthscale = self.lengthscale
        return -0.5 * _squared_distances(z / lengthscale, z_prime / lengthscale)


class Laplace(nn.Module):
    """Laplace coupling: log f(z, z') = -||z - z'||_1 / L.

    Implied prior: P(z'|z) ∝ Q(z') prod_d Laplace(z'_d; z_d, L), heavier-tailed than eq. 35.
    """

    def __init__(self, dim: int, lengthscale: float = 0.1, learn_lengthscale: bool = True) -> None:
        super().__init__()
        _require_dim(dim)
        _require_positive("lengthscale", lengthscale)
        self.scale = PositiveScale(lengthscale, learn_lengthscale)

    @property
    def lengthscale(self) -> Tensor:
        """L: []."""
        return self.scale.value

    def forward(self, z: Tensor, z_prime: Tensor) -> Tensor:
        """z [B, D], z_prime [M, D] -> log_f [B, M]."""
        return -torch.cdist(z, z_prime, p=1.0) / self.lengthscale


class StudentT(nn.Module):
    """Student-t coupling: log f(z, z') = -(nu + D)/2 log(1 + ||z - z'||^2 / (nu L^2)).

    Implied prior: P(z'|z) ∝ Q(z') t_nu(z'; z, L^2 I), the multivariate Student-t with nu = dof
    degrees of freedom; it tends to the Gaussian prior of eqs. 35-36 as nu -> infinity.
    """

    def __init__(
        self,
        dim: int,
        lengthscale: float = 0.1,
        learn_lengthscale: bool = True,
        dof: float = 1.0,
    ) -> None:
        super().__init__()
        _require_dim(dim)
        _require_positive("lengthscale", lengthscale)
        _require_positive("dof", dof)
        self.dim = dim
        self.dof = dof
        self.scale = PositiveScale(lengthscale, learn_lengthscale)

    @property
    def lengthscale(self) -> Tensor:
        """L: []."""
        return self.scale.value

    def forward(self, z: Tensor, z_prime: Tensor) -> Tensor:
        """z [B, D], z_prime [M, D] -> log_f [B, M]."""
        scaled = _squared_distances(z, z_prime) / (self.dof * self.lengthscale.square())
        return -0.5 * (self.dof + self.dim) * torch.log1p(scaled)


class Cosine(nn.Module):
    """Cosine coupling (SimCLR's critic): log f(z, z') = cos(z, z') / tau.

    Implied prior: P(z'|z) ∝ Q(z') exp(cos(z, z') / tau), a von Mises-Fisher factor on the
    direction of z' with mean direction z / ||z|| and concentration 1 / tau.
    """

    def __init__(self, dim: int, temperature: float = 0.1, learn_temperature: bool = False) -> None:
        super().__init__()
        _require_dim(dim)
        _require_positive("temperature", temperature)
        self.scale = PositiveScale(temperature, learn_temperature)

    @property
    def temperature(self) -> Tensor:
        """tau: []."""
        return self.scale.value

    def forward(self, z: Tensor, z_prime: Tensor) -> Tensor:
        """z [B, D], z_prime [M, D] -> log_f [B, M]."""
        return F.normalize(z, dim=-1) @ F.normalize(z_prime, dim=-1).T / self.temperature


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """Two hidden ReLU layers (the critics of Poole et al. 2019): [*, in_dim] -> [*, out_dim]."""
    if hidden < 1:
        raise ValueError(f"hidden must be >= 1, got {hidden!r}")
    return nn.Sequential(
        nn.Linear(in_dim, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, out_dim),
    )


class SeparableMLP(nn.Module):
    """Separable critic (Tschannen et al. 2019): log f(z, z') = g(z)^T h(z'), g, h two MLPs.

    Implied prior: P(z'|z) ∝ Q(z') exp(g(z)^T h(z')), eq. 5 after learned feature maps.
    """

    def __init__(self, dim: int, hidden: int = 64, embed_dim: int = 32) -> None:
        super().__init__()
        _require_dim(dim)
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {embed_dim!r}")
        self.anchor_net = _mlp(dim, hidden, embed_dim)
        self.candidate_net = _mlp(dim, hidden, embed_dim)

    def forward(self, z: Tensor, z_prime: Tensor) -> Tensor:
        """z [B, D], z_prime [M, D] -> log_f [B, M]."""
        return self.anchor_net(z) @ self.candidate_net(z_prime).T


class ConcatMLP(nn.Module):
    """Concatenated critic: log f(z, z') = MLP([z, z']) on all B x M pairs.

    Implied prior: P(z'|z) ∝ Q(z') exp(MLP([z, z'])), the most flexible coupling here.
    The first layer is split, W [z, z'] = W_a z + W_b z', so the [B, M, 2D] input is never built;
    the result equals `self.mlp(torch.cat([z_i, z'_j]))` for every pair.
    """

    def __init__(self, dim: int, hidden: int = 64) -> None:
        super().__init__()
        _require_dim(dim)
        self.dim = dim
        self.mlp = _mlp(2 * dim, hidden, 1)

    def forward(self, z: Tensor, z_prime: Tensor) -> Tensor:
        """z [B, D], z_prime [M, D] -> log_f [B, M]."""
        first = self.mlp[0]
        assert isinstance(first, nn.Linear)
        anchor_part = z @ first.weight[:, : self.dim].T + first.bias  # [B, H]
        candidate_part = z_prime @ first.weight[:, self.dim :].T  # [M, H]
        hidden = anchor_part[:, None, :] + candidate_part[None, :, :]  # [B, M, H]
        return self.mlp[1:](hidden).squeeze(-1)  # [B, M]


COUPLINGS: dict[str, type[nn.Module]] = {
    "bilinear": Bilinear,
    "gaussian": Gaussian,
    "laplace": Laplace,
    "student_t": StudentT,
    "cosine": Cosine,
    "separable_mlp": SeparableMLP,
    "concat_mlp": ConcatMLP,
}


def _coupling_class(name: str) -> type[nn.Module]:
    if name not in COUPLINGS:
        raise ValueError(f"unknown coupling {name!r}; choose from {sorted(COUPLINGS)}")
    return COUPLINGS[name]


def coupling_params(name: str) -> dict[str, object]:
    """The keyword parameters of coupling `name` (besides dim) and their defaults."""
    signature = inspect.signature(_coupling_class(name).__init__)
    return {
        param.name: param.default
        for param in signature.parameters.values()
        if param.name not in ("self", "dim")
    }


def build_coupling(name: str, dim: int, **params: object) -> nn.Module:
    """The coupling `name` for latents of size dim; forward(z [B, D], z' [M, D]) -> [B, M]."""
    accepted = coupling_params(name)
    for param in params:
        if param not in accepted:
            raise ValueError(
                f"coupling {name!r} takes no parameter {param!r}; accepted: {sorted(accepted)}"
            )
    return _coupling_class(name)(dim, **params)
