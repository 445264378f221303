"""Fig. 1B-E of the paper as PNG files (matplotlib, Agg backend; no screen needed).

- `fig1b`: decoded (linear probe) against true ball centres on held-out frames, a panel per
  ball, on white.
- `probe_error_bars` (Fig. 1C): probe error per method, median bars with a point per seed.
- `fig1de`: the learned prior P(z'|z) ∝ Q(z') f(z, z') (eq. 30) over the next location of one
  ball, as a heatmap over the image: ball `ball` is placed at every grid location of the next
  frame (the others where they truly are), each candidate frame is encoded to z', and the
  coupling scores it against z of the current frame; Q(z') is taken as uniform over the grid,
  as in eq. 34. Drawn over a pale copy of the frame, with a colour bar and a legend.
- Each ``*_figure`` function returns the open figure (tests read its legend and labels); the
  function without the suffix saves it as a PNG.
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
from matplotlib.collections import LineCollection
from matplotlib.lines import Line2D
from matplotlib.patches import Circle
from torch import nn

from ssvae_core.balls import PALETTE, Video, render
from ssvae_core.files import replacing
from ssvae_core.frames import as_float, frames_per_batch
from ssvae_core.probe import ProbeResult


def save(fig: plt.Figure, path: str | Path) -> Path:
    """Write `fig` at `path` in the format its suffix names (PNG without one; folders made),
    close it; the path."""
    path = Path(path)
    with replacing(path) as tmp:  # never half a PNG; a named pipe there is replaced, not opened
        fig.savefig(tmp, format=path.suffix.lstrip(".").lower() or "png", dpi=120,
                    bbox_inches="tight")  # fmt: skip
    plt.close(fig)
    return path


def _colours(video: Video) -> np.ndarray:
    """Ball colours as matplotlib RGB in [0, 1]. [K, 3]."""
    return video.colours.astype(np.float64) / 255.0


def ball_names(video: Video) -> list[str]:
    """Each ball's colour name from `balls.PALETTE` (``coral`` first), else ``ball k``. [K]."""
    named = {rgb: name.replace("_", " ") for name, rgb in PALETTE}
    return [
        named.get((int(r), int(g), int(b)), f"ball {k}")
        for k, (r, g, b) in enumerate(video.colours)
    ]


def _ball(name: str) -> str:
    """``the coral ball`` for a palette name, the name itself for ``ball k``."""
    return name if name.startswith("ball ") else f"the {name} ball"


def fig1b_figure(
    video: Video, probe: ProbeResult, title: str = "", n_frames: int = 60
) -> plt.Figure:
    """Fig. 1B, one panel per ball: the true centre (open circle) and the decoded one (cross)
    of the first `n_frames` held-out frames, joined by a grey line (the error).

    A panel's title is that ball's mean error over all held-out frames; the figure's title
    gives `probe.probe_error_px`, their mean over balls.
    """
    names, colours = ball_names(video), _colours(video)
    held_out, shown = probe.test_index, probe.test_index[:n_frames]
    per_ball = np.linalg.norm(probe.predicted[held_out] - video.positions[held_out], axis=2).mean(
        axis=0
    )  # [K] px
    size = video.frames.shape[1]
    fig, axes = plt.subplots(1, len(names), figsize=(3.3 * len(names) + 0.3, 4.3), squeeze=False)
    for k, ax in enumerate(axes[0]):
        true, decoded = video.positions[shown, k], probe.predicted[shown, k]  # [n, 2] each
        errors = list(np.stack([true, decoded], axis=1))  # n segments [2, 2]
        ax.add_collection(LineCollection(errors, colors="0.6", lw=0.8))
        ax.plot(*true.T, "o", ms=6, mfc="none", mec=colours[k], mew=1.5)
        ax.plot(*decoded.T, "x", ms=4.5, mew=1.2, color=colours[k] * 0.6)  # a darker shade
        ax.set(xlim=(0, size), ylim=(size, 0), aspect="equal", xlabel="x (px)")
        ax.set_title(f"{_ball(names[k])}: {per_ball[k]:.2f} px", color=colours[k] * 0.7)
        ax.grid(color="0.92", lw=0.6)
        ax.set_axisbelow(True)
    axes[0][0].set_ylabel("y (px)")
    key = [
        Line2D([], [], ls="none", marker="o", ms=6, mfc="none", mec="0.25", label="true centre"),
        Line2D([], [], ls="none", marker="x", ms=5, color="0.25", label="decoded (linear probe)"),
        Line2D([], [], color="0.6", lw=0.8, label="error: true to decoded"),
    ]
    fig.legend(handles=key, loc="lower center", ncol=3, frameon=False, borderaxespad=0.2)
    fig.suptitle(
        title
        or f"Fig. 1B: decoded vs true centres, {len(shown)} held-out frames; "
        f"mean error {probe.probe_error_px:.2f} px"
    )
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    return fig


def fig1b(
    video: Video, probe: ProbeResult, path: str | Path, title: str = "", n_frames: int = 60
) -> Path:
    """`fig1b_figure` as a PNG at `path`."""
    return save(fig1b_figure(video, probe, title, n_frames), path)


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
    was_training = encoder.training
    encoder.eval()

    def encode(frames: np.ndarray) -> torch.Tensor:  # [n, H, W, 3] uint8 -> [n, D]
        return encoder(as_float(torch.from_numpy(frames).permute(0, 3, 1, 2).to(device)))

    z = encode(video.frames[frame : frame + 1])  # [1, D]
    batch = frames_per_batch(size, size, device)
    log_f = torch.empty(1, len(candidates), device=device)  # [1, G], filled in place
    for i in range(0, len(candidates), batch):
        frames = render(candidates[i : i + batch], size, diameter, video.colours)
        log_f[:, i : i + len(frames)] = coupling(z, encode(frames))
    encoder.train(was_training)
    return torch.softmax(log_f[0], dim=0).reshape(grid, grid).cpu().numpy()


def _light(frame: np.ndarray) -> np.ndarray:
    """A frame (balls on black, uint8 [H, W, 3]) as pale balls on white, RGB in [0, 1]."""
    rgb = frame.astype(np.float64) / 255.0
    strength = rgb.max(axis=2, keepdims=True)  # [H, W, 1]: 0 on the background
    hue = rgb / np.maximum(strength, 1e-9)
    alpha = 0.45 * strength
    return 1.0 - alpha + alpha * hue


def fig1de_figure(
    encoder: nn.Module,
    coupling: nn.Module,
    video: Video,
    frame: int = 0,
    ball: int = 0,
    title: str = "",
) -> plt.Figure:
    """Fig. 1D/E: `prior_heatmap` over a pale copy of frame `frame`, with a colour bar (the
    probability of each lattice cell; the cells sum to 1), the ball now (dashed), its true
    next centre and the prior's most probable one."""
    heat = prior_heatmap(encoder, coupling, video, frame, ball)  # [G, G]
    size, diameter = video.frames.shape[1], video.config.diameter
    lo, hi = diameter / 2, size - diameter / 2
    half = (hi - lo) / (2 * (heat.shape[0] - 1))  # each cell centred on its lattice point
    name, colour = _ball(ball_names(video)[ball]), _colours(video)[ball]
    fig, ax = plt.subplots(figsize=(5.4, 5.0))
    ax.imshow(_light(video.frames[frame]), extent=(0, size, size, 0))
    image = ax.imshow(
        heat,
        extent=(lo - half, hi + half, hi + half, lo - half),
        cmap="viridis",
        vmin=0.0,
        vmax=float(heat.max()),
        alpha=0.9 * np.sqrt(heat / heat.max()),  # faint cells fade out: the frame shows
    )
    colourbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    if colourbar.solids is not None:
        colourbar.solids.set_alpha(1.0)  # the bar itself opaque
    colourbar.set_label(f"probability per lattice cell (the {heat.size} cells sum to 1)")
    now, nxt = video.positions[frame, ball], video.positions[frame + 1, ball]
    lattice = np.linspace(lo, hi, heat.shape[0])
    row, column = np.unravel_index(int(np.argmax(heat)), heat.shape)
    ax.add_patch(
        Circle(now, diameter / 2, fill=False, ec=colour * 0.6, lw=1.8, ls="--",
               label=f"{name} in frame {frame}")
    )  # fmt: skip
    ax.plot(*nxt, ls="none", marker="X", ms=11, mfc=colour, mec="black", mew=1.0,
            label=f"its true centre in frame {frame + 1}")  # fmt: skip
    ax.plot(lattice[column], lattice[row], ls="none", marker="+", ms=13, mew=2.0, color="black",
            label="most probable under the prior")  # fmt: skip
    ax.set(xlim=(0, size), ylim=(size, 0), xticks=[], yticks=[])
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=1, frameon=False)
    ax.set_title(title or f"Fig. 1D/E: the learned prior over\nthe next location of {name}")
    return fig


def fig1de(
    encoder: nn.Module,
    coupling: nn.Module,
    video: Video,
    path: str | Path,
    frame: int = 0,
    ball: int = 0,
    title: str = "",
) -> Path:
    """`fig1de_figure` as a PNG at `path`: the learned prior over the next location of
    `ball` (0 = the coral ball), over frame `frame`."""
    return save(fig1de_figure(encoder, coupling, video, frame, ball, title), path)


def preview(video: Video, path: str | Path, frames: Sequence[int] = (0, 1, 2, 3)) -> Path:
    """The first frames of the video with the true centres marked (those it has of `frames`:
    a video may be 2 frames long)."""
    frames = [t for t in frames if t < len(video.frames)]
    fig, axes = plt.subplots(1, len(frames), figsize=(3 * len(frames), 3.2))
    size = video.frames.shape[1]
    for ax, t in zip(np.atleast_1d(axes), frames, strict=False):
        ax.imshow(video.frames[t], extent=(0, size, size, 0))
        ax.plot(*video.positions[t].T, "+", color="white", ms=8)
        ax.set_title(f"frame {t}")
        ax.set_axis_off()
    return save(fig, path)
