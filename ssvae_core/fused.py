"""Fused runs: K runs of one shape trained as one horizontally fused model (HFTA, MLSys 2021).

Runs that differ only in what does not change a tensor's shape (seed, lr, optimiser, initial
L, sigma, the coupling, the estimator) train side by side: each step, the frames every run
encodes go through one grouped convolution per layer of Fig. 2 (``groups=K``: run k's filters
see only run k's frames) and one batch norm over K x 6 channels, whose per-channel statistics
are exactly the per-run statistics. Everything else stays each run's own: its `train.Run`
(modules, optimiser and schedule, generator, history, checkpoint), its batches, its coupling
and loss; the K losses are summed, so one backward pass gives each run its own gradients.

Runs encode different numbers of distinct frames per step (`train.Run._encode` encodes each
frame once); the shorter are padded, and the batch norm counts only each run's own frames (in
the C kernels where they load: `batchnorm.padded_batch_norm_train`), so a fused run computes
what it would alone, up to the order of floating-point sums.

Only the centre-of-mass encoder (``encoder.kind: com``) fuses; `fuse_key` says which runs can
share a model, and `fit_fused` trains them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ssvae_core.balls import Video
from ssvae_core.batchnorm import (
    batch_norm_train,
    native_applies,
    next_momentum,
    padded_batch_norm_train,
    relu_input,
)
from ssvae_core.config import RunConfig
from ssvae_core.conv3x3 import BatchNormReLU, Conv2d, conv2d, memory_format
from ssvae_core.encoder import CentreOfMassEncoder, StochasticEncoder, centre_of_mass
from ssvae_core.frames import as_float
from ssvae_core.train import Diverged, Report, Run, RunResult, video_on_device

log = logging.getLogger(__name__)


def fuse_key(cfg: RunConfig) -> tuple[Any, ...] | None:
    """What runs must share to be fused (equal keys fuse), or None where `cfg` cannot fuse.

    The video, the encoder's kind and noise, the mode, batch size, negatives, epochs, probe
    schedule and device: everything that sets a tensor's shape or the number of steps.
    """
    if cfg.encoder.kind != "com":
        return None
    train = cfg.train
    negatives = cfg.objective.n_negatives if train.mode == "ssl" else None
    return (
        cfg.data,
        cfg.encoder.kind,
        cfg.encoder.stochastic,
        train.mode,
        train.batch_size,
        train.epochs,
        negatives,
        cfg.probe.every_epochs,
        train.device,
    )


def _layers(encoder: nn.Module) -> CentreOfMassEncoder:
    """The Fig. 2 network of a run's encoder (inside the noise of a stochastic one)."""
    core = encoder.mean if isinstance(encoder, StochasticEncoder) else encoder
    assert isinstance(core, CentreOfMassEncoder), "only encoder.kind: com fuses"
    return core


def masked_batch_norm(
    h: Tensor, mask: Tensor, norms: Sequence[nn.BatchNorm2d], relu: bool = False
) -> Tensor:
    """Batch norm (training mode) of K runs' channels, each over its own rows only, then a
    ReLU if `relu`.

    h: [n, K * C, H, W], run k's channels in block k; mask: [n, K] bool, which rows are run
    k's (the rest is padding, anywhere); norms: run k's `BatchNorm2d` (C channels), whose
    running statistics are updated as alone (unbiased variance, its momentum).
    -> [n, K * C, H, W]. By the C kernels where they apply (padding planes outside the
    statistics, ReLU in the same pass), else in tensor ops.
    """
    _, channels, height, width = h.shape
    per_run = channels // len(norms)
    weight = torch.cat([bn.weight for bn in norms])
    bias = torch.cat([bn.bias for bn in norms])
    eps = norms[0].eps
    rows = mask.to(h.dtype).repeat_interleave(per_run, dim=1)  # [n, K * C]
    count = rows.sum(0)  # [K * C] rows per channel
    momenta = [next_momentum(bn) for bn in norms]
    if native_applies(h, weight, bias):
        out, mean, var = padded_batch_norm_train(h, rows.bool(), weight, bias, eps, relu)
    elif bool(mask.all()) and len(set(momenta)) == 1:  # the batch norm each run alone uses
        return _unpadded_batch_norm(h, norms, weight, bias, relu, momenta[0])
    else:
        # Per row and channel over the pixels, then pooled over each run's rows (stable).
        row_var, row_mean = torch.var_mean(h, dim=(2, 3), correction=0)  # [n, K * C]
        mean = (row_mean * rows).sum(0) / count
        var = ((row_var + (row_mean - mean).square()) * rows).sum(0) / count  # biased
        scale = weight * torch.rsqrt(var + eps)
        out = torch.addcmul((bias - mean * scale)[:, None, None], h, scale[:, None, None])
        out = F.relu(out) if relu else out
    with torch.no_grad():
        pixels = count.double() * (height * width)
        unbiased = var.double() * pixels / (pixels - 1).clamp_min(1)
        for k, (bn, momentum) in enumerate(zip(norms, momenta, strict=True)):
            block = slice(k * per_run, (k + 1) * per_run)
            assert bn.running_mean is not None and bn.running_var is not None
            bn.running_mean.lerp_(mean[block].to(bn.running_mean.dtype), momentum)
            bn.running_var.lerp_(unbiased[block].to(bn.running_var.dtype), momentum)
            bn.num_batches_tracked.add_(1)  # type: ignore[union-attr]
    return out


def _unpadded_batch_norm(
    h: Tensor,
    norms: Sequence[nn.BatchNorm2d],
    weight: Tensor,
    bias: Tensor,
    relu: bool,
    momentum: float,
) -> Tensor:
    """`masked_batch_norm` where every row is every run's, off the C kernels: one
    `batch_norm_train` over the K * C channels (the path each run alone takes; `momentum`:
    every run's own), the running statistics gathered from and given back to each run's
    module."""
    buffers = [(bn.running_mean, bn.running_var) for bn in norms]
    running_mean = torch.cat([m for m, _ in buffers if m is not None])
    running_var = torch.cat([v for _, v in buffers if v is not None])
    out = batch_norm_train(h, running_mean, running_var, weight, bias, momentum, norms[0].eps, relu)
    with torch.no_grad():
        per_run = h.shape[1] // len(norms)
        for k, (mean, var) in enumerate(buffers):
            assert mean is not None and var is not None
            mean.copy_(running_mean[k * per_run : (k + 1) * per_run])
            var.copy_(running_var[k * per_run : (k + 1) * per_run])
            norms[k].num_batches_tracked.add_(1)  # type: ignore[union-attr]
    return out


def _fused_conv(
    layers: Sequence[nn.Module], h: Tensor, input_from: BatchNormReLU | None = None
) -> Tensor:
    """Run k's convolution `layers[k]` on its channel block of h, all as one grouped one
    (input_from: as `conv3x3.conv2d` takes it)."""
    convs = [c for c in layers if isinstance(c, nn.Conv2d)]
    layer, k = convs[0], len(convs)
    weight = torch.cat([c.weight for c in convs])  # [K * out, in, 3, 3]
    weight = weight.contiguous(memory_format=memory_format(h.device))  # as each run's
    biases = [c.bias for c in convs if c.bias is not None]
    bias = torch.cat(biases) if biases else None
    if isinstance(layer, Conv2d) and layer.fits():
        return conv2d(h, weight, bias, k, input_from)
    return F.conv2d(h, weight, bias, layer.stride, layer.padding, layer.dilation, k)


def fused_means(encoders: Sequence[nn.Module], frames: Tensor, counts: Sequence[int]) -> Tensor:
    """Fig. 2 for K runs at once: conv, BN and ReLU, conv, BN, sigmoid, centre of mass, as
    `CentreOfMassEncoder.maps` computes each (the first ReLU's output not kept for the
    backward where the C kernels run: `conv3x3.conv2d`'s ``input_from``).

    frames: float [n, K * 3, H, W] (run k's frames in channels 3k..3k+2, in the layout of
    `conv3x3.memory_format`),
    counts: run k's rows (the rest padding). -> mean representations [n, K, 2M].
    """
    layers = [_layers(e).features for e in encoders]
    n, k = frames.shape[0], len(layers)
    mask = torch.arange(n, device=frames.device)[:, None] < torch.tensor(counts)[None, :].to(
        frames.device
    )  # [n, K]
    conv1, norm1, _relu, conv2, norm2, sigmoid = zip(*layers, strict=True)
    hidden = masked_batch_norm(_fused_conv(conv1, frames), mask, norm1, relu=True)
    out = _fused_conv(conv2, hidden, relu_input(hidden))
    del hidden  # dropped: where input_from was taken, nothing else holds it
    maps = sigmoid[0](masked_batch_norm(out, mask, norm2))  # elementwise: every run's
    return centre_of_mass(maps).view(n, k, -1)


def encode_fused(runs: Sequence[Run], indices: Sequence[Tensor]) -> list[Tensor]:
    """Run k's step frames `indices[k]` [n_k] (repeats allowed) -> z_k [n_k, D], the runs'
    distinct frames padded and encoded in one fused pass (each once, and sampled, for a
    stochastic encoder, from run k's generator, in the order `train.Run._encode` draws)."""
    frames = runs[0].frames  # uint8 [T, 3, H, W], shared
    uniques = [torch.unique(i, return_inverse=True) for i in indices]
    counts = [len(u) for u, _ in uniques]
    width = max(counts)
    padded = torch.stack([torch.cat([u, u.new_zeros(width - len(u))]) for u, _ in uniques])
    gathered = frames[padded.flatten().to(frames.device)]  # [K * n, 3, H, W]
    k, (c, h, w) = len(runs), gathered.shape[1:]
    pixels = gathered.permute(0, 2, 3, 1).reshape(k, width, h, w, c)  # NHWC, as stored
    stacked = pixels.permute(1, 2, 3, 0, 4).reshape(width, h, w, k * c).permute(0, 3, 1, 2)
    means = fused_means([r.encoder for r in runs], as_float(stacked), counts)
    out = []
    for run, (unique, inverse), mu in zip(runs, uniques, means.unbind(1), strict=True):
        z = mu[: len(unique)]
        if isinstance(run.encoder, StochasticEncoder):
            z = run.encoder.sample(z, run.generator)
        out.append(z[inverse.to(z.device)])
    return out


def fused_epoch(runs: Sequence[Run], epoch: int) -> list[dict[str, float] | Diverged]:
    """One epoch of every run in `runs` as one model; -> each run's row (loss, MI estimate)
    or its divergence (a diverged run stops; the others go on)."""
    streams = [iter(run.batches()) for run in runs]
    outcome: list[dict[str, float] | Diverged | None] = [None] * len(runs)
    sums = [[0.0, 0.0, 0] for _ in runs]  # loss, estimate, steps
    for run in runs:
        run.encoder.train()
    number = 0
    while True:
        number += 1
        live = [i for i in range(len(runs)) if outcome[i] is None]
        drawn = {i: next(streams[i], None) for i in live}
        if not live or any(batch is None for batch in drawn.values()):
            break  # every run has the same number of batches
        members = [runs[i] for i in live]
        indices = [runs[i].step_index(drawn[i][0]) for i in live]  # type: ignore[index]
        zs = encode_fused(members, indices)
        total: Tensor | None = None
        stepped = []
        for i, z in zip(live, zs, strict=True):
            index, keep = drawn[i]  # type: ignore[misc]
            loss, estimate = runs[i].step_loss(z, index, keep)
            if not torch.isfinite(loss):
                outcome[i] = Diverged(runs[i].divergence(loss.item(), epoch, number))
                continue
            total = loss if total is None else total + loss
            stepped.append(i)
            sums[i][0] += loss.item()
            sums[i][1] += estimate
            sums[i][2] += 1
        if total is None:
            continue
        for i in stepped:
            runs[i].optimizer.zero_grad(set_to_none=True)
        total.backward()  # the runs share no parameter: each gets its own loss's gradients
        for i in stepped:
            runs[i].update()
    return [
        done if done is not None else {"loss": s[0] / s[2], "mi_estimate": s[1] / s[2]}
        for done, s in zip(outcome, sums, strict=True)
    ]


def fit_fused(
    cfgs: Sequence[RunConfig],
    reports: Sequence[Report | None] | None = None,
    checkpoint_dirs: Sequence[str | None] | None = None,
    video: Video | None = None,
    after_epoch: Callable[[int, dict[int, dict[str, Any]]], None] | None = None,
) -> list[RunResult]:
    """`train.fit` of every config in `cfgs`, trained as one fused model; -> their results,
    in order, each what `fit` gives (within float rounding: see the module doc).

    All configs must have one `fuse_key` (a ValueError names the first that differs).
    reports, checkpoint_dirs: per run, as `fit` takes them (a run resumes from its own
    checkpoint; runs a crash left an epoch apart catch up before training together).
    after_epoch: called as ``after_epoch(epoch, rows)`` once the runs that trained `epoch`
    together have each reported it (rows: run number -> its row; a sweep's one Ray report).
    ``epoch_seconds`` is the fused epoch's time; ``seconds`` the whole fused call's.
    """
    started = time.perf_counter()
    if not cfgs:
        return []
    keys = [fuse_key(cfg) for cfg in cfgs]
    if keys[0] is None:
        raise ValueError(f"encoder.kind: {cfgs[0].encoder.kind} does not fuse; only com does")
    for number, key in enumerate(keys):
        if key != keys[0]:
            raise ValueError(
                f"run {number} cannot be fused with run 0: data, encoder, train.mode, "
                "batch_size, epochs, objective.n_negatives, probe and device must be equal"
            )
    n = len(cfgs)
    reports = list(reports) if reports is not None else [None] * n
    dirs = list(checkpoint_dirs) if checkpoint_dirs is not None else [None] * n
    frames, positions = video_on_device(cfgs[0], video)
    runs = [Run(c, frames, positions) for c in cfgs]
    first: dict[int, dict[str, Any]] = {}
    for number, (run, report, directory) in enumerate(zip(runs, reports, dirs, strict=True)):
        if (row := run.start(report, directory)) is not None:
            first[number] = row
    if first and after_epoch is not None:
        after_epoch(0, first)
    status: list[tuple[str, str] | None] = [None] * n
    last = runs[0].epochs
    for epoch in range(min(len(r.history) for r in runs), last + 1):
        due = [i for i in range(n) if status[i] is None and len(runs[i].history) == epoch]
        if not due:
            continue
        tic = time.perf_counter()
        ended: dict[int, dict[str, Any]] = {}
        for i, outcome in zip(due, fused_epoch([runs[i] for i in due], epoch), strict=True):
            if isinstance(outcome, Diverged):
                log.info("run %d diverged: %s", i, outcome)  # as `train.fit`: its row says so
                status[i] = ("diverged", str(outcome))
                continue
            ended[i] = {"epoch": epoch, **outcome}
            runs[i].end_epoch(ended[i], tic, reports[i], dirs[i])
        if ended and after_epoch is not None:
            after_epoch(epoch, ended)
    seconds = time.perf_counter() - started
    return [
        run.result(*(done or ("ok", "")), seconds) for run, done in zip(runs, status, strict=True)
    ]
