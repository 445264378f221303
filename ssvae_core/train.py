"""`fit(cfg)`: train one SSVAE (or a control) on the moving-balls video and probe it.

Self-supervised mode (section 4 of the paper): each step draws B consecutive pairs (base frame
t, target frame t + 1); the targets of the other pairs, plus any extra random frames, are the
negatives. The score matrix log_f [B, B + K] = coupling(z_base, z_candidates) goes to the
estimator of eq. 3 (or another from `objectives.ESTIMATORS`); with the Gaussian coupling of
eq. 36 this is the ELBO of an SSVAE whose prior P(z'|z) is N(z, L²) (eqs. 30-35). Every frame
is encoded once per step even when it serves as base, target and negative.

Controls: ``supervised`` trains the same encoder to output the true centres (map k -> ball k)
(Fig. 1C); ``untrained`` probes the encoder at its initialisation.

Knows nothing about Ray or MLflow: it calls ``report(metrics, checkpoint_dir)`` once per epoch.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ssvae_core import checkpoint
from ssvae_core.balls import Video, simulate
from ssvae_core.batches import frames_per_step, ssl_batches
from ssvae_core.config import RunConfig
from ssvae_core.conv3x3 import memory_format
from ssvae_core.couplings import build_coupling
from ssvae_core.elbo import evaluate_elbo
from ssvae_core.encoder import build_encoder
from ssvae_core.errors import shown
from ssvae_core.frames import as_float, encode_all, frames_to_tensor, resolve_device
from ssvae_core.metrics import (
    ELBO_KEYS,
    learned_lengthscale,
    learned_sigma,
    representation_step,
)
from ssvae_core.objectives import ESTIMATORS, LOSSES, mask_scores
from ssvae_core.optim import SCHEDULES, build_optimizer
from ssvae_core.probe import ProbeResult, fit_probe

log = logging.getLogger(__name__)

Report = Callable[[dict[str, Any], "str | None"], None]


@dataclass
class RunResult:
    """What a run produced. The modules and the probe are kept for figures, not serialised."""

    probe_error_px: float
    probe_r2: float
    mi_estimate: float
    lengthscale: float | None
    status: str  # "ok" | "diverged"
    message: str
    seconds: float
    history: list[dict[str, float]]
    config: RunConfig
    elbo: dict[str, float] = field(default_factory=dict)  # `elbo.evaluate_elbo`, ssl runs
    z_step: float = math.nan  # `representation_step` of the final mean representations
    sigma: float | None = None  # a stochastic encoder's final sigma
    encoder: nn.Module | None = field(default=None, repr=False)
    coupling: nn.Module | None = field(default=None, repr=False)
    probe: ProbeResult | None = field(default=None, repr=False)

    def metrics(self) -> dict[str, Any]:
        """The JSON-ready summary (what ``ssvae train --json`` prints)."""
        return {
            "probe_error_px": self.probe_error_px,
            "probe_r2": self.probe_r2,
            "mi_estimate": self.mi_estimate,
            "lengthscale": self.lengthscale,
            "sigma": self.sigma,
            "z_step": self.z_step,
            **dict.fromkeys(ELBO_KEYS, math.nan),
            **self.elbo,
            "status": self.status,
            "message": self.message,
            "seconds": self.seconds,
            "epochs": len(self.history) - 1,
        }


class Run:
    """The mutable state of one run: modules, optimiser, generator, history."""

    def __init__(self, cfg: RunConfig, frames: Tensor, positions: Tensor) -> None:
        self.cfg, self.frames, self.positions = cfg, frames, positions
        device, (channels, height, width) = frames.device, frames.shape[1:]
        self.generator = torch.Generator().manual_seed(cfg.train.seed)
        with torch.random.fork_rng(devices=[]):  # initialisation from the run's seed only
            torch.manual_seed(cfg.train.seed)
            self.encoder = build_encoder(
                cfg.encoder.kind,
                (channels, height, width),
                out_dim=2 * positions.shape[1],
                stochastic=cfg.encoder.stochastic,
                **cfg.encoder.params(),
            ).to(device)
            self.encoder.to(memory_format=memory_format(device))  # type: ignore[call-overload]
            dim = int(self.encoder.out_dim)  # type: ignore[arg-type]
            self.coupling: nn.Module | None = None
            if cfg.train.mode == "ssl":
                self.coupling = build_coupling(cfg.coupling.kind, dim, **cfg.coupling.params())
                self.coupling.to(device)
        modules = [m for m in (self.encoder, self.coupling) if m is not None]
        params = [p for m in modules for p in m.parameters()]
        train = cfg.train
        self.optimizer = build_optimizer(train.optimizer, params, train.lr, **train.settings())
        steps_per_epoch = (len(frames) - 1) // cfg.train.batch_size
        self.schedule = SCHEDULES[cfg.train.lr_schedule](
            self.optimizer, cfg.train.epochs * steps_per_epoch
        )
        self.history: list[dict[str, float]] = []
        self.probe: ProbeResult | None = None
        self.z: np.ndarray | None = None  # mean representations of every frame, [T, D]

    # -- one step -------------------------------------------------------------------------
    def _encode(self, index: Tensor) -> Tensor:
        """Encode frames `index` [n] (repeats allowed) with one forward pass. -> z [n, D]."""
        unique, inverse = torch.unique(index, return_inverse=True)
        frames = as_float(self.frames[unique.to(self.frames.device)])
        kwargs = {"generator": self.generator} if self.cfg.encoder.stochastic else {}
        return self.encoder(frames, **kwargs)[inverse.to(self.frames.device)]

    def step_index(self, index: Tensor) -> Tensor:
        """The frames a step encodes, of a `ssl_batches` index [2B + K]: all of them for SSL,
        the B base frames for ``supervised`` (its targets are the true centres)."""
        return index if self.cfg.train.mode == "ssl" else index[: self.cfg.train.batch_size]

    def step(self, index: Tensor, keep: Tensor | None) -> tuple[Tensor, float]:
        """Loss and MI estimate (NaN when supervised) of one `ssl_batches` batch."""
        return self.step_loss(self._encode(self.step_index(index)), index, keep)

    def step_loss(self, z: Tensor, index: Tensor, keep: Tensor | None) -> tuple[Tensor, float]:
        """The loss of one step from z [len(step_index(index)), D], the step's frames encoded
        (`fused` encodes many runs' frames at once and calls this per run)."""
        if self.cfg.train.mode == "ssl":
            return self._ssl_loss(z, keep)
        return self._supervised_loss(z, index)

    def _ssl_loss(self, z: Tensor, keep: Tensor | None) -> tuple[Tensor, float]:
        """Eq. 3 (or `objectives.ESTIMATORS`) on log_f [B, B + K] = coupling(z_base, z_cand)."""
        assert self.coupling is not None
        batch = self.cfg.train.batch_size
        log_f = self.coupling(z[:batch], z[batch:])  # [B, B + K]
        if keep is not None:
            log_f = mask_scores(log_f, keep.to(log_f.device))
        estimator = self.cfg.objective.estimator
        with torch.no_grad():
            estimate = float(ESTIMATORS[estimator](log_f))
        return LOSSES[estimator](log_f), estimate

    def divergence(self, loss: float, epoch: int, step: int) -> str:
        """Why the loss is not finite: before any update the learning rate cannot be the
        cause, so the message names the settings that shape the scores instead."""
        where = f"loss became {loss} at epoch {epoch}, step {step}"
        if epoch == 1 and step == 1:
            settings = {**self.cfg.coupling.params(), **self.cfg.encoder.params()}
            named = ", ".join(f"{k}={v}" for k, v in settings.items()) or "the defaults"
            return (
                f"{where}, before any update, so not train.lr: the scores themselves overflow "
                f"(coupling.kind={self.cfg.coupling.kind}, {named}); try other values there"
            )
        return f"{where} (train.lr={self.cfg.train.lr}); try a smaller train.lr"

    def _supervised_loss(self, z: Tensor, index: Tensor) -> tuple[Tensor, float]:
        """MSE from z [B, D] (the base frames of `index`) to their true centres, in encoder
        coordinates [-1, 1]; the targets and negatives are unused.

        The centre-of-mass readout already is a position, so no head is needed: map k is
        trained to sit on ball k (the balls' colours tell them apart).
        """
        base = index[: self.cfg.train.batch_size]
        size = self.cfg.data.size
        target = (self.positions[base.to(self.positions.device)] * (2.0 / size) - 1.0).flatten(1)
        return nn.functional.mse_loss(z, target), float("nan")

    # -- epochs ---------------------------------------------------------------------------
    def batches(self) -> Iterator[tuple[Tensor, Tensor | None]]:
        """One epoch of `ssl_batches` from the run's generator."""
        ssl = self.cfg.train.mode == "ssl"
        negatives = self.cfg.objective.n_negatives if ssl else None
        return ssl_batches(len(self.frames), self.cfg.train.batch_size, negatives, self.generator)

    def update(self) -> None:
        """One optimiser and schedule step on the gradients in place."""
        self.optimizer.step()
        self.schedule.step()

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the (T - 1) consecutive pairs in random batches."""
        losses, estimates = [], []
        self.encoder.train()
        for number, (index, keep) in enumerate(self.batches(), start=1):
            loss, estimate = self.step(index, keep)
            if not torch.isfinite(loss):
                raise Diverged(self.divergence(loss.item(), epoch, number))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.update()
            losses.append(loss.item())
            estimates.append(estimate)
        return {"loss": float(np.mean(losses)), "mi_estimate": float(np.mean(estimates))}

    def run_probe(self) -> dict[str, float]:
        self.z = z = encode_all(self.encoder, self.frames)
        self.probe = fit_probe(
            z, self.positions.cpu().numpy(), self.cfg.probe.train_fraction, self.cfg.data.seed
        )
        return {"probe_error_px": self.probe.probe_error_px, "probe_r2": self.probe.r2}

    # -- the run ---------------------------------------------------------------------------
    @property
    def epochs(self) -> int:
        """Epochs this run trains (none for ``untrained``)."""
        return self.cfg.epochs_trained

    def train(self, report: Report | None, checkpoint_dir: str | None) -> tuple[str, str]:
        """Every epoch left (all but those a checkpoint holds); -> (status, message)."""
        for epoch in range(len(self.history), self.epochs + 1):
            tic = time.perf_counter()
            try:
                row: dict[str, float] = {"epoch": epoch, **self.train_epoch(epoch)}
            except Diverged as err:  # a result, said by whoever reads it (the CLI, a sweep's
                log.info("run diverged: %s", err)  # tables): a warning here said it twice
                return "diverged", str(err)
            self.end_epoch(row, tic, report, checkpoint_dir)
        return "ok", ""

    def end_epoch(
        self, row: dict[str, float], tic: float, report: Report | None, checkpoint_dir: str | None
    ) -> None:
        """Complete an epoch's `row` (L, sigma, the probe where due, its seconds since `tic`),
        append it to the history, checkpoint, report."""
        epoch = int(row["epoch"])
        if (ls := learned_lengthscale(self.coupling)) is not None:
            row["lengthscale"] = ls
        if (sigma := learned_sigma(self.encoder)) is not None:
            row["sigma"] = sigma
        if epoch % self.cfg.probe.every_epochs == 0 or epoch == self.epochs:
            row |= self.run_probe()  # only where measured: no value carried between
        row["epoch_seconds"] = time.perf_counter() - tic
        self.history.append(row)
        if checkpoint_dir is not None:
            self.save(checkpoint_dir)
        if report is not None:
            report(dict(row), checkpoint_dir)

    def result(self, status: str, message: str, seconds: float) -> RunResult:
        """The run's `RunResult`: its final probe and, for an SSL run, its ELBO (eq. 20)."""
        cfg = self.cfg
        if status == "ok" and self.probe is None:  # resumed from the final checkpoint
            self.run_probe()
        if status == "ok" and self.probe and not math.isfinite(self.probe.probe_error_px):
            status = "diverged"  # a finite loss, then a last step that broke the weights
            message = "the representation became NaN/inf; try a smaller train.lr"
        ok = status == "ok" and self.probe is not None and self.z is not None
        elbo = {}
        if ok and cfg.train.mode == "ssl":
            assert self.coupling is not None and self.z is not None
            elbo = evaluate_elbo(
                self.coupling,
                torch.from_numpy(self.z).to(self.frames.device),
                getattr(self.encoder, "sigma", None),
                batch=cfg.train.batch_size,
                n_negatives=cfg.objective.n_negatives,
                seed=cfg.train.seed,
            )
        return RunResult(
            probe_error_px=self.probe.probe_error_px if ok and self.probe else math.nan,
            probe_r2=self.probe.r2 if ok and self.probe else math.nan,
            mi_estimate=float(self.history[-1].get("mi_estimate", math.nan)),
            lengthscale=learned_lengthscale(self.coupling),
            status=status,
            message=message,
            seconds=seconds,
            history=self.history,
            config=cfg,
            elbo=elbo,
            z_step=representation_step(self.z) if ok and self.z is not None else math.nan,
            sigma=learned_sigma(self.encoder),
            encoder=self.encoder,
            coupling=self.coupling,
            probe=self.probe,
        )

    # -- checkpoints ----------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        named = {"encoder": self.encoder, "coupling": self.coupling}
        return {k: m for k, m in named.items() if m is not None}

    def save(self, directory: str) -> None:
        state: dict[str, Any] = {k: m.state_dict() for k, m in self.modules().items()}
        state |= {
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "generator": self.generator.get_state(),
            "history": self.history,
        }
        checkpoint.save(directory, state, self.cfg)

    def start(self, report: Report | None, checkpoint_dir: str | None) -> dict[str, Any] | None:
        """Resume from `checkpoint_dir` if it holds a checkpoint; else epoch 0 (the encoder at
        its initialisation, probed), saved and reported as any epoch and returned."""
        if checkpoint_dir is not None:
            os.makedirs(checkpoint_dir, exist_ok=True)
            if self.load(checkpoint_dir):
                log.info("resumed from %s after epoch %d", checkpoint_dir, len(self.history) - 1)
        if self.history:
            return None
        row = {"epoch": 0, **self.run_probe(), "epoch_seconds": 0.0}
        self.history.append(row)
        if checkpoint_dir is not None:
            self.save(checkpoint_dir)
        if report is not None:
            report(dict(row), checkpoint_dir)
        return row

    def load(self, directory: str) -> bool:
        """Resume from the checkpoint in `directory`, if any (`checkpoint.load` checks it)."""
        state = checkpoint.load(directory, self.cfg, self.frames.device)
        if state is None:
            return False
        with checkpoint.restoring(directory):
            for key, module in self.modules().items():
                module.load_state_dict(state[key])
            self.optimizer.load_state_dict(state["optimizer"])
            self.schedule.load_state_dict(state["schedule"])
            self.generator.set_state(state["generator"].cpu())  # map_location moved it
            history = state["history"]
            if not _is_history(history):
                raise TypeError(f"history: expected a list of epochs, got {shown(history)}")
            self.history = history
        done = len(history) - 1
        if done > self.epochs:  # it would return the longer run, labelled with fewer epochs
            raise checkpoint.CheckpointError(
                f"train.epochs: {self.epochs}, but the checkpoint in {directory} is after epoch "
                f"{done}; ask for {done} or more, or use another checkpoint folder"
            )
        return True


PROBE_PASS = 1 / 3  # a frame's forward pass alone (the probe), against a training pass


def relative_cost(cfg: RunConfig) -> float:
    """What a run will cost, before it runs: frame passes times pixels per frame.

    A training pass (forward and backward) counts 1: each of the ((T - 1) // B) steps of an
    epoch passes `Run.step_index`'s frames to the encoder (`batches.frames_per_step`);
    ``untrained`` trains no epoch. Each probe (epoch 0, every ``probe.every_epochs`` and the
    last) encodes all T frames forward, `PROBE_PASS` each. A sweep starts its costliest trials
    first with it (`sweep.space.longest_first`).
    """
    t, batch = cfg.data.n_frames, cfg.train.batch_size
    epochs = cfg.epochs_trained
    per_step = frames_per_step(cfg.train.mode, batch, cfg.objective.n_negatives)
    every = cfg.probe.every_epochs
    probes = 1 + epochs // every + (epochs % every > 0)
    passes = epochs * ((t - 1) // batch) * per_step + probes * t * PROBE_PASS
    return passes * cfg.data.size**2


def video_on_device(cfg: RunConfig, video: Video | None) -> tuple[Tensor, Tensor]:
    """(frames uint8 [T, 3, H, W], positions [T, K, 2]) on ``cfg.train.device``, of `video`
    or, if None, of the video `cfg.data` simulates."""
    if video is None:
        video = simulate(cfg.data.balls, cfg.data.seed)
    device = resolve_device(cfg.train.device)
    return frames_to_tensor(video, device), torch.from_numpy(video.positions).to(device)


class Diverged(RuntimeError):
    """A loss that is not finite; the message says where and what to change."""


def _is_history(value: Any) -> bool:
    """A list of one or more epochs, each a dict of metric name -> number (`Run.end_epoch`)."""
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(
            isinstance(row, dict)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row.values())
            for row in value
        )
    )


def fit(
    cfg: RunConfig,
    report: Report | None = None,
    checkpoint_dir: str | None = None,
    video: Video | None = None,
) -> RunResult:
    """Train (per ``cfg.train.mode``), probe every ``probe.every_epochs`` and at the end.

    report: called as ``report(metrics, checkpoint_dir)`` for epoch 0 (the initialisation) and
    after every epoch, once the checkpoint (if any) is written; a row holds the probe's
    metrics only at the epochs the probe ran (``probe.every_epochs`` and the last).
    checkpoint_dir: resume from the checkpoint there, if any,
    and write one after every epoch. video: a pre-simulated video (a sweep shares one);
    by default it is simulated from ``cfg.data``.
    """
    started = time.perf_counter()
    run = Run(cfg, *video_on_device(cfg, video))
    run.start(report, checkpoint_dir)
    status, message = run.train(report, checkpoint_dir)
    return run.result(status, message, time.perf_counter() - started)
