"""Couplings of ssvae_core.couplings: every registry entry, vectorised vs per-pair, by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from ssvae_core.couplings import (
    COUPLINGS,
    DEFAULT_LENGTHSCALE,
    ConcatMLP,
    Gaussian,
    build_coupling,
    coupling_params,
)

DIM = 4


def latents(rows: int, seed: int) -> Tensor:
    return torch.randn(rows, DIM, generator=torch.Generator().manual_seed(seed))


def seeded_coupling(name: str, seed: int = 0, params: dict[str, object] | None = None) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_coupling(name, DIM, **(params or {}))


@pytest.mark.parametrize("name", sorted(COUPLINGS))
def test_output_shape(name: str) -> None:
    log_f = seeded_coupling(name)(latents(5, 0), latents(7, 1))
    assert log_f.shape == (5, 7)
    assert log_f.dtype == torch.float32


@pytest.mark.parametrize("name", sorted(COUPLINGS))
def test_vectorised_equals_per_pair_loop(name: str) -> None:
    coupling = seeded_coupling(name)
    z, z_prime = latents(5, 2), latents(6, 3)
    log_f = coupling(z, z_prime)
    for i in range(5):
        for j in range(6):
            pair = coupling(z[i : i + 1], z_prime[j : j + 1])
            torch.testing.assert_close(log_f[i, j], pair[0, 0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(COUPLINGS))
def test_gradients_finite_including_equal_latents(name: str) -> None:
    coupling = seeded_coupling(name)
    z = latents(6, 4).requires_grad_()
    z_prime = torch.cat([z.detach()[:3], latents(2, 5)]).requires_grad_()  # z_i == z'_i, i < 3
    for log_f in (coupling(z, z_prime), coupling(z, z)):
        assert bool(torch.isfinite(log_f).all())
        grads = torch.autograd.grad(
            log_f.logsumexp(dim=1).sum() - log_f[:, :3].diagonal().sum(),
            [z, z_prime, *coupling.parameters()],
            allow_unused=True,
        )
        for grad in grads:
            assert grad is None or bool(torch.isfinite(grad).all())


@pytest.mark.parametrize("name", sorted(COUPLINGS))
def test_deterministic_given_seed(name: str) -> None:
    z, z_prime = latents(4, 6), latents(5, 7)
    first = seeded_coupling(name, seed=3)(z, z_prime)
    torch.testing.assert_close(seeded_coupling(name, seed=3)(z, z_prime), first, rtol=0, atol=0)
    coupling = seeded_coupling(name, seed=3)
    torch.testing.assert_close(coupling(z, z_prime), coupling(z, z_prime), rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(COUPLINGS))
def test_default_params_are_the_signature_defaults(name: str) -> None:
    params = coupling_params(name)
    assert "dim" not in params and "self" not in params
    z, z_prime = latents(3, 8), latents(4, 9)
    explicit = seeded_coupling(name, params=params)(z, z_prime)
    torch.testing.assert_close(seeded_coupling(name)(z, z_prime), explicit)


@pytest.mark.parametrize("name", sorted(COUPLINGS))
def test_lengthscale_property_only_where_a_lengthscale_exists(name: str) -> None:
    coupling = build_coupling(name, DIM)
    if "lengthscale" in coupling_params(name):
        assert coupling.lengthscale.item() == pytest.approx(DEFAULT_LENGTHSCALE)  # type: ignore[operator]
        fixed = build_coupling(name, DIM, lengthscale=0.5, learn_lengthscale=False)
        assert fixed.lengthscale.item() == pytest.approx(0.5)  # type: ignore[operator]
        assert list(fixed.parameters()) == []
    else:
        assert not hasattr(coupling, "lengthscale")


def test_gaussian_is_eq_36_by_hand() -> None:
    coupling = build_coupling("gaussian", DIM, lengthscale=0.7)
    z, z_prime = latents(3, 10), latents(4, 11)
    log_f = coupling(z, z_prime)
    for i in range(3):
        for j in range(4):
            squared = sum((z[i, d].item() - z_prime[j, d].item()) ** 2 for d in range(DIM))
            assert log_f[i, j].item() == pytest.approx(-squared / (2 * 0.7**2), rel=1e-5)


def test_gaussian_per_dim_by_hand() -> None:
    coupling = build_coupling("gaussian", DIM, lengthscale=0.5, per_dim=True)
    assert isinstance(coupling, Gaussian)
    assert coupling.lengthscale.shape == (DIM,)
    with torch.no_grad():
        coupling.scale.log_value.copy_(torch.tensor([0.1, 0.5, 1.0, 2.0]).log())
    z, z_prime = latents(2, 12), latents(3, 13)
    scales = [0.1, 0.5, 1.0, 2.0]
    log_f = coupling(z, z_prime)
    for i in range(2):
        for j in range(3):
            expected = -sum(
                (z[i, d].item() - z_prime[j, d].item()) ** 2 / (2 * scales[d] ** 2)
                for d in range(DIM)
            )
            assert log_f[i, j].item() == pytest.approx(expected, rel=1e-5)


def test_gaussian_of_equal_latents_is_zero() -> None:
    z = 30.0 * latents(40, 14)  # large norms: the matrix-product shortcut would not give 0
    log_f = build_coupling("gaussian", DIM)(z, z)
    assert bool((log_f.diagonal() == 0).all())
    assert bool((log_f <= 0).all())


def test_laplace_and_student_t_by_hand() -> None:
    z, z_prime = latents(2, 15), latents(3, 16)
    laplace = build_coupling("laplace", DIM, lengthscale=0.4)(z, z_prime)
    student = build_coupling("student_t", DIM, lengthscale=0.4, dof=3.0)(z, z_prime)
    for i in range(2):
        for j in range(3):
            diffs = [z[i, d].item() - z_prime[j, d].item() for d in range(DIM)]
            assert laplace[i, j].item() == pytest.approx(-sum(map(abs, diffs)) / 0.4, rel=1e-5)
            squared = sum(diff**2 for diff in diffs)
            expected = -(3.0 + DIM) / 2 * math.log(1 + squared / (3.0 * 0.4**2))
            assert student[i, j].item() == pytest.approx(expected, rel=1e-5)


def test_bilinear_starts_as_dot_product_and_cosine_by_hand() -> None:
    z, z_prime = latents(3, 17), latents(4, 18)
    torch.testing.assert_close(build_coupling("bilinear", DIM)(z, z_prime), z @ z_prime.T)
    cosine = build_coupling("cosine", DIM, temperature=0.5)(z, z_prime)
    expected = torch.nn.functional.cosine_similarity(z[:, None], z_prime[None], dim=-1) / 0.5
    torch.testing.assert_close(cosine, expected)


def test_concat_mlp_equals_mlp_on_concatenation() -> None:
    coupling = seeded_coupling("concat_mlp")
    assert isinstance(coupling, ConcatMLP)
    z, z_prime = latents(3, 19), latents(5, 20)
    log_f = coupling(z, z_prime)
    for i in range(3):
        for j in range(5):
            direct = coupling.mlp(torch.cat([z[i], z_prime[j]]))
            torch.testing.assert_close(log_f[i, j], direct[0])


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="gaussian") as error:
        build_coupling("rbf", DIM)
    assert all(name in str(error.value) for name in COUPLINGS)
    with pytest.raises(ValueError, match="concat_mlp"):
        coupling_params("rbf")


def test_unknown_param_is_named_with_accepted_ones() -> None:
    with pytest.raises(ValueError, match=r"'temperature'.*lengthscale"):
        build_coupling("gaussian", DIM, temperature=0.1)
    with pytest.raises(ValueError, match="'lengthscale'"):
        build_coupling("bilinear", DIM, lengthscale=1.0)


@pytest.mark.parametrize(
    ("name", "param", "value"),
    [
        ("gaussian", "lengthscale", 0.0),
        ("laplace", "lengthscale", -1.0),
        ("student_t", "dof", 0.0),
        ("cosine", "temperature", -0.1),
        ("separable_mlp", "hidden", 0),
        ("separable_mlp", "embed_dim", 0),
        ("concat_mlp", "hidden", 0),
    ],
)
def test_bad_param_values_are_named(name: str, param: str, value: float) -> None:
    with pytest.raises(ValueError, match=param):
        build_coupling(name, DIM, **{param: value})


@pytest.mark.parametrize("name", sorted(COUPLINGS))
def test_z_and_z_prime_may_differ_in_size_where_the_form_allows(name: str) -> None:
    generator = torch.Generator().manual_seed(0)
    z, z_prime = torch.randn(3, 4, generator=generator), torch.randn(5, 7, generator=generator)
    if COUPLINGS[name].same_dim:  # type: ignore[attr-defined]
        with pytest.raises(ValueError, match="need the same size; got 4 and 7"):
            build_coupling(name, 4, 7)
    else:
        assert build_coupling(name, 4, 7)(z, z_prime).shape == (3, 5)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        square = build_coupling(name, DIM, DIM)  # dim_prime = dim: the usual coupling
    torch.testing.assert_close(
        square(latents(3, 1), latents(5, 2)), seeded_coupling(name)(latents(3, 1), latents(5, 2))
    )
