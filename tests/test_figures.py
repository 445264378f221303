"""Fig. 1B and 1D/E: what each figure promises (panels, legend, colour bar, names), then a PNG.

The figures are read as matplotlib objects before saving; a probe with known errors and an
untrained encoder stand in for a trained run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgb

from ssvae_core import figures
from ssvae_core.balls import Video
from ssvae_core.couplings import build_coupling
from ssvae_core.encoder import build_encoder
from ssvae_core.probe import ProbeResult

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _probe(video: Video, offsets_px: list[tuple[float, float]]) -> ProbeResult:
    """A probe whose decoded centres are the true ones shifted by a fixed offset per ball."""
    predicted = (video.positions + np.asarray(offsets_px)[None]).astype(np.float32)  # [T, K, 2]
    error = float(np.mean([np.hypot(*offset) for offset in offsets_px]))
    test = np.arange(0, len(video.positions), 3)
    return ProbeResult(error, 1.0, np.zeros((7, 6)), predicted, test)


def test_balls_are_named_by_their_palette_colour_coral_first(tiny_video: Video) -> None:
    assert figures.ball_names(tiny_video) == ["coral", "teal", "gold"]


def test_fig1b_has_a_panel_per_ball_with_its_error_and_a_legend(
    tiny_video: Video, tmp_path: Path
) -> None:
    probe = _probe(tiny_video, [(3.0, 4.0), (0.0, 0.0), (1.0, 0.0)])  # 5, 0 and 1 px
    fig = figures.fig1b_figure(tiny_video, probe, n_frames=20)
    panels = fig.axes
    assert [ax.get_title() for ax in panels] == [
        "the coral ball: 5.00 px", "the teal ball: 0.00 px", "the gold ball: 1.00 px",
    ]  # fmt: skip
    assert [text.get_text() for text in fig.legends[0].get_texts()] == [
        "true centre", "decoded (linear probe)", "error: true to decoded",
    ]  # fmt: skip
    assert "mean error 2.00 px" in fig.get_suptitle()
    for k, ax in enumerate(panels):
        true, decoded = ax.get_lines()  # open circles, then crosses, 20 frames each
        assert true.get_marker() == "o" and decoded.get_marker() == "x"
        assert np.allclose(true.get_xydata(), tiny_video.positions[probe.test_index[:20], k])
        assert np.allclose(decoded.get_xydata(), probe.predicted[probe.test_index[:20], k])
        assert to_rgb(true.get_markeredgecolor()) == pytest.approx(tiny_video.colours[k] / 255)
        assert len(ax.collections[0].get_segments()) == 20  # one error line per frame
        assert to_rgb(ax.get_facecolor()) == (1.0, 1.0, 1.0)  # a light background
    path = figures.save(fig, tmp_path / "fig1b.png")
    assert path.read_bytes().startswith(PNG_MAGIC)
    assert figures.fig1b(tiny_video, probe, tmp_path / "again.png").stat().st_size > 10_000


@pytest.fixture
def untrained(tiny_video: Video) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    size = tiny_video.frames.shape[1]
    return build_encoder("com", (3, size, size)), build_coupling("gaussian", 6)


def test_the_prior_heatmap_is_a_distribution_over_the_lattice(
    tiny_video: Video, untrained: tuple[torch.nn.Module, torch.nn.Module]
) -> None:
    encoder = untrained[0]
    assert encoder.training
    heat = figures.prior_heatmap(*untrained, tiny_video, frame=0, grid=16)
    assert heat.shape == (16, 16) and (heat >= 0).all()
    assert heat.sum() == pytest.approx(1.0, abs=1e-5)
    assert encoder.training  # drawn in eval mode, then given back its mode


def test_fig1de_names_the_coral_ball_and_has_a_probability_colour_bar_and_a_legend(
    tiny_video: Video, untrained: tuple[torch.nn.Module, torch.nn.Module], tmp_path: Path
) -> None:
    fig = figures.fig1de_figure(*untrained, tiny_video, frame=0, ball=0)
    ax, colour_bar = fig.axes
    assert "the next location of the coral ball" in ax.get_title()
    assert "ball 0" not in ax.get_title()
    assert [text.get_text() for text in ax.get_legend().get_texts()] == [
        "the coral ball in frame 0", "its true centre in frame 1", "most probable under the prior",
    ]  # fmt: skip
    assert colour_bar.get_ylabel() == "probability per lattice cell (the 1024 cells sum to 1)"
    frame_image, heat_image = ax.get_images()
    heat = heat_image.get_array()  # [32, 32]: the probabilities themselves
    assert heat.shape == (32, 32) and heat.sum() == pytest.approx(1.0, abs=1e-5)
    assert heat_image.get_clim() == (0.0, pytest.approx(float(heat.max())))
    assert frame_image.get_array().min() > 0.5  # the frame drawn pale: no black background
    true_next, most_probable = ax.get_lines()
    assert np.allclose(true_next.get_xydata(), tiny_video.positions[1, 0])
    lattice = np.linspace(3.0, 29.0, 32)  # centres a 6-px disc can take in a 32-px frame
    row, column = np.unravel_index(np.argmax(heat), heat.shape)
    assert np.allclose(most_probable.get_xydata(), [[lattice[column], lattice[row]]])
    left, right, bottom, top = heat_image.get_extent()  # cell j drawn centred on lattice[j]
    assert np.allclose(left + (np.arange(32) + 0.5) * (right - left) / 32, lattice)
    assert np.allclose(top + (np.arange(32) + 0.5) * (bottom - top) / 32, lattice)
    path = figures.save(fig, tmp_path / "fig1de.png")
    assert path.read_bytes().startswith(PNG_MAGIC)
    written = figures.fig1de(*untrained, tiny_video, tmp_path / "again.png")
    assert written.read_bytes().startswith(PNG_MAGIC)
