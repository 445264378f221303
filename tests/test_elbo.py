"""ssvae_core.elbo: the ELBO and its Jensen gap on hand-made inputs."""

from __future__ import annotations

import math

import torch

from ssvae_core.couplings import build_coupling
from ssvae_core.elbo import evaluate_elbo


def test_a_constant_coupling_gives_zero_elbo_and_gap() -> None:
    """log f = 0 everywhere: every InfoNCE term is log B - log B = 0, whatever the noise."""

    def constant(z: torch.Tensor, z_prime: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(z), len(z_prime))

    z = torch.randn(31, 4, generator=torch.Generator().manual_seed(1))
    result = evaluate_elbo(constant, z, 0.5, batch=10, n_negatives=None, seed=0)
    assert result == {"elbo": 0.0, "elbo_gap": 0.0, "elbo_at_mean": 0.0}


def test_the_gap_is_jensens_and_zero_without_noise() -> None:
    coupling = build_coupling("gaussian", 2, lengthscale=0.1)
    steps = torch.randn(61, 2, generator=torch.Generator().manual_seed(2)) * 0.05
    z = steps.cumsum(0)  # a slow random walk, like moving balls
    deterministic = evaluate_elbo(coupling, z, None, batch=10, n_negatives=None, seed=0)
    noisy = evaluate_elbo(coupling, z, 0.1, batch=10, n_negatives=None, seed=0)
    assert deterministic["elbo_gap"] == 0.0
    assert deterministic["elbo"] == deterministic["elbo_at_mean"] == noisy["elbo_at_mean"]
    assert noisy["elbo_gap"] > 0 and noisy["elbo"] < deterministic["elbo"]
    assert noisy["elbo"] <= math.log(10)
