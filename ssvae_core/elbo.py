"""The InfoNCE ELBO of a trained run and its Jensen gap to the log evidence (eqs. 18-22).

For a stochastic encoder Q(z|x) = N(g(x), sigma^2 I), the ELBO of eq. 20 sits below the log
evidence of eq. 18 by a Jensen gap; for a deterministic encoder (eq. 21) the bound is tight
(eq. 22). `evaluate_elbo` measures both at the end of every SSL run (`train.fit`), from the
final mean representations g(x) of every frame, without encoding anything again.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ssvae_core.batches import ssl_batches
from ssvae_core.objectives import infonce_terms, mask_scores

ELBO_SAMPLES = 16  # draws from Q(z|x) per pair


@torch.no_grad()
def evaluate_elbo(
    coupling: Callable[[Tensor, Tensor], Tensor],
    z: Tensor,
    sigma: Tensor | float | None,
    *,
    batch: int,
    n_negatives: int | None,
    seed: int,
    samples: int = ELBO_SAMPLES,
) -> dict[str, float]:
    """The InfoNCE ELBO (eqs. 3, 20) and its Jensen gap to the log evidence (eq. 18), in nats.

    z: the mean representations g(x) of every frame, [T, D]; sigma: the encoder's sigma, or
    None for a deterministic encoder. One epoch of `ssl_batches` from a generator seeded by
    `seed` (the run's own random stream is untouched); a draw from Q(z|x) adds sigma * eps per
    distinct frame. For anchor i, draw k = 1..K redraws only its pair (z_i, z'_i); the
    candidates stay at one draw, a sample of the marginal Q(z') over which eq. 31's normaliser
    E_Q(z')[f] is taken. With r_ik the InfoNCE term of anchor i (`objectives.infonce_terms`):

    - ``elbo`` = mean_ik r_ik: eq. 20 with the InfoNCE bound (what training maximises when
      ``objective.estimator`` is ``infonce``);
    - ``elbo_gap`` = mean_i log mean_k exp r_ik - elbo >= 0 (Jensen): the first term is a
      K-draw importance estimate of log E_Q[...] of eq. 18, so with K draws it understates
      the gap. A deterministic encoder has one draw and a gap of exactly 0 (eq. 22);
    - ``elbo_at_mean``: the same terms at z = g(x).
    """
    device = z.device
    draws, scale = (samples, sigma) if sigma is not None else (1, 0.0)
    generator = torch.Generator().manual_seed(seed)
    diagonal = torch.arange(batch, device=device)
    terms, at_mean = [], []

    def infonce_rows(log_f: Tensor, keep: Tensor | None) -> Tensor:
        """log_f [B, B + K] -> the InfoNCE term of each anchor [B], masked to N negatives."""
        return infonce_terms(log_f if keep is None else mask_scores(log_f, keep.to(device)))

    for index, keep in ssl_batches(len(z), batch, n_negatives, generator):
        unique, inverse = torch.unique(index, return_inverse=True)
        mu = z[unique.to(device)]  # [U, D], one row per distinct frame
        noise = torch.randn((draws + 1, *mu.shape), generator=generator).to(device)
        drawn = (mu + scale * noise)[:, inverse.to(device)]  # [K + 1, 2B + K', D]
        means = mu[inverse.to(device)]  # [2B + K', D]
        at_mean.append(infonce_rows(coupling(means[:batch], means[batch:]), keep))
        candidates = drawn[0, batch:]  # draw 0: the negatives, held fixed
        per_draw = []
        for pair in drawn[1:]:  # anchor and positive redrawn, [2B + K', D]
            log_f = coupling(pair[:batch], candidates).clone()  # [B, B + K']
            positives = coupling(pair[:batch], pair[batch : 2 * batch]).diagonal()  # [B]
            log_f[diagonal, diagonal] = positives
            per_draw.append(infonce_rows(log_f, keep))
        terms.append(torch.stack(per_draw))  # [K, B]
    r = torch.cat(terms, dim=1)  # [K, anchors]
    evidence = torch.logsumexp(r, dim=0) - math.log(draws)  # [anchors]
    return {
        "elbo": float(r.mean()),
        "elbo_gap": float((evidence - r.mean(dim=0)).mean()),
        "elbo_at_mean": float(torch.cat(at_mean).mean()),
    }
