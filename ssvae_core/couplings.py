"""Couplings log f(z, z'): each one is a prior of the SSVAE (section 3.6 of the paper).

The paper's central identity: InfoNCE is the ELBO of an SSVAE whose prior over the second latent
is the energy-based model P(z'|z) = Q(z') f(z, z') / Z (eq. 30), Z = E_Q(z')[f(z, z')] (eq. 31).
Choosing a coupling f is therefore choosing a prior. Every module here maps

    forward(z [B, D], z_prime [M, D']) -> log_f [B, M],   log_f[i, j] = log f(z_i, z'_j),

for all B x M pairs at once (row i = anchor i, column j = candidate j). Any coupling works with
any estimator of `ssvae_core.objectives`, which only sees the score matrix.

Look-up is by short name through the explicit registry `COUPLINGS`; `build_coupling` validates
the name and the keyword parameters, `coupling_params` lists a coupling's parameters: each
coupling declares them, with their one default, in its constructor's signature.

z and z' may have different sizes (D and D', e.g. the two variables of an MI benchmark) where
the coupling's form allows it: `bilinear`, `separable_mlp` and `concat_mlp`. The others compare
z with z' directly (a distance or an angle) and need D' = D (``same_dim``).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssvae_core.registry import declared_params, lookup
from ssvae_core.scale import PositiveScale

# The initial lengthscale L of the distance couplings, in encoder coordinates [-1, 1]
# (the balls move 0.25 per frame there; `docs/lengthscale.md` measures what works).
DEFAULT_LENGTHSCALE = 0.05


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


class Bilinear(nn.Module):
    """The original InfoNCE coupling (eq. 5): log f(z, z') = z^T W z', W [D, D'] learned.

    Implied prior (eq. 34): P(z'|z) ∝ Q(z') exp(z^T W z'), which does not favour z' near z.
    W starts at the identity (its leading min(D, D') diagonal when D' != D).
    """

    same_dim: ClassVar[bool] = False

    def __init__(self, dim: int, dim_prime: int | None = None) -> None:
        super().__init__()
        _require_dim(dim)
        self.weight = nn.Parameter(torch.eye(dim, dim_prime or dim))

    def forward(self, z: Tensor, z_prime: Tensor) -> Tensor:
        """z [B, D], z_prime [M, D'] -> log_f [B, M]."""
        return z @ self.weight @ z_prime.T


class Gaussian(nn.Module):
    """Gaussian-RBF coupling (eq. 36): log f(z, z') = -||z - z'||^2 / (2 L^2).

    Implied prior (eqs. 30, 35): P(z'|z) ∝ Q(z') N(z'; z, L^2 I), i.e. z' is near z.
    With per_dim, one lengthscale per dimension: log f = -sum_d (z_d - z'_d)^2 / (2 L_d^2).
    L is stored as log L (learned unless learn_lengthscale is False).
    """

    same_dim: ClassVar[bool] = True

    def __init__(
        self,
        dim: int,
        lengthscale: float = DEFAULT_LENGTHSCALE,
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

    same_dim: ClassVar[bool] = True

    def __init__(
        self, dim: int, lengthscale: float = DEFAULT_LENGTHSCALE, learn_lengthscale: bool = True
    ) -> None:
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

    same_dim: ClassVar[bool] = True

    def __init__(
        self,
        dim: int,
        lengthscale: float = DEFAULT_LENGTHSCALE,
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

    same_dim: ClassVar[bool] = True

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

    same_dim: ClassVar[bool] = False

    def __init__(
        self, dim: int, dim_prime: int | None = None, hidden: int = 64, embed_dim: int = 32
    ) -> None:
        super().__init__()
        _require_dim(dim)
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {embed_dim!r}")
        self.anchor_net = _mlp(dim, hidden, embed_dim)
        self.candidate_net = _mlp(dim_prime or dim, hidden, embed_dim)

    def forward(self, z: Tensor, z_prime: Tensor) -> Tensor:
        """z [B, D], z_prime [M, D'] -> log_f [B, M]."""
        return self.anchor_net(z) @ self.candidate_net(z_prime).T


class ConcatMLP(nn.Module):
    """Concatenated critic: log f(z, z') = MLP([z, z']) on all B x M pairs.

    Implied prior: P(z'|z) ∝ Q(z') exp(MLP([z, z'])), the most flexible coupling here.
    The first layer is split, W [z, z'] = W_a z + W_b z', so the [B, M, D + D'] input is never
    built; the result equals `self.mlp(torch.cat([z_i, z'_j]))` for every pair.
    """

    same_dim: ClassVar[bool] = False

    def __init__(self, dim: int, dim_prime: int | None = None, hidden: int = 64) -> None:
        super().__init__()
        _require_dim(dim)
        self.dim = dim
        self.mlp = _mlp(dim + (dim_prime or dim), hidden, 1)

    def forward(self, z: Tensor, z_prime: Tensor) -> Tensor:
        """z [B, D], z_prime [M, D'] -> log_f [B, M]."""
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


def coupling_params(name: str) -> dict[str, object]:
    """The keyword parameters of coupling `name` (besides its sizes) and their defaults."""
    return declared_params(lookup(COUPLINGS, name, "coupling"), skip=("dim_prime",))


def same_size(name: str) -> bool:
    """Whether coupling `name` compares z and z' directly, so needs them of one size (D' = D);
    the MLP critics map each on its own and do not."""
    return bool(getattr(COUPLINGS[name], "same_dim", True))


def build_coupling(
    name: str, dim: int, dim_prime: int | None = None, **params: object
) -> nn.Module:
    """The coupling `name` for z of size dim and z' of size dim_prime (default: dim).

    forward(z [B, D], z' [M, D']) -> log_f [B, M]. A ValueError names an unknown coupling or
    parameter, or a coupling that needs D' = D.
    """
    cls = lookup(COUPLINGS, name, "coupling")
    accepted = coupling_params(name)
    for param in params:
        if param not in accepted:
            raise ValueError(
                f"coupling {name!r} takes no parameter {param!r}; accepted: "
                f"{', '.join(accepted) or 'none'}"
            )
    if dim_prime is None or dim_prime == dim:
        return cls(dim, **params)
    if same_size(name):
        flexible = sorted(n for n in COUPLINGS if not same_size(n))
        raise ValueError(
            f"coupling {name!r} compares z and z' directly, so they need the same size; "
            f"got {dim} and {dim_prime}: use one of {', '.join(flexible)}"
        )
    return cls(dim, dim_prime, **params)
