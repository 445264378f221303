"""Estimators and losses of ssvae_core.objectives against slow loops written from the formulas."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from ssvae_core.objectives import (
    ESTIMATORS,
    LOSSES,
    get_estimator,
    get_loss,
    infonce,
    infonce_loss,
    infonce_terms,
    js_fgan,
    mask_scores,
    negative_mask,
    nwj,
)

Rows = tuple[list[float], list[list[float]]]


def split_rows(log_f: Tensor) -> Rows:
    """Double loop: positives s_ii and the candidate negatives of each row (-inf left out)."""
    values = log_f.detach().double().tolist()
    positives, negatives = [], []
    for i, row in enumerate(values):
        positives.append(row[i])
        negatives.append([s for j, s in enumerate(row) if j != i and s != -math.inf])
    return positives, negatives


def ref_infonce(rows: Rows) -> float:
    positives, negatives = rows
    total = 0.0
    for positive, row in zip(positives, negatives, strict=True):
        partition = math.exp(positive) + sum(math.exp(s) for s in row)
        total += math.log(1 + len(row)) + positive - math.log(partition)
    return total / len(positives)


def ref_infonce_limit(rows: Rows) -> float:
    positives, negatives = rows
    total = 0.0
    for positive, row in zip(positives, negatives, strict=True):
        total += positive - math.log(sum(math.exp(s) for s in row) / len(row))
    return total / len(positives)


def ref_log_mean_exp_negatives(rows: Rows) -> float:
    all_negatives = [s for row in rows[1] for s in row]
    return math.log(sum(math.exp(s) for s in all_negatives) / len(all_negatives))


def ref_nwj(rows: Rows) -> float:
    mean_positive = sum(rows[0]) / len(rows[0])
    return mean_positive - math.exp(ref_log_mean_exp_negatives(rows) - 1.0)


def ref_dv(rows: Rows) -> float:
    return sum(rows[0]) / len(rows[0]) - ref_log_mean_exp_negatives(rows)


def ref_js_fgan(rows: Rows) -> float:
    positives, negatives = rows
    all_negatives = [s for row in negatives for s in row]
    first = sum(-math.log1p(math.exp(-s)) for s in positives) / len(positives)
    second = sum(math.log1p(math.exp(s)) for s in all_negatives) / len(all_negatives)
    return first - second


REFERENCES: dict[str, Callable[[Rows], float]] = {
    "infonce": ref_infonce,
    "infonce_limit": ref_infonce_limit,
    "nwj": ref_nwj,
    "dv": ref_dv,
    "js": lambda rows: ref_nwj(  # Poole et al.: NWJ at f = 1 + T for the JS-trained critic
        ([p + 1.0 for p in rows[0]], [[s + 1.0 for s in row] for row in rows[1]])
    ),
}


def random_scores(batch: int, n_candidates: int, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 2.0 * torch.randn(batch, n_candidates, generator=generator)


def masked_scores(batch: int, n_candidates: int, n_negatives: int, seed: int) -> Tensor:
    keep = negative_mask(batch, n_negatives, torch.Generator().manual_seed(seed + 1))
    return mask_scores(random_scores(batch, n_candidates, seed), keep)


CASES = {
    "square": lambda: random_scores(8, 8, 0),
    "extra_columns": lambda: random_scores(6, 11, 1),
    "masked_square": lambda: masked_scores(9, 9, 3, 2),
    "masked_extra_columns": lambda: masked_scores(7, 12, 2, 3),
}


def test_registries_agree() -> None:
    assert set(ESTIMATORS) == set(LOSSES) == set(REFERENCES)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_estimator_matches_loop(name: str, case: str) -> None:
    log_f = CASES[case]()
    expected = REFERENCES[name](split_rows(log_f))
    assert ESTIMATORS[name](log_f).item() == pytest.approx(expected, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("case", sorted(CASES))
def test_js_loss_is_minus_fgan_bound(case: str) -> None:
    log_f = CASES[case]()
    expected = -ref_js_fgan(split_rows(log_f))
    assert LOSSES["js"](log_f).item() == pytest.approx(expected, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("name", sorted(set(ESTIMATORS) - {"js"}))
def test_loss_is_minus_estimate(name: str) -> None:
    log_f = CASES["masked_extra_columns"]()  # K = 1 + 2 + 5 candidates in every row
    if name == "infonce":  # cross-entropy = log K - estimate
        expected = math.log(8) - ESTIMATORS[name](log_f)
    else:
        expected = -ESTIMATORS[name](log_f)
    torch.testing.assert_close(LOSSES[name](log_f), expected)


def gathered(log_f: Tensor) -> Tensor:
    """The sub-problem written out densely: [B, 1 + N], positive in column 0, no -inf."""
    rows = [
        torch.cat([row[i : i + 1], row[[j for j in range(len(row)) if j != i]]])
        for i, row in enumerate(log_f)
    ]
    dense = torch.stack([row[~torch.isneginf(row)] for row in rows])
    return dense


GATHERED: dict[str, Callable[[Tensor], Tensor]] = {
    "infonce": lambda sub: (
        math.log(sub.shape[1]) + sub[:, 0] - torch.logsumexp(sub, dim=1)
    ).mean(),
    "infonce_limit": lambda sub: (
        sub[:, 0] - torch.logsumexp(sub[:, 1:], dim=1) + math.log(sub.shape[1] - 1)
    ).mean(),
    "nwj": lambda sub: (
        sub[:, 0].mean()
        - torch.exp(torch.logsumexp(sub[:, 1:].flatten(), 0) - math.log(sub[:, 1:].numel()) - 1)
    ),
    "dv": lambda sub: (
        sub[:, 0].mean() - torch.logsumexp(sub[:, 1:].flatten(), 0) + math.log(sub[:, 1:].numel())
    ),
}
GATHERED["js"] = lambda sub: GATHERED["nwj"](sub + 1.0)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_masked_equals_gathered_sub_problem(name: str) -> None:
    for log_f in (masked_scores(10, 10, 4, 5), masked_scores(6, 9, 1, 6)):
        sub = gathered(log_f)
        torch.testing.assert_close(ESTIMATORS[name](log_f), GATHERED[name](sub))


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_full_mask_changes_nothing(name: str) -> None:
    log_f = random_scores(5, 5, 7)
    keep = negative_mask(5, 4, torch.Generator().manual_seed(0))
    assert bool(keep.all())
    torch.testing.assert_close(ESTIMATORS[name](mask_scores(log_f, keep)), ESTIMATORS[name](log_f))


@pytest.mark.parametrize("batch", [1, 2, 7, 64])
def test_infonce_loss_of_constant_is_log_batch(batch: int) -> None:
    assert infonce_loss(torch.zeros(batch, batch)).item() == pytest.approx(
        math.log(batch), abs=1e-6
    )
    constant = torch.full((batch, batch), 3.7)
    assert infonce_loss(constant).item() == pytest.approx(math.log(batch), abs=1e-5)
    assert ESTIMATORS["infonce"](constant).item() == pytest.approx(0.0, abs=1e-5)


def test_infonce_at_most_log_k() -> None:
    for seed in range(20):
        log_f = random_scores(8, 8, seed)
        log_f = log_f + 50.0 * torch.eye(8)  # near-perfect critic: estimate close to log B
        assert ESTIMATORS["infonce"](log_f).item() <= math.log(8) + 1e-4
        masked = masked_scores(8, 8, 2, seed) + 50.0 * torch.eye(8)
        # float32: s_ii - logsumexp rounds at the ulp of |s| ~ 50, about 4e-6
        assert ESTIMATORS["infonce"](masked).item() <= math.log(3) + 1e-4
    assert ESTIMATORS["infonce"](random_scores(8, 8, 0) + 50.0 * torch.eye(8)).item() > 2.07


def test_js_reports_nwj_value_with_fgan_gradient() -> None:
    log_f = random_scores(6, 6, 3).requires_grad_()
    assert ESTIMATORS["js"](log_f).item() == pytest.approx(nwj(log_f + 1.0).item(), abs=1e-6)
    (js_grad,) = torch.autograd.grad(ESTIMATORS["js"](log_f), log_f)
    (fgan_grad,) = torch.autograd.grad(js_fgan(log_f), log_f)
    torch.testing.assert_close(js_grad, fgan_grad)
    torch.testing.assert_close(LOSSES["js"](log_f), -js_fgan(log_f))


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_gradients_finite_with_masks(name: str) -> None:
    keep = negative_mask(8, 2, torch.Generator().manual_seed(4))
    log_f = random_scores(8, 10, 4).requires_grad_()
    for objective in (ESTIMATORS[name], LOSSES[name]):
        (grad,) = torch.autograd.grad(objective(mask_scores(log_f, keep)), log_f)
        assert bool(torch.isfinite(grad).all())
        assert bool((grad[:, :8][~keep] == 0).all())


def test_negative_mask_counts_and_determinism() -> None:
    for batch, n_negatives in [(2, 1), (9, 1), (9, 5), (16, 15)]:
        keep = negative_mask(batch, n_negatives, torch.Generator().manual_seed(11))
        assert keep.shape == (batch, batch) and keep.dtype == torch.bool
        assert bool(keep.diagonal().all())
        assert keep.sum(dim=1).tolist() == [n_negatives + 1] * batch
        again = negative_mask(batch, n_negatives, torch.Generator().manual_seed(11))
        assert torch.equal(keep, again)
    first = negative_mask(30, 5, torch.Generator().manual_seed(0))
    assert not torch.equal(first, negative_mask(30, 5, torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("n_negatives", [0, 8])
def test_negative_mask_range(n_negatives: int) -> None:
    with pytest.raises(ValueError, match="n_negatives"):
        negative_mask(8, n_negatives, torch.Generator())


def test_mask_scores_rejects_dropped_positive_and_bad_shape() -> None:
    keep = torch.ones(4, 4, dtype=torch.bool)
    keep[2, 2] = False
    with pytest.raises(ValueError, match="diagonal"):
        mask_scores(torch.zeros(4, 4), keep)
    with pytest.raises(ValueError, match="shape"):
        mask_scores(torch.zeros(4, 6), torch.ones(4, 5, dtype=torch.bool))


def test_score_matrix_shape_is_checked() -> None:
    with pytest.raises(ValueError, match="M >= B"):
        ESTIMATORS["infonce"](torch.zeros(5, 4))


def test_unknown_name_lists_valid_names() -> None:
    for lookup in (get_estimator, get_loss):
        with pytest.raises(ValueError, match="infonce_limit"):
            lookup("mine")


def test_infonce_is_the_mean_of_its_per_anchor_terms() -> None:
    log_f = torch.randn(6, 9, generator=torch.Generator().manual_seed(0))
    log_f[0, 3] = -math.inf  # a masked candidate: row 0 has 8 candidates
    terms = infonce_terms(log_f)
    assert terms.shape == (6,)
    assert torch.isclose(terms.mean(), infonce(log_f))
    expected = math.log(8) + log_f[0, 0] - torch.logsumexp(log_f[0], dim=0)
    assert torch.isclose(terms[0], expected)
