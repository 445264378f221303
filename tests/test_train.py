from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ssvae_core import config, loader
from ssvae_core.balls import Video
from ssvae_core.batches import ssl_batches
from ssvae_core.checkpoint import CHECKPOINT_FILE
from ssvae_core.couplings import COUPLINGS
from ssvae_core.frames import encode_all, frames_to_tensor
from ssvae_core.metrics import representation_step
from ssvae_core.objectives import ESTIMATORS
from ssvae_core.train import PROBE_PASS, Run, fit, relative_cost


def with_(cfg: config.RunConfig, **sections: dict[str, Any]) -> config.RunConfig:
    return loader.from_dict(sections, cfg)


def test_fit_reports_every_epoch_and_returns_the_public_fields(
    tiny_cfg: config.RunConfig, tiny_video: Video
) -> None:
    reports: list[dict[str, Any]] = []
    result = fit(tiny_cfg, report=lambda m, ckpt: reports.append(m), video=tiny_video)
    assert [r["epoch"] for r in reports] == [0, 1, 2]  # the initialisation is epoch 0
    assert [h["epoch"] for h in result.history] == [0, 1, 2]
    assert result.status == "ok" and result.message == ""
    assert math.isfinite(result.probe_error_px) and math.isfinite(result.mi_estimate)
    assert result.probe_error_px == reports[-1]["probe_error_px"]
    assert result.lengthscale is not None and result.lengthscale > 0
    assert {"loss", "mi_estimate", "lengthscale", "probe_error_px", "epoch_seconds"} <= set(
        reports[-1]
    )


def test_the_probe_is_reported_only_at_the_epochs_it_ran(
    tiny_cfg: config.RunConfig, tiny_video: Video
) -> None:
    cfg = with_(tiny_cfg, train={"epochs": 5}, probe={"every_epochs": 2})
    result = fit(cfg, video=tiny_video)
    probed = [row["epoch"] for row in result.history if "probe_error_px" in row]
    assert probed == [0, 2, 4, 5]  # every 2 epochs, and the last; nothing carried between
    assert result.history[-1]["probe_error_px"] == result.probe_error_px


def test_fit_is_deterministic_on_cpu(tiny_cfg: config.RunConfig, tiny_video: Video) -> None:
    a = fit(tiny_cfg, video=tiny_video)
    b = fit(tiny_cfg, video=tiny_video)
    assert a.history[-1]["loss"] == b.history[-1]["loss"]
    assert a.probe_error_px == b.probe_error_px


def test_resume_gives_the_same_numbers_as_an_uninterrupted_run(
    tiny_cfg: config.RunConfig, tiny_video: Video, tmp_path: Path
) -> None:
    cfg = with_(
        tiny_cfg,
        train={"epochs": 4},
        encoder={"stochastic": True},
        objective={"n_negatives": 3},
        probe={"every_epochs": 3},
    )
    straight = fit(cfg, video=tiny_video)
    first = fit(with_(cfg, train={"epochs": 2}), checkpoint_dir=str(tmp_path), video=tiny_video)
    assert (tmp_path / CHECKPOINT_FILE).exists() and len(first.history) == 3
    seen: list[int] = []
    resumed = fit(
        cfg,
        report=lambda m, c: seen.append(m["epoch"]),
        checkpoint_dir=str(tmp_path),
        video=tiny_video,
    )
    assert seen == [3, 4]  # only the unfinished epochs ran (epoch 0 is not reported again)

    def trained(history: list[dict[str, float]]) -> list[tuple[float, ...]]:
        return [(r["loss"], r["mi_estimate"], r["lengthscale"]) for r in history[1:]]

    # the short run probed at its last epoch (2); the straight one did not (every 3 epochs)
    assert trained(resumed.history) == trained(straight.history)
    for a, b in zip(resumed.history[3:], straight.history[3:], strict=True):
        assert {k: v for k, v in a.items() if k != "epoch_seconds"} == {
            k: v for k, v in b.items() if k != "epoch_seconds"
        }
    assert resumed.probe_error_px == straight.probe_error_px
    assert resumed.mi_estimate == straight.mi_estimate


def test_nan_loss_ends_the_run_as_diverged(tiny_cfg: config.RunConfig, tiny_video: Video) -> None:
    cfg = with_(tiny_cfg, train={"lr": 10.0}, coupling={"kind": "gaussian"})
    result = fit(cfg, video=tiny_video)
    assert result.status == "diverged"
    assert "try a smaller train.lr" in result.message and "epoch 1" in result.message
    assert math.isnan(result.probe_error_px)


def test_a_finite_loss_with_a_broken_representation_ends_as_diverged(
    tiny_cfg: config.RunConfig, tiny_video: Video, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loss stayed finite, but the encoder's output did not (a last step that broke the
    weights): the result says so, with no probe error or ELBO computed from NaN."""

    def broken(encoder: torch.nn.Module, frames: torch.Tensor) -> np.ndarray:
        return np.full_like(encode_all(encoder, frames), np.nan)

    monkeypatch.setattr("ssvae_core.train.encode_all", broken)
    result = fit(with_(tiny_cfg, coupling={"kind": "gaussian"}), video=tiny_video)
    assert result.status == "diverged"
    assert result.message == "the representation became NaN/inf; try a smaller train.lr"
    assert math.isnan(result.probe_error_px) and result.elbo == {}


def test_scores_that_overflow_before_any_update_do_not_blame_the_lr(
    tiny_cfg: config.RunConfig, tiny_video: Video
) -> None:
    cfg = with_(tiny_cfg, coupling={"kind": "cosine", "temperature": 1e-40})
    result = fit(cfg, video=tiny_video)
    assert result.status == "diverged"
    assert "step 1, before any update, so not train.lr" in result.message
    assert "temperature=1e-40" in result.message


def test_untrained_mode_only_probes(tiny_cfg: config.RunConfig, tiny_video: Video) -> None:
    reports: list[dict[str, Any]] = []
    result = fit(
        with_(tiny_cfg, train={"mode": "untrained"}),
        report=lambda m, c: reports.append(m),
        video=tiny_video,
    )
    assert len(result.history) == 1 and [r["epoch"] for r in reports] == [0]
    assert result.coupling is None and math.isfinite(result.probe_error_px)


def test_supervised_mode_learns_the_centres(tiny_cfg: config.RunConfig, tiny_video: Video) -> None:
    cfg = with_(
        tiny_cfg,
        train={"mode": "supervised", "epochs": 12, "optimizer": "adam", "lr": 0.03},
        probe={"every_epochs": 12},
    )
    result = fit(cfg, video=tiny_video)
    assert result.probe_error_px < 0.5 * result.history[0]["probe_error_px"]
    losses = [row["loss"] for row in result.history[1:]]
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("coupling", sorted(COUPLINGS))
@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_every_coupling_with_every_estimator_trains(
    coupling: str, estimator: str, tiny_cfg: config.RunConfig, tiny_video: Video
) -> None:
    cfg = with_(
        tiny_cfg,
        train={"epochs": 1},
        coupling={"kind": coupling},
        objective={"estimator": estimator},
    )
    result = fit(cfg, video=tiny_video)
    assert result.status == "ok"
    assert math.isfinite(result.history[-1]["loss"]) and math.isfinite(result.mi_estimate)


@pytest.mark.parametrize("n_negatives", [1, 4, 9, 20])
def test_n_negatives_sets_the_score_matrix(
    n_negatives: int, tiny_cfg: config.RunConfig, tiny_video: Video
) -> None:
    cfg = with_(tiny_cfg, objective={"n_negatives": n_negatives, "estimator": "infonce"})
    frames = torch.from_numpy(tiny_video.frames).permute(0, 3, 1, 2).contiguous()
    run = Run(cfg, frames, torch.from_numpy(tiny_video.positions))
    seen: dict[str, torch.Tensor] = {}
    assert run.coupling is not None
    run.coupling.register_forward_hook(lambda m, args, out: seen.update(z_prime=args[1]))
    encoded: list[int] = []
    run.encoder.register_forward_hook(lambda m, args, out: encoded.append(len(args[0])))
    index, keep = next(ssl_batches(len(frames), 10, n_negatives, torch.Generator().manual_seed(0)))
    _loss, estimate = run.step(index, keep)
    extra = max(0, n_negatives - 9)
    assert seen["z_prime"].shape[0] == 10 + extra
    assert encoded[0] <= 20 + extra
    # the InfoNCE bound is at most log(N + 1) whatever the coupling
    assert estimate <= np.log(n_negatives + 1) + 1e-5


def test_each_frame_is_encoded_once_per_step(tiny_cfg: config.RunConfig, tiny_video: Video) -> None:
    frames = torch.from_numpy(tiny_video.frames).permute(0, 3, 1, 2).contiguous()
    run = Run(tiny_cfg, frames, torch.from_numpy(tiny_video.positions))
    encoded: list[int] = []
    run.encoder.register_forward_hook(lambda m, args, out: encoded.append(len(args[0])))
    base = torch.arange(10)  # a chain: frames 0..10, each target is the next base
    run.step(torch.cat([base, base + 1]), None)
    assert encoded == [11]


@pytest.mark.parametrize(
    ("mode", "n_negatives", "every"),
    [
        ("ssl", None, 1),
        ("ssl", 25, 2),
        ("ssl", 4, 3),
        ("supervised", None, 2),
        ("untrained", None, 1),
    ],
)
def test_relative_cost_counts_the_frames_a_run_encodes(
    mode: str, n_negatives: int | None, every: int, tiny_cfg: config.RunConfig, tiny_video: Video
) -> None:
    cfg = with_(
        tiny_cfg,
        train={"mode": mode, "epochs": 3},
        objective={"n_negatives": n_negatives},
        probe={"every_epochs": every},
    )
    frames = torch.from_numpy(tiny_video.frames).permute(0, 3, 1, 2).contiguous()
    run = Run(cfg, frames, torch.from_numpy(tiny_video.positions))
    per_epoch = sum(len(run.step_index(index)) for index, _ in run.batches())  # the sampler's
    history = fit(cfg, video=tiny_video).history
    probes = sum("probe_error_px" in row for row in history)  # the probes that ran
    trained = len(history) - 1
    expected = trained * per_epoch + probes * len(frames) * PROBE_PASS
    assert relative_cost(cfg) == pytest.approx(expected * cfg.data.size**2)


def test_relative_cost_orders_the_controls_below_ssl(tiny_cfg: config.RunConfig) -> None:
    costs = {m: relative_cost(with_(tiny_cfg, train={"mode": m})) for m in config.TRAIN_MODES}
    assert costs["untrained"] < costs["supervised"] < costs["ssl"]
    bigger = with_(tiny_cfg, data={"size": 64, "diameter": 12})
    assert relative_cost(bigger) == pytest.approx(4 * costs["ssl"])


# ---------------------------------------------------------------- ELBO at the end (eqs. 18-22)


def test_elbo_of_a_deterministic_encoder_is_infonce_on_shuffled_pairs(
    tiny_cfg: config.RunConfig, tiny_video: Video
) -> None:
    """Reference: InfoNCE (eq. 3) of the final z over many random batches of pairs."""
    result = fit(with_(tiny_cfg, train={"epochs": 4}), video=tiny_video)
    assert result.sigma is None and result.coupling is not None and result.encoder is not None
    z = torch.from_numpy(encode_all(result.encoder, frames_to_tensor(tiny_video, "cpu")))
    batch, generator, estimates = tiny_cfg.train.batch_size, torch.Generator().manual_seed(9), []
    with torch.no_grad():
        for _ in range(50):
            order = torch.randperm(len(z) - 1, generator=generator)
            for start in range(0, len(order) - batch + 1, batch):
                base = order[start : start + batch]
                estimates.append(
                    float(ESTIMATORS["infonce"](result.coupling(z[base], z[base + 1])))
                )
    assert result.elbo["elbo"] == pytest.approx(np.mean(estimates), abs=0.1)
    assert result.elbo["elbo_gap"] == 0.0  # eq. 22: one draw, log mean exp r = r exactly
    assert result.elbo["elbo"] == result.elbo["elbo_at_mean"]


def test_the_jensen_gap_grows_with_sigma_and_vanishes_with_it(
    tiny_cfg: config.RunConfig, tiny_video: Video
) -> None:
    """Same initial encoder and coupling (epochs 0), so the same means g(x) for every sigma."""
    results = {
        sigma: fit(
            with_(tiny_cfg, train={"epochs": 0}, encoder={"stochastic": True, "sigma": sigma}),
            video=tiny_video,
        ).elbo
        for sigma in (1e-6, 0.05, 0.3)
    }
    means = {r["elbo_at_mean"] for r in results.values()}
    assert len(means) == 1  # the draws change, the means do not
    tiny, mid, wide = results[1e-6], results[0.05], results[0.3]
    assert tiny["elbo_gap"] < 1e-4 and tiny["elbo"] == pytest.approx(tiny["elbo_at_mean"], abs=1e-4)
    assert 0 < mid["elbo_gap"] < wide["elbo_gap"]
    assert wide["elbo"] < mid["elbo"]  # noisier codes: a lower bound


def test_a_stochastic_encoder_reports_its_learned_sigma(
    tiny_cfg: config.RunConfig, tiny_video: Video
) -> None:
    cfg = with_(tiny_cfg, encoder={"stochastic": True, "sigma": 0.1, "learn_sigma": True})
    result = fit(cfg, video=tiny_video)
    assert result.sigma is not None and result.sigma != 0.1  # learned
    assert result.history[-1]["sigma"] == result.sigma
    metrics = result.metrics()
    assert metrics["sigma"] == result.sigma and metrics["elbo"] == result.elbo["elbo"]
    assert fit(cfg, video=tiny_video).elbo == result.elbo  # its own generator: reproducible


def test_controls_have_no_elbo(tiny_cfg: config.RunConfig, tiny_video: Video) -> None:
    result = fit(with_(tiny_cfg, train={"mode": "untrained"}), video=tiny_video)
    assert result.elbo == {} and math.isnan(result.metrics()["elbo_gap"])


def test_every_run_reports_its_representation_step(
    tiny_cfg: config.RunConfig, tiny_video: Video
) -> None:
    result = fit(tiny_cfg, video=tiny_video)
    assert result.metrics()["z_step"] == result.z_step > 0
    z = encode_all(result.encoder, frames_to_tensor(tiny_video, "cpu"))  # type: ignore[arg-type]
    assert result.z_step == representation_step(z)
