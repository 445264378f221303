"""Moving-balls video: the simulator and renderer of the paper's proof of principle (section 4).

The paper (section 4, Fig. 1A) films ``n_balls`` balls in a square: 900 frames of 256×256 pixels,
balls of diameter 32. Between consecutive frames every ball moves by exactly one diameter. Its
heading is the previous heading plus uniform noise in ±``noise_deg`` degrees; if that move would
collide, a new heading is drawn around the previous one with the noise range doubled (±2·noise,
±4·noise, ...) until the move is valid.

Conventions (shared by `simulate_positions`, `render` and `Video.positions`):

- Continuous pixel coordinates: the image covers ``[0, size]²``, pixel ``(row r, column c)`` is
  the unit square ``[c, c+1] × [r, r+1]`` with centre ``(c + 0.5, r + 0.5)``. A position is
  ``(x, y)`` with x = column axis, y = row axis.
- A move collides when the disc would leave the square (a ball's centre must stay in
  ``[radius, size - radius]²``) or overlap another ball (centre distance < diameter). Balls move
  one at a time in index order, each checked against the others' current positions.
- Rendering is anti-aliased: a pixel's coverage is ``clip(radius + 0.5 - dist, 0, 1)`` with
  ``dist`` the distance from the pixel centre to the ball centre, times the ball's colour, on black.

Shapes: ``frames`` uint8 ``[T, size, size, 3]``; ``positions`` float32 ``[T, n_balls, 2]``;
``colours`` uint8 ``[n_balls, 3]``; ``collided`` bool ``[T-1, n_balls]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Distinct saturated colours, coral first as in the paper's Fig. 1.
PALETTE: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("coral", (255, 127, 80)),
    ("teal", (0, 180, 170)),
    ("gold", (255, 215, 0)),
    ("royal_blue", (65, 105, 225)),
    ("lime", (50, 205, 50)),
    ("magenta", (255, 0, 255)),
    ("purple", (150, 40, 240)),
    ("sky_blue", (0, 190, 255)),
)
# Once the noise range covers the whole circle, uniform headings are checked in batches of these
# sizes; a ball with no valid heading among them (fewer than ~1 in 10^4 valid) is boxed in.
_UNIFORM_BATCHES = (64, *(4096,) * 8)
MAX_BACKTRACKS = 10_000  # redrawn frames per video before giving up
_PLACEMENT_TRIES = 10_000


def _require(ok: bool, field_name: str, message: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{field_name}: {message}, got {value!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class BallsConfig:
    """The moving-balls video of section 4; defaults are the paper's.

    ``size`` must leave room: ``n_balls · (2·diameter)² <= size² / 2``, so the balls start at
    least two diameters apart and no ball can be boxed in by the walls alone.
    """

    n_frames: int = 900
    size: int = 256
    n_balls: int = 3
    diameter: int = 32
    noise_deg: float = 2.0

    def __post_init__(self) -> None:
        for name in ("n_frames", "size", "n_balls", "diameter"):
            value = getattr(self, name)
            _require(_is_int(value), name, "must be an int", value)
        _require(self.n_frames >= 2, "n_frames", "must be >= 2", self.n_frames)
        _require(self.size >= 1, "size", "must be >= 1", self.size)
        _require(self.diameter >= 1, "diameter", "must be >= 1", self.diameter)
        _require(self.n_balls >= 1, "n_balls", "must be >= 1", self.n_balls)
        _require(
            self.n_balls <= len(PALETTE),
            "n_balls",
            f"must be <= {len(PALETTE)} (one distinct colour per ball)",
            self.n_balls,
        )
        noise = self.noise_deg
        is_number = isinstance(noise, (int, float, np.integer, np.floating))
        _require(is_number and not isinstance(noise, bool), "noise_deg", "must be a float", noise)
        _require(
            math.isfinite(noise) and 0 < noise <= 180, "noise_deg", "must be in (0, 180]", noise
        )
        _require(
            2 * self.n_balls * (2 * self.diameter) ** 2 <= self.size**2,
            "size",
            f"too small for {self.n_balls} balls of diameter {self.diameter}: "
            f"need n_balls * (2 * diameter)**2 <= size**2 / 2",
            self.size,
        )


@dataclass(frozen=True)
class Video:
    """A simulated video and its ground truth (conventions in the module docstring).

    frames: uint8 ``[T, H, W, 3]``; positions: float32 ``[T, n_balls, 2]`` as (x, y), row t the
    centres in frame t; colours: uint8 ``[n_balls, 3]``; collided: bool ``[T-1, n_balls]``, True
    where the ball's move from frame t to t+1 needed at least one redraw of its heading.
    """

    frames: np.ndarray
    positions: np.ndarray
    colours: np.ndarray
    collided: np.ndarray
    config: BallsConfig
    seed: int

    def __post_init__(self) -> None:
        t, n = self.config.n_frames, self.config.n_balls
        s = self.config.size
        expected = {
            "frames": ((t, s, s, 3), np.uint8),
            "positions": ((t, n, 2), np.float32),
            "colours": ((n, 3), np.uint8),
            "collided": ((t - 1, n), np.bool_),
        }
        for name, (shape, dtype) in expected.items():
            array = getattr(self, name)
            if array.shape != shape or array.dtype != dtype:
                raise ValueError(
                    f"{name}: expected {np.dtype(dtype).name} {list(shape)}, "
                    f"got {array.dtype.name} {list(array.shape)}"
                )


def ball_colours(n_balls: int) -> np.ndarray:
    """The first ``n_balls`` palette colours, uint8 ``[n_balls, 3]`` (coral first)."""
    if not 1 <= n_balls <= len(PALETTE):
        raise ValueError(f"n_balls: must be in [1, {len(PALETTE)}], got {n_balls}")
    return np.array([rgb for _, rgb in PALETTE[:n_balls]], dtype=np.uint8)


def _to_float32(points: np.ndarray) -> np.ndarray:
    """Round to float32 and back, so checked positions are exactly the stored ones."""
    return points.astype(np.float32).astype(np.float64)


def _valid(candidates: np.ndarray, others: np.ndarray, size: int, diameter: int) -> np.ndarray:
    """Which candidate centres ``[K, 2]`` keep the disc in the square and clear of ``others``
    ``[M, 2]``; returns bool ``[K]``."""
    radius = diameter / 2
    inside = np.all((candidates >= radius) & (candidates <= size - radius), axis=1)  # [K]
    if len(others) == 0:
        return inside
    gaps = candidates[:, None, :] - others[None, :, :]  # [K, M, 2]
    clear = np.all(np.hypot(gaps[..., 0], gaps[..., 1]) >= diameter, axis=1)  # [K]
    return inside & clear


def _valid_one(x: float, y: float, others: list[list[float]], size: int, diameter: int) -> bool:
    """`_valid` for one candidate centre (x, y) and ``others`` as ``[M][2]`` nested lists."""
    radius = diameter / 2
    if not (radius <= x <= size - radius and radius <= y <= size - radius):
        return False
    return all(math.hypot(x - ox, y - oy) >= diameter for ox, oy in others)


def _initial_positions(cfg: BallsConfig, rng: np.random.Generator) -> np.ndarray:
    """Uniform centres inside the walls, pairwise at least two diameters apart: ``[n_balls, 2]``."""
    radius = cfg.diameter / 2
    for _ in range(_PLACEMENT_TRIES):
        placed: list[np.ndarray] = []
        for _ in range(100 * cfg.n_balls):
            point = _to_float32(rng.uniform(radius, cfg.size - radius, size=2))
            if all(np.hypot(*(point - other)) >= 2 * cfg.diameter for other in placed):
                placed.append(point)
                if len(placed) == cfg.n_balls:
                    return np.stack(placed)
    raise RuntimeError(f"could not place {cfg.n_balls} balls in {cfg}")


def _move(
    start: np.ndarray,
    heading: float,
    others: np.ndarray,
    cfg: BallsConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, float, bool] | None:
    """One ball's move by one diameter: ``start`` ``[2]``, ``others`` ``[M, 2]``.

    Returns the new centre ``[2]``, the new heading (radians) and whether a redraw was needed,
    or None when the ball is boxed in. The k-th draw (k = 0, 1, ...) is uniform in ±noise·2^k
    around ``heading``; once that range covers the circle, headings are uniform (drawn in
    batches, which has the same distribution) and after ~33k of them the ball counts as boxed in.
    """
    half_range = math.radians(cfg.noise_deg)
    first = True
    others_list = others.tolist()  # plain floats: the common case needs no numpy
    while half_range < math.pi:
        proposal = heading + rng.uniform(-half_range, half_range)
        x = float(np.float32(start[0] + cfg.diameter * math.cos(proposal)))  # as `_to_float32`
        y = float(np.float32(start[1] + cfg.diameter * math.sin(proposal)))
        if _valid_one(x, y, others_list, cfg.size, cfg.diameter):
            return np.array([x, y]), proposal % (2 * math.pi), not first
        half_range *= 2
        first = False
    for batch in _UNIFORM_BATCHES:
        proposals = rng.uniform(0, 2 * math.pi, size=batch)  # [K]
        steps = cfg.diameter * np.stack([np.cos(proposals), np.sin(proposals)], axis=1)  # [K, 2]
        candidates = _to_float32(start[None, :] + steps)  # [K, 2]
        ok = np.flatnonzero(_valid(candidates, others, cfg.size, cfg.diameter))
        if len(ok):
            return candidates[ok[0]], float(proposals[ok[0]]), True
    return None


def _step(
    current: np.ndarray, headings: np.ndarray, cfg: BallsConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Move every ball once, in index order: centres ``[n, 2]``, headings ``[n]`` -> new centres
    ``[n, 2]``, new headings ``[n]``, collided ``[n]``; None if some ball is boxed in."""
    moved, turned = current.copy(), headings.copy()
    collided = np.zeros(cfg.n_balls, dtype=bool)
    for ball in range(cfg.n_balls):
        others = np.delete(moved, ball, axis=0)  # [n-1, 2], current positions of the others
        result = _move(moved[ball], float(turned[ball]), others, cfg, rng)
        if result is None:
            return None
        moved[ball], turned[ball], collided[ball] = result
    return moved, turned, collided


def simulate_positions(cfg: BallsConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The physics of section 4 without rendering.

    Returns positions float32 ``[T, n_balls, 2]`` (x, y in pixels) and collided bool
    ``[T-1, n_balls]``. Deterministic for ``seed`` (``np.random.default_rng(seed)``).

    A ball can get boxed in (say in a corner with a touching neighbour: no heading moves it a
    full diameter); with the paper's settings this happens about once in 2000 frames.
    The paper does not say what it did then; here the last k frames are redrawn, k = 1, 2, ...
    for repeated failures before the video gets past that frame, so every recorded move follows
    the rule exactly. After `MAX_BACKTRACKS` redraws in one video a RuntimeError is raised.
    """
    rng = np.random.default_rng(seed)
    positions = np.empty((cfg.n_frames, cfg.n_balls, 2), dtype=np.float64)  # float32-exact
    headings = np.empty((cfg.n_frames, cfg.n_balls), dtype=np.float64)  # radians
    collided = np.zeros((cfg.n_frames - 1, cfg.n_balls), dtype=bool)
    positions[0] = _initial_positions(cfg, rng)
    headings[0] = rng.uniform(0, 2 * math.pi, size=cfg.n_balls)
    t, frontier, failures, backtracks = 0, 0, 0, 0
    while t < cfg.n_frames - 1:
        result = _step(positions[t], headings[t], cfg, rng)
        if result is None:  # boxed in: redraw the last `failures` frames (more each time)
            backtracks += 1
            if backtracks > MAX_BACKTRACKS:
                raise RuntimeError(
                    f"balls keep getting boxed in (gave up after {MAX_BACKTRACKS} redrawn "
                    f"frames at frame {t}); the square is too crowded for {cfg}"
                )
            failures += 1
            t = max(t - failures, 0)
            continue
        positions[t + 1], headings[t + 1], collided[t] = result
        t += 1
        if t > frontier:
            frontier, failures = t, 0
    return positions.astype(np.float32), collided


def render(positions: np.ndarray, size: int, diameter: int, colours: np.ndarray) -> np.ndarray:
    """Anti-aliased discs on black: positions ``[T, n, 2]`` (x, y) -> uint8 ``[T, size, size, 3]``.

    Each disc's coverage is computed on a ``(diameter+1)²`` patch around its centre for all
    frames at once, then added into the frames by basic slicing. Discs must lie inside the
    square; where two touching discs share an edge pixel their contributions add (their
    coverages sum to at most 1).
    """
    positions = np.asarray(positions, dtype=np.float64)
    colours = np.asarray(colours, dtype=np.uint8)
    if positions.ndim != 3 or positions.shape[2] != 2:
        raise ValueError(f"positions: expected [T, n, 2], got {list(positions.shape)}")
    n_frames, n_balls, _ = positions.shape
    if colours.shape != (n_balls, 3):
        raise ValueError(f"colours: expected [{n_balls}, 3], got {list(colours.shape)}")
    radius = diameter / 2
    if np.any(positions < radius - 1e-3) or np.any(positions > size - radius + 1e-3):
        raise ValueError(f"positions: discs of diameter {diameter} must lie inside [0, {size}]")
    patch = diameter + 1  # pixels touched by a disc along one axis (see module conventions)
    offsets = np.arange(patch)  # [P]
    frames = np.zeros((n_frames, size, size, 3), dtype=np.uint8)
    for ball in range(n_balls):
        x, y = positions[:, ball, 0], positions[:, ball, 1]  # [T]
        col0 = np.clip(np.floor(x - radius).astype(np.int64), 0, size - patch)  # [T]
        row0 = np.clip(np.floor(y - radius).astype(np.int64), 0, size - patch)  # [T]
        cols = col0[:, None] + offsets  # [T, P] pixel columns of the patch
        rows = row0[:, None] + offsets  # [T, P] pixel rows of the patch
        dx = (cols + 0.5 - x[:, None]).astype(np.float32)[:, None, :]  # [T, 1, P]
        dy = (rows + 0.5 - y[:, None]).astype(np.float32)[:, :, None]  # [T, P, 1]
        coverage = np.clip(radius + 0.5 - np.hypot(dx, dy), 0, 1)  # [T, P, P]
        paint = np.rint(coverage[..., None] * colours[ball].astype(np.float32))  # [T, P, P, 3]
        paint16 = paint.astype(np.uint16)
        for t in range(n_frames):  # basic slicing: a few µs per disc
            window = (t, slice(row0[t], row0[t] + patch), slice(col0[t], col0[t] + patch))
            frames[window] = np.minimum(frames[window] + paint16[t], 255)
    return frames


def simulate(cfg: BallsConfig, seed: int) -> Video:
    """Simulate and render the moving-balls video of section 4 (deterministic for ``seed``)."""
    positions, collided = simulate_positions(cfg, seed)
    colours = ball_colours(cfg.n_balls)
    frames = render(positions, cfg.size, cfg.diameter, colours)
    return Video(frames, positions, colours, collided, config=cfg, seed=seed)
