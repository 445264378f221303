"""Tests for the moving-balls simulator and renderer (section 4 of the paper)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ssvae_core.balls as balls
from ssvae_core.balls import (
    PALETTE,
    BallsConfig,
    Video,
    _move,
    ball_colours,
    render,
    simulate,
    simulate_positions,
)

CONFIGS = {
    "paper_short": BallsConfig(n_frames=120),
    "small": BallsConfig(n_frames=400, size=64, diameter=8),
    "crowded": BallsConfig(n_frames=300, size=64, n_balls=8, diameter=8, noise_deg=5.0),
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def video(request: pytest.FixtureRequest) -> Video:
    return simulate(CONFIGS[request.param], seed=7)


def _step_vectors(positions: np.ndarray) -> np.ndarray:
    """positions float32 [T, n, 2] -> moves [T-1, n, 2] in float64."""
    return np.diff(positions.astype(np.float64), axis=0)


def _heading_changes_deg(positions: np.ndarray) -> np.ndarray:
    """Turn between consecutive moves, degrees in (-180, 180]: [T-2, n]; row k is the turn
    taken by the move from frame k+1 to k+2 (so it pairs with ``collided[k+1]``)."""
    moves = _step_vectors(positions)
    angles = np.degrees(np.arctan2(moves[..., 1], moves[..., 0]))  # [T-1, n]
    turns = np.diff(angles, axis=0)
    return (turns + 180.0) % 360.0 - 180.0


def _check_invariants(positions: np.ndarray, collided: np.ndarray, cfg: BallsConfig) -> None:
    radius = cfg.diameter / 2
    step_lengths = np.linalg.norm(_step_vectors(positions), axis=-1)  # [T-1, n]
    np.testing.assert_allclose(step_lengths, cfg.diameter, atol=1e-4)
    assert positions.min() >= radius - 1e-6
    assert positions.max() <= cfg.size - radius + 1e-6
    p = positions.astype(np.float64)
    gaps = p[:, :, None, :] - p[:, None, :, :]  # [T, n, n, 2]
    distances = np.hypot(gaps[..., 0], gaps[..., 1])
    distances[:, np.arange(cfg.n_balls), np.arange(cfg.n_balls)] = np.inf
    assert distances.min() >= cfg.diameter - 1e-6
    turns = _heading_changes_deg(positions)  # [T-2, n]
    free = ~collided[1:]
    assert np.all(np.abs(turns[free]) <= cfg.noise_deg + 1e-3)


# --- simulator ---------------------------------------------------------------------------------


def test_shapes_and_dtypes(video: Video) -> None:
    cfg = video.config
    t, n, s = cfg.n_frames, cfg.n_balls, cfg.size
    assert video.frames.shape == (t, s, s, 3) and video.frames.dtype == np.uint8
    assert video.positions.shape == (t, n, 2) and video.positions.dtype == np.float32
    assert video.colours.shape == (n, 3) and video.colours.dtype == np.uint8
    assert video.collided.shape == (t - 1, n) and video.collided.dtype == np.bool_
    assert video.seed == 7


def test_physics_invariants(video: Video) -> None:
    _check_invariants(video.positions, video.collided, video.config)


def test_collisions_happen_and_turn_beyond_the_noise(video: Video) -> None:
    assert 0.0 < video.collided.mean() < 0.9
    turns = _heading_changes_deg(video.positions)
    assert np.any(np.abs(turns[video.collided[1:]]) > video.config.noise_deg)


def test_long_free_runs_are_straight_lines() -> None:
    cfg = BallsConfig(n_frames=200, size=256, n_balls=1, diameter=8, noise_deg=0.5)
    positions, collided = simulate_positions(cfg, seed=3)
    turns = _heading_changes_deg(positions)
    assert collided.any() and (~collided).sum() > 100
    assert np.abs(turns[~collided[1:]]).max() <= 0.5 + 1e-3


def test_deterministic_for_a_seed() -> None:
    cfg = CONFIGS["small"]
    first, again, other = simulate(cfg, seed=1), simulate(cfg, seed=1), simulate(cfg, seed=2)
    for name in ("frames", "positions", "collided"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert not np.array_equal(first.positions, other.positions)


def test_boxed_in_ball_has_no_move() -> None:
    cfg = BallsConfig(size=256, diameter=32)
    corner = np.array([16.0, 16.0])
    neighbour = corner + 32.0 * np.array([math.cos(math.pi / 4), math.sin(math.pi / 4)])
    rng = np.random.default_rng(0)
    assert _move(corner, 0.0, neighbour[None, :], cfg, rng) is None
    moved = _move(corner, 0.0, np.empty((0, 2)), cfg, rng)
    assert moved is not None and moved[2] is False


def test_crowded_video_backtracks_and_keeps_the_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    boxed_frames = []
    step = balls._step

    def counting_step(*args: object) -> object:
        result = step(*args)  # type: ignore[arg-type]
        boxed_frames.append(result is None)
        return result

    monkeypatch.setattr(balls, "_step", counting_step)
    cfg = CONFIGS["crowded"]
    positions, collided = simulate_positions(cfg, seed=0)
    assert any(boxed_frames)  # some ball got boxed in and frames were redrawn
    _check_invariants(positions, collided, cfg)


@settings(max_examples=25, deadline=None)
@given(
    n_balls=st.integers(1, 4),
    diameter=st.integers(2, 8),
    extra=st.integers(0, 16),
    noise_deg=st.floats(0.5, 180.0),
    n_frames=st.integers(2, 40),
    seed=st.integers(0, 2**31),
)
def test_invariants_hold_for_random_small_configs(
    n_balls: int, diameter: int, extra: int, noise_deg: float, n_frames: int, seed: int
) -> None:
    size = math.ceil(math.sqrt(2 * n_balls * (2 * diameter) ** 2)) + extra
    cfg = BallsConfig(n_frames, size, n_balls, diameter, noise_deg)
    positions, collided = simulate_positions(cfg, seed)
    _check_invariants(positions, collided, cfg)


# --- config ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_frames", 1),
        ("n_frames", 10.0),
        ("n_frames", True),
        ("size", 0),
        ("size", 40),  # too small for three balls of diameter 32
        ("size", "256"),
        ("n_balls", 0),
        ("n_balls", len(PALETTE) + 1),
        ("diameter", 0),
        ("diameter", 8.5),
        ("noise_deg", 0.0),
        ("noise_deg", -2.0),
        ("noise_deg", 181.0),
        ("noise_deg", math.nan),
        ("noise_deg", "2"),
        ("noise_deg", False),
    ],
)
def test_bad_config_names_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"^{field}: "):
        BallsConfig(**{field: value})  # type: ignore[arg-type]


def test_defaults_are_the_papers_and_int_noise_is_accepted() -> None:
    cfg = BallsConfig(noise_deg=2)
    assert (cfg.n_frames, cfg.size, cfg.n_balls, cfg.diameter) == (900, 256, 3, 32)


def test_colours_are_distinct_coral_first() -> None:
    colours = ball_colours(len(PALETTE))
    assert tuple(colours[0]) == (255, 127, 80)
    assert len({tuple(c) for c in colours}) == len(PALETTE)
    with pytest.raises(ValueError, match=r"^n_balls: "):
        ball_colours(len(PALETTE) + 1)


# --- renderer ----------------------------------------------------------------------------------


def _reference_render(
    positions: np.ndarray, size: int, diameter: int, colours: np.ndarray
) -> np.ndarray:
    """Straight from the definition: every pixel, every ball. [T, n, 2] -> [T, size, size, 3]."""
    frames = np.zeros((len(positions), size, size, 3))
    for t, centres in enumerate(positions):
        for (x, y), colour in zip(centres, colours, strict=True):
            for row in range(size):
                for col in range(size):
                    dist = math.hypot(col + 0.5 - x, row + 0.5 - y)
                    coverage = min(max(diameter / 2 + 0.5 - dist, 0.0), 1.0)
                    frames[t, row, col] += np.rint(coverage * colour.astype(float))
    return np.minimum(frames, 255)


def test_render_matches_reference_loop() -> None:
    cfg = BallsConfig(n_frames=3, size=24, n_balls=2, diameter=6)
    positions, _ = simulate_positions(cfg, seed=5)
    colours = ball_colours(2)
    fast = render(positions, cfg.size, cfg.diameter, colours).astype(int)
    slow = _reference_render(positions, cfg.size, cfg.diameter, colours)
    assert np.abs(fast - slow).max() <= 1  # float32 vs float64 rounding at .5


def test_frames_are_the_render_of_positions(video: Video) -> None:
    cfg = video.config
    expected = render(video.positions, cfg.size, cfg.diameter, video.colours)
    np.testing.assert_array_equal(video.frames, expected)
    t = np.arange(cfg.n_frames)[:, None]
    cols = np.floor(video.positions[..., 0]).astype(int)  # pixel holding each centre
    rows = np.floor(video.positions[..., 1]).astype(int)
    np.testing.assert_array_equal(
        video.frames[t, rows, cols], np.broadcast_to(video.colours, (cfg.n_frames, cfg.n_balls, 3))
    )


def test_pixel_centre_convention() -> None:
    """Pixel (row r, column c) has centre (x, y) = (c + 0.5, r + 0.5)."""
    frames = render(np.array([[[10.5, 20.5]]]), 32, 4, ball_colours(1))
    assert tuple(frames[0, 20, 10]) == (255, 127, 80)
    patch = frames[0, 16:25, 6:15, 0]  # 9×9 around pixel (20, 10)
    np.testing.assert_array_equal(patch, patch[::-1, ::-1])
    np.testing.assert_array_equal(patch, patch.T)
    assert frames[0, 20, 8, 0] == 128  # pixel centre 2 px away: half covered
    assert frames[0, ..., 0].sum() == patch.astype(int).sum()  # nothing outside the patch


@pytest.mark.parametrize("diameter", [8, 32])
def test_render_centroid_and_area(diameter: int) -> None:
    size, radius = 4 * diameter, diameter / 2
    rng = np.random.default_rng(0)
    centres = rng.uniform(radius, size - radius, size=(40, 1, 2))  # [T, 1, 2]
    for colour in ball_colours(len(PALETTE)):
        frames = render(centres, size, diameter, colour[None, :])
        channel = int(colour.argmax())
        weight = frames[..., channel].astype(np.float64) / colour[channel]  # [T, H, W] coverage
        grid = np.arange(size) + 0.5
        mass = weight.sum(axis=(1, 2))  # [T]
        x = (weight * grid[None, None, :]).sum(axis=(1, 2)) / mass
        y = (weight * grid[None, :, None]).sum(axis=(1, 2)) / mass
        np.testing.assert_allclose(x, centres[:, 0, 0], atol=0.05)
        np.testing.assert_allclose(y, centres[:, 0, 1], atol=0.05)
        np.testing.assert_allclose(mass, math.pi * radius**2, rtol=0.02)


def test_render_rejects_bad_input() -> None:
    colours = ball_colours(1)
    with pytest.raises(ValueError, match=r"^positions: "):
        render(np.array([[[2.0, 10.0]]]), 32, 8, colours)  # disc crosses the left wall
    with pytest.raises(ValueError, match=r"^positions: "):
        render(np.zeros((3, 2)), 32, 8, colours)
    with pytest.raises(ValueError, match=r"^colours: "):
        render(np.full((1, 2, 2), 10.0), 32, 8, colours)


@pytest.mark.parametrize(
    ("name", "broken", "message"),
    [
        ("frames", lambda v: v.frames.astype(np.float64), "frames: expected uint8 [40, 32, 32, 3]"),
        ("positions", lambda v: v.positions[:-1],
         "positions: expected float32 [40, 3, 2], got float32 [39, 3, 2]"),
        ("colours", lambda v: v.colours.astype(np.int64),
         "colours: expected uint8 [3, 3], got int64 [3, 3]"),
        ("collided", lambda v: v.collided[:, :1],
         "collided: expected bool [39, 3], got bool [39, 1]"),
    ],
)  # fmt: skip
def test_a_video_whose_arrays_do_not_fit_its_config_is_refused(
    name: str, broken: object, message: str
) -> None:
    import dataclasses

    good = simulate(BallsConfig(n_frames=40, size=32, diameter=6), seed=0)
    with pytest.raises(ValueError, match=re.escape(message)):
        dataclasses.replace(good, **{name: broken(good)})  # type: ignore[operator]
