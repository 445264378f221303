"""Fused runs (`ssvae_core.fused`): K runs as one model compute what each computes alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from ssvae_core import config, fused, loader
from ssvae_core.balls import Video
from ssvae_core.batchnorm import library
from ssvae_core.fused import fit_fused, fuse_key, masked_batch_norm
from ssvae_core.train import RunResult, fit


def with_(cfg: config.RunConfig, **sections: dict[str, Any]) -> config.RunConfig:
    return loader.from_dict(sections, cfg)


def seeds(cfg: config.RunConfig, n: int, **train: Any) -> list[config.RunConfig]:
    return [with_(cfg, train={"seed": seed, **train}) for seed in range(n)]


def assert_same_run(alone: RunResult, fused: RunResult, rel: float) -> None:
    """The metrics a sweep tables, within `rel` of the run trained alone."""
    assert fused.status == alone.status == "ok"
    assert fused.probe_error_px == pytest.approx(alone.probe_error_px, rel=rel)
    assert fused.mi_estimate == pytest.approx(alone.mi_estimate, rel=rel, abs=1e-4, nan_ok=True)
    assert [h["epoch"] for h in fused.history] == [h["epoch"] for h in alone.history]
    assert fused.elbo.keys() == alone.elbo.keys()
    for key in alone.elbo:  # elbo, elbo_gap, elbo_at_mean
        assert fused.elbo[key] == pytest.approx(alone.elbo[key], rel=rel, abs=1e-4)
    if alone.lengthscale is not None:
        assert fused.lengthscale == pytest.approx(alone.lengthscale, rel=rel)


def test_masked_batch_norm_is_each_runs_own_batch_norm() -> None:
    torch.manual_seed(0)
    counts, channels = [5, 3, 7], 4
    h = torch.randn(7, 3 * channels, 6, 6).contiguous(memory_format=torch.channels_last)
    norms = [nn.BatchNorm2d(channels) for _ in counts]
    alone = [nn.BatchNorm2d(channels) for _ in counts]
    for a, b in zip(norms, alone, strict=True):
        with torch.no_grad():
            a.weight.uniform_(0.5, 2.0)
            a.bias.uniform_(-1.0, 1.0)
        b.load_state_dict(a.state_dict())
    mask = torch.arange(7)[:, None] < torch.tensor(counts)[None, :]
    out = masked_batch_norm(h, mask, norms)
    for k, (n, bn) in enumerate(zip(counts, alone, strict=True)):
        block = slice(k * channels, (k + 1) * channels)
        expected = bn(h[:n, block])  # run k alone: its own rows only
        assert torch.allclose(out[:n, block], expected, atol=1e-5)
        assert torch.allclose(norms[k].running_mean, bn.running_mean, atol=1e-6)
        assert torch.allclose(norms[k].running_var, bn.running_var, atol=1e-5)
        assert int(norms[k].num_batches_tracked) == 1
    # no padding: one native kernel over every run's channels, the same per run
    full = [nn.BatchNorm2d(channels) for _ in counts]
    out_full = masked_batch_norm(h, torch.ones(7, 3, dtype=torch.bool), full)
    for k in range(3):
        block = slice(k * channels, (k + 1) * channels)
        single = nn.BatchNorm2d(channels)
        assert torch.allclose(out_full[:, block], single(h[:, block]), atol=1e-5)
        assert torch.allclose(full[k].running_var, single.running_var, atol=1e-6)
        assert int(full[k].num_batches_tracked) == 1
    # the padding does not move the statistics: change it and run 1's output is unchanged
    h2 = h.clone()
    h2[3:, channels : 2 * channels] = 1e3
    out2 = masked_batch_norm(h2, mask, [nn.BatchNorm2d(channels) for _ in counts])
    fresh = masked_batch_norm(h, mask, [nn.BatchNorm2d(channels) for _ in counts])
    assert torch.allclose(out2[:3, channels : 2 * channels], fresh[:3, channels : 2 * channels])


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("padded", [True, False])
def test_a_cumulative_running_average_is_kept_as_alone(padded: bool, layout: Any) -> None:
    """``momentum=None`` (a cumulative average over the steps) is each run's own, over steps,
    also for runs that have counted different numbers of steps (NCHW takes the C kernels,
    channels-last the tensor ops: unpadded, the one batch norm over every run's channels)."""
    g = torch.Generator().manual_seed(2)
    counts = [5, 3] if padded else [5, 5]
    mask = torch.arange(5)[:, None] < torch.tensor(counts)[None, :]
    norms = [nn.BatchNorm2d(4, momentum=None) for _ in counts]
    alone = [nn.BatchNorm2d(4, momentum=None) for _ in counts]
    for steps in range(4):
        h = (torch.randn(5, 8, 6, 5, generator=g) * 2 + 1).contiguous(memory_format=layout)
        if steps == 0:  # run 1 alone first: it has counted one step more from here on
            norms[1](h[:, 4:])
            alone[1](h[:, 4:])
            continue
        masked_batch_norm(h, mask, norms)
        for k, (n, bn) in enumerate(zip(counts, alone, strict=True)):
            bn(h[:n, 4 * k : 4 * (k + 1)])
    for fused_bn, bn in zip(norms, alone, strict=True):
        assert int(fused_bn.num_batches_tracked) == int(bn.num_batches_tracked)
        assert torch.allclose(fused_bn.running_mean, bn.running_mean, atol=1e-6)
        assert torch.allclose(fused_bn.running_var, bn.running_var, atol=1e-5)
    assert [int(bn.num_batches_tracked) for bn in norms] == [3, 4]


def test_equal_momenta_take_the_one_batch_norm_over_every_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Off the C kernels, unpadded runs stepping together share one batch norm call."""
    calls: list[float] = []
    original = fused._unpadded_batch_norm
    monkeypatch.setattr(
        fused, "_unpadded_batch_norm", lambda *a: calls.append(a[-1]) or original(*a)
    )
    h = torch.randn(5, 8, 6, 5).contiguous(memory_format=torch.channels_last)
    masked_batch_norm(h, torch.ones(5, 2, dtype=torch.bool), [nn.BatchNorm2d(4) for _ in "ab"])
    assert calls == [0.1]


@pytest.mark.parametrize("relu", [False, True])
def test_padded_c_batch_norm_is_each_runs_own_batch_norm(relu: bool) -> None:
    if library() is None:
        pytest.skip("no C compiler: the C kernels could not be built")
    counts, channels = [5, 3, 7], 4
    g = torch.Generator().manual_seed(0)
    h = torch.randn(7, 3 * channels, 6, 5, generator=g) * 2 + 1  # NCHW: the C kernels
    grad = torch.randn(h.shape, generator=g)  # the padding's too: it must not count
    norms = [nn.BatchNorm2d(channels) for _ in counts]
    alone = [nn.BatchNorm2d(channels) for _ in counts]
    for a, b in zip(norms, alone, strict=True):
        with torch.no_grad():
            a.weight.uniform_(0.5, 2.0, generator=g)
            a.bias.uniform_(-1.0, 1.0, generator=g)
        b.load_state_dict(a.state_dict())
    mask = torch.arange(7)[:, None] < torch.tensor(counts)[None, :]
    x = h.clone().requires_grad_()
    out = masked_batch_norm(x, mask, norms, relu=relu)
    (out * grad).sum().backward()
    assert x.grad is not None
    for k, (n, bn) in enumerate(zip(counts, alone, strict=True)):
        block = slice(k * channels, (k + 1) * channels)
        own = h[:n, block].clone().requires_grad_()
        expected = bn(own)
        expected = torch.relu(expected) if relu else expected
        (expected * grad[:n, block]).sum().backward()
        assert torch.allclose(out[:n, block], expected, atol=1e-5)
        assert torch.allclose(x.grad[:n, block], own.grad, atol=1e-5)  # type: ignore[arg-type]
        assert not x.grad[n:, block].any()  # the padding is no input of the statistics
        assert torch.allclose(norms[k].weight.grad, bn.weight.grad, atol=1e-4)  # type: ignore[arg-type]
        assert torch.allclose(norms[k].bias.grad, bn.bias.grad, atol=1e-4)  # type: ignore[arg-type]
        assert torch.allclose(norms[k].running_mean, bn.running_mean, atol=1e-6)
        assert torch.allclose(norms[k].running_var, bn.running_var, atol=1e-5)
        assert int(norms[k].num_batches_tracked) == 1


def test_padding_between_a_runs_rows_is_left_out_as_well() -> None:
    if library() is None:
        pytest.skip("no C compiler: the C kernels could not be built")
    g = torch.Generator().manual_seed(1)
    h = torch.randn(6, 8, 5, 4, generator=g) * 2 + 1  # NCHW: the C kernels
    mask = torch.tensor([[1, 1], [0, 1], [1, 1], [1, 0], [1, 1], [0, 1]], dtype=torch.bool)
    norms = [nn.BatchNorm2d(4) for _ in range(2)]
    out = masked_batch_norm(h, mask, norms)
    for k in range(2):
        block, rows = slice(4 * k, 4 * (k + 1)), mask[:, k]
        expected = nn.BatchNorm2d(4)(h[rows, block])
        assert torch.allclose(out[rows, block], expected, atol=1e-5)
    with pytest.raises(ValueError, match="no valid image"):
        masked_batch_norm(h, torch.zeros(6, 2, dtype=torch.bool), norms)


@pytest.mark.parametrize(
    "sections",
    [
        {"coupling": {"kind": "gaussian"}},
        {"coupling": {"kind": "bilinear"}},
        {"encoder": {"stochastic": True}},
        {"objective": {"n_negatives": 14}},  # extra random frames: more padding
        {"train": {"mode": "supervised"}},
        {"train": {"mode": "untrained"}},
    ],
    ids=["gaussian", "bilinear", "stochastic", "negatives", "supervised", "untrained"],
)
def test_fused_runs_match_the_runs_alone(
    sections: dict[str, Any], tiny_cfg: config.RunConfig, tiny_video: Video
) -> None:
    cfgs = seeds(with_(tiny_cfg, **sections), 3)
    alone = [fit(c, video=tiny_video) for c in cfgs]
    fused = fit_fused(cfgs, video=tiny_video)
    for a, f in zip(alone, fused, strict=True):
        assert_same_run(a, f, rel=0.01)  # the 1 %
    if sections.get("encoder", {}).get("stochastic"):  # a gap to compare: > 0 for noise
        assert all(a.elbo["elbo_gap"] > 1e-3 for a in alone)


def test_each_run_keeps_its_own_learning_rate_and_initial_lengthscale(
    tiny_cfg: config.RunConfig, tiny_video: Video
) -> None:
    cfgs = [
        with_(tiny_cfg, train={"lr": lr}, coupling={"kind": "gaussian", "lengthscale": ls})
        for lr, ls in [(0.005, 0.05), (0.02, 0.1), (0.001, 0.2)]
    ]
    assert len({fuse_key(c) for c in cfgs}) == 1
    alone = [fit(c, video=tiny_video) for c in cfgs]
    fused = fit_fused(cfgs, video=tiny_video)
    for a, f in zip(alone, fused, strict=True):
        assert_same_run(a, f, rel=0.01)
    assert len({round(f.lengthscale or 0, 4) for f in fused}) == 3  # three different runs


def test_a_diverging_run_ends_alone_and_the_others_go_on(
    tiny_cfg: config.RunConfig, tiny_video: Video
) -> None:
    cfgs = [with_(tiny_cfg, train={"lr": lr}) for lr in (0.005, 10.0, 0.01)]
    fused = fit_fused(cfgs, video=tiny_video)
    alone = fit(cfgs[1], video=tiny_video)
    assert [f.status for f in fused] == ["ok", "diverged", "ok"]
    assert fused[1].message == alone.message  # the same epoch, step and advice
    assert_same_run(fit(cfgs[2], video=tiny_video), fused[2], rel=0.01)


def test_fused_runs_resume_from_their_own_checkpoints(
    tiny_cfg: config.RunConfig, tiny_video: Video, tmp_path: Path
) -> None:
    cfgs = seeds(with_(tiny_cfg, train={"epochs": 3}), 2)
    dirs = [str(tmp_path / f"run{i}") for i in range(2)]
    whole = fit_fused(cfgs, video=tiny_video)
    short = seeds(with_(tiny_cfg, train={"epochs": 3}), 2)

    class Crash(Exception):
        pass

    def crash_after(epoch: int, rows: dict[int, dict[str, Any]]) -> None:
        if epoch == 1 and 0 in rows:
            raise Crash

    with pytest.raises(Crash):  # both runs saved epoch 1, then the process died
        fit_fused(short, checkpoint_dirs=dirs, video=tiny_video, after_epoch=crash_after)
    epochs: list[tuple[int, list[int]]] = []
    resumed = fit_fused(
        short,
        checkpoint_dirs=dirs,
        video=tiny_video,
        after_epoch=lambda e, rows: epochs.append((e, sorted(rows))),
    )
    assert epochs == [(2, [0, 1]), (3, [0, 1])]  # no epoch trained twice
    for a, b in zip(whole, resumed, strict=True):
        assert b.probe_error_px == pytest.approx(a.probe_error_px, rel=1e-3)


def test_runs_of_different_shapes_do_not_fuse(tiny_cfg: config.RunConfig) -> None:
    assert fuse_key(tiny_cfg) == fuse_key(with_(tiny_cfg, train={"seed": 3, "lr": 0.1}))
    for other in ({"train": {"batch_size": 8}}, {"data": {"seed": 1}}, {"train": {"epochs": 3}}):
        assert fuse_key(with_(tiny_cfg, **other)) != fuse_key(tiny_cfg)
    mlp = with_(tiny_cfg, encoder={"kind": "mlp"})
    assert fuse_key(mlp) is None
    with pytest.raises(ValueError, match="only com"):
        fit_fused([mlp])
    with pytest.raises(ValueError, match="run 1 cannot be fused"):
        fit_fused([tiny_cfg, with_(tiny_cfg, train={"batch_size": 8})])
