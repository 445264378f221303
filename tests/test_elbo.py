"""ssvae_core.elbo: the batches it draws and the ELBO / Jensen gap on hand-made inputs."""

from __future__ import annotations

import math

import pytest
import torch

from ssvae_core.couplings import build_coupling
from ssvae_core.elbo import evaluate_elbo, ssl_batches


@pytest.mark.parametrize(("n_negatives", "extra"), [(None, 0), (3, 0), (12, 3)])
def test_batches_hold_pairs_extra_frames_and_masks(n_negatives: int | None, extra: int) -> None:
    batches = list(ssl_batches(41, 10, n_negatives, torch.Generator().manual_seed(0)))
    assert len(batches) == 4  # 40 pairs in batches of 10
    bases = torch.cat([index[:10] for index, _ in batches])
    assert sorted(bases.tolist()) == list(range(40))  # every pair once, shuffled
    for index, keep in batches:
        assert len(index) == 20 + extra
        assert torch.equal(index[10:20], index[:10] + 1)  # targets are the next frames
        if n_negatives is not None and n_negatives < 9:
            assert keep is not None and keep.sum(1).tolist() == [n_negatives + 1] * 10
        else:
            assert keep is None


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
