"""Mutual-information estimators and losses as pure functions of a score matrix.

Every function takes the output of a coupling (`ssvae_core.couplings`), a score matrix

    log_f [B, M], M >= B,   log_f[i, j] = log f(z_i, z'_j),

and knows nothing about where it came from. Conventions:

- the positive of anchor i is log_f[i, i];
- every other entry of row i is a negative; columns B..M-1 are extra negatives (random frames);
- entries equal to -inf are not candidates and are left out (`mask_scores` with
  `negative_mask` expresses "N < B - 1 random negatives per anchor" this way).

For the plain [B, B] case the definitions are exactly those of Poole et al. 2019, "On
variational bounds of mutual information". Rows with no negatives are not supported by the
estimators that average over negatives (infonce_limit, nwj, dv, js).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ssvae_core.registry import lookup


def _check_scores(log_f: Tensor) -> None:
    if log_f.dim() != 2 or log_f.shape[1] < log_f.shape[0]:
        raise ValueError(f"log_f must be [B, M] with M >= B, got shape {tuple(log_f.shape)}")


def _positives(log_f: Tensor) -> Tensor:
    """log_f [B, M] -> positive scores s_ii [B]."""
    return log_f.diagonal()


def _negatives(log_f: Tensor) -> tuple[Tensor, Tensor]:
    """log_f [B, M] -> (negative scores [B, M] with -inf on the diagonal, count per row [B]).

    The count is a float tensor: the number of finite-or-+inf (not -inf) off-diagonal entries.
    """
    batch = log_f.shape[0]
    diagonal = torch.zeros_like(log_f, dtype=torch.bool)
    diagonal[:, :batch] = torch.eye(batch, dtype=torch.bool, device=log_f.device)
    negatives = log_f.masked_fill(diagonal, -math.inf)
    counts = (~torch.isneginf(negatives)).sum(dim=1).to(log_f.dtype)
    return negatives, counts


def _log_mean_exp_negatives(log_f: Tensor) -> Tensor:
    """log of the mean of exp(s_ij) over all negative entries (i != j) of log_f [B, M] -> []."""
    negatives, counts = _negatives(log_f)
    return torch.logsumexp(negatives.flatten(), dim=0) - counts.sum().log()


def infonce_terms(log_f: Tensor) -> Tensor:
    """Per-anchor InfoNCE terms log K_i + s_ii - logsumexp_j s_ij, log_f [B, M] -> [B] (nats).

    K_i is the number of candidates of row i (the positive and its negatives).
    """
    _check_scores(log_f)
    candidates = (~torch.isneginf(log_f)).sum(dim=1).to(log_f.dtype)  # [B]
    return candidates.log() + _positives(log_f) - torch.logsumexp(log_f, dim=1)


def infonce(log_f: Tensor) -> Tensor:
    """InfoNCE lower bound (eq. 3): the mean of `infonce_terms`, log_f [B, M] -> [] in nats.

    Unmasked [B, B] gives log B + mean_i(s_ii - logsumexp_j s_ij) <= log B. The constant
    is log(N + 1), the number of candidates (Oord et al.; Poole et al.), where eq. 3 as
    printed adds log N: a bound looser by log((N + 1) / N), 0.034 nats at N = 29.
    """
    return infonce_terms(log_f).mean()


def infonce_limit(log_f: Tensor) -> Tensor:
    """The N -> infinity InfoNCE objective = the SSVAE ELBO up to a constant (eqs. 4, 32-33).

    log_f [B, M] -> []: mean_i( s_ii - log mean_{j != i} exp s_ij ), the expectation over
    Q(z') of eq. 33 replaced by the mean over the negatives of row i.
    """
    _check_scores(log_f)
    negatives, counts = _negatives(log_f)
    log_partition = torch.logsumexp(negatives, dim=1) - counts.log()  # [B], log Z of eq. 31
    return (_positives(log_f) - log_partition).mean()


def nwj(log_f: Tensor) -> Tensor:
    """NWJ / f-GAN KL bound: mean_i s_ii - exp(logmeanexp_{i != j} s_ij - 1); log_f [B, M] -> []."""
    _check_scores(log_f)
    return _positives(log_f).mean() - torch.exp(_log_mean_exp_negatives(log_f) - 1.0)


def dv(log_f: Tensor) -> Tensor:
    """Donsker-Varadhan (MINE without moving average): mean_i s_ii - logmeanexp_{i != j} s_ij.

    log_f [B, M] -> [].
    """
    _check_scores(log_f)
    return _positives(log_f).mean() - _log_mean_exp_negatives(log_f)


def js_fgan(log_f: Tensor) -> Tensor:
    """Jensen-Shannon f-GAN bound: mean_i -softplus(-s_ii) - mean_{i != j} softplus(s_ij).

    log_f [B, M] -> []. Not an MI estimate; Poole et al. train the critic on it (see `js`).
    """
    _check_scores(log_f)
    negatives, counts = _negatives(log_f)
    # softplus(-inf) = 0 with gradient 0: excluded entries drop out of the sum.
    negative_term = F.softplus(negatives).sum() / counts.sum()
    return -F.softplus(-_positives(log_f)).mean() - negative_term


def js(log_f: Tensor) -> Tensor:
    """JS estimator of Poole et al.: the NWJ value at f = 1 + T, the gradient of `js_fgan`.

    log_f [B, M] -> []. The JS f-GAN bound is maximised by T = log p/q, and NWJ by
    f = 1 + log p/q, so the value reported is nwj(1 + log_f) (= I at the optimum; nwj(log_f)
    would read I - 1/e). Written fgan + stop_gradient(nwj - fgan) as in Poole et al.
    """
    fgan = js_fgan(log_f)
    return fgan + (nwj(log_f + 1.0) - fgan).detach()


def infonce_loss(log_f: Tensor) -> Tensor:
    """Mean cross-entropy with diagonal targets, log_f [B, M] -> [] (log B for constant [B, B]).

    Equals log K - infonce(log_f) when every row has K candidates.
    """
    _check_scores(log_f)
    targets = torch.arange(log_f.shape[0], device=log_f.device)
    return F.cross_entropy(log_f, targets)


def _js_loss(log_f: Tensor) -> Tensor:
    """Minus the Jensen-Shannon f-GAN bound, log_f [B, M] -> []."""
    return -js_fgan(log_f)


ESTIMATORS: dict[str, Callable[[Tensor], Tensor]] = {
    "infonce": infonce,
    "infonce_limit": infonce_limit,
    "nwj": nwj,
    "dv": dv,
    "js": js,
}

LOSSES: dict[str, Callable[[Tensor], Tensor]] = {
    "infonce": infonce_loss,
    "infonce_limit": lambda log_f: -infonce_limit(log_f),
    "nwj": lambda log_f: -nwj(log_f),
    "dv": lambda log_f: -dv(log_f),
    "js": _js_loss,
}


def get_estimator(name: str) -> Callable[[Tensor], Tensor]:
    """`ESTIMATORS[name]`, with an error listing the valid names."""
    return lookup(ESTIMATORS, name, "estimator")


def get_loss(name: str) -> Callable[[Tensor], Tensor]:
    """`LOSSES[name]`, with an error listing the valid names."""
    return lookup(LOSSES, name, "estimator")


def negative_mask(
    batch: int,
    n_negatives: int,
    generator: torch.Generator,
) -> Tensor:
    """Which candidates to keep: a bool [B, B], True = keep.

    The diagonal (positives) is always kept, and exactly n_negatives off-diagonal entries per
    row, chosen uniformly at random with `generator` (1 <= n_negatives <= B - 1).
    """
    if not 1 <= n_negatives <= batch - 1:
        raise ValueError(f"n_negatives must be in [1, {batch - 1}] for batch {batch}")
    keys = torch.rand(batch, batch, generator=generator, device=generator.device)
    keys.fill_diagonal_(-1.0)  # the diagonal sorts first: always kept
    kept = keys.argsort(dim=1)[:, : n_negatives + 1]  # [B, n_negatives + 1]
    keep = torch.zeros(batch, batch, dtype=torch.bool, device=generator.device)
    keep.scatter_(1, kept, True)
    return keep


def mask_scores(log_f: Tensor, keep: Tensor) -> Tensor:
    """log_f [B, M] with the entries where keep is False set to -inf (no longer candidates).

    keep: bool [B, M], or [B, B] for a [B, M] log_f, in which case the M - B extra columns are
    all kept. The diagonal of keep must be True (a positive cannot be dropped).
    """
    _check_scores(log_f)
    batch, n_candidates = log_f.shape
    if keep.shape == (batch, batch) and n_candidates > batch:
        extra = torch.ones(batch, n_candidates - batch, dtype=torch.bool, device=keep.device)
        keep = torch.cat([keep, extra], dim=1)
    if keep.shape != log_f.shape:
        raise ValueError(f"keep has shape {tuple(keep.shape)}, log_f {tuple(log_f.shape)}")
    if not bool(keep.diagonal().all()):
        raise ValueError("keep must be True on the diagonal (the positives)")
    return log_f.masked_fill(~keep, -math.inf)
