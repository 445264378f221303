"""Fig. 1B-E of the paper as PNG files (matplotlib, Agg backend; no screen needed).

- `fig1b`: decoded (linear probe) against true ball centres on held-out frames.
- `probe_error_bars` (Fig. 1C): probe error per method, median bars with a point per seed.
- `fig1de`: the learned prior P(z'|z) ∝ Q(z') f(z, z') (eq. 30) over the next location of one
  ball, as a heatmap over the image: ball `ball` is placed at every grid location of the next
  frame (the others where they truly are), each candidate frame is encoded to z', and the
  coupling scores it against z of the current frame; Q(z') is taken as uniform over the grid,
  as in eq. 34.
- `preview`: frames with their true centres (``ssvae data --preview``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from ssvae_core.balls import Video, render
from ssvae_core.probe import ProbeResult


def save(fig: plt.Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG at `path` (folders made), close it; the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _colours(video: Video) -> np.ndarray:
    """Ball colours as matplotlib RGB in [0, 1]. [K, 3]."""
    return video.colours.astype(np.float64) / 255.0


def fig1b(
    video: Video, probe: ProbeResult, path: str | Path, title: str = "", n_frames: int = 60
) -> Path:
    """True (circles) and decoded (crosses) centres of the first `n_frames` held-out frames."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    test = probe.test_index[:n_frames]
    for k, colour in enumerate(_colours(video)):
        true, pred = video.positions[test, k], probe.predicted[test, k]
        ax.plot(*true.T, "o", ms=3, mfc="none", color=colour, alpha=0.6)
        ax.plot(*pred.T, "x", ms=3, color=colour)
    size = video.frames.shape[1]
    ax.set(xlim=(0, size), ylim=(size, 0), aspect="equal", xlabel="x (px)", ylabel="y (px)")
    ax.set_title(title or f"decoded (x) vs true (o): {probe.probe_error_px:.2f} px")
    ax.set_facecolor("black")
    return save(fig, path)


def probe_error_bars(
    errors: Mapping[str, Sequence[float]], path: str | Path, title: str = ""
) -> Path:
    """Median probe error per method (bars) with one point per seed. errors: method -> [S].

    A method with no finite value (every run diverged) keeps its place on the axis, barless.
    """
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(errors), 3.5))
    for i, values in enumerate(errors.values()):
        finite = np.asarray(values, dtype=float)
        finite = finite[np.isfinite(finite)]
        if len(finite) == 0:
            continue
        ax.bar(i, np.median(finite), color="0.8", edgecolor="0.3")
        jitter = np.linspace(-0.15, 0.15, len(finite)) if len(finite) > 1 else np.zeros(1)
        ax.plot(i + jitter, finite, "o", color="C3", ms=4)
    ax.set_xticks(range(len(errors)), list(errors), rotation=20)
    ax.set_ylabel("probe error (px)")
    ax.set_title(title or "Fig. 1C: distance of decoded to true centres")
    return save(fig, path)


@torch.no_grad()
def prior_heatmap(
    encoder: nn.Module,
    coupling: nn.Module,
    video: Video,
    frame: int,
    ball: int = 0,
    grid: int = 32,
) -> np.ndarray:
    """P(next location of `ball` | frame `frame`) on a grid×grid lattice. Returns [grid, grid].

    The lattice spans the centres a disc can take, [r, size - r] on both axes (r = radius):
    row i, column j is the candidate centre (x_j, y_i).
    """
    size = video.frames.shape[1]
    diameter = video.config.diameter
    centres = np.linspace(diameter / 2, size - diameter / 2, grid)
    cx, cy = np.meshgrid(centres, centres)  # [grid, grid] each
    candidates = np.repeat(video.positions[frame + 1][None], grid * grid, axis=0)  # [G, K, 2]
    candidates[:, ball, 0], candidates[:, ball, 1] = cx.ravel(), cy.ravel()
    device = next(encoder.parameters()).device
    encoder.eval()

    def encode(frames: np.ndarray) -> torch.Tensor:  # [n, H, W, 3] uint8 -> [n, D]
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(255.0).to(device)
        return encoder(x)

    z = encode(video.frames[frame : frame + 1])  # [1, D]
    log_f = torch.cat(
        [
            coupling(z, encode(render(candidates[i : i + 256], size, diameter, video.colours)))
            for i in range(0, len(candidates), 256)
        ],
        dim=1,
    )  # [1, G]
    return torch.softmax(log_f[0], dim=0).reshape(grid, grid).cpu().numpy()


def fig1de(
    encoder: nn.Module,
    coupling: nn.Module,
    video: Video,
    path: str | Path,
    frame: int = 0,
    ball: int = 0,
    title: str = "",
) -> Path:
    """Heatmap of the learned prior over the next location of `ball`, over frame `frame`."""
    heat = prior_heatmap(encoder, coupling, video, frame, ball)
    size = video.frames.shape[1]
    lo, hi = video.config.diameter / 2, size - video.config.diameter / 2
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.imshow(video.frames[frame], extent=(0, size, size, 0))
    ax.imshow(heat, extent=(lo, hi, hi, lo), cmap="magma", alpha=0.65)
    ax.set(xlim=(0, size), ylim=(size, 0))
    nxt = video.positions[frame + 1, ball]
    ax.plot(*nxt, "+", color="white", ms=12, mew=2)
    ax.set_title(title or f"P(next location of ball {ball}) under the learned prior")
    ax.set_axis_off()
    return save(fig, path)


def preview(video: Video, path: str | Path, frames: Sequence[int] = (0, 1, 2, 3)) -> Path:
    """The first frames of the video with the true centres marked."""
    fig, axes = plt.subplots(1, len(frames), figsize=(3 * len(frames), 3.2))
    size = video.frames.shape[1]
    for ax, t in zip(np.atleast_1d(axes), frames, strict=False):
        ax.imshow(video.frames[t], extent=(0, size, size, 0))
        ax.plot(*video.positions[t].T, "+", color="white", ms=8)
        ax.set_title(f"frame {t}")
        ax.set_axis_off()
    return save(fig, path)
