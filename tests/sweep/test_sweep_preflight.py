"""`sweep.preflight`: a sweep too big for this machine is refused before Ray starts, naming
the key: its videos, the trials it runs at once, a trial beyond its GPU share (a CUDA device is
faked: this machine has none). No Ray is started here."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ssvae_core import loader, preflight
from ssvae_core.errors import ConfigError
from ssvae_core.sweep import preflight as sweep_preflight
from ssvae_core.sweep import spec as spec_module
from ssvae_core.sweep.spec import SweepSpec

GIB = 2**30
PAPER = "name: s\nbase: {preset: paper, train.device: %s%s}\n"  # 900 frames at 256 px


def sweep(body: str = "", device: str = "cpu", base: str = "") -> SweepSpec:
    return spec_module.parse(PAPER % (device, base) + body)


def test_a_video_beyond_this_machine_is_refused_with_or_without_a_cluster() -> None:
    # 10^6 paper frames: 183 GiB of video; the driver simulates it wherever the trials run
    spec = sweep("grid: {method: [gaussian, bilinear]}\n", base=", data.n_frames: 1000000")
    for local in (True, False):
        with pytest.raises(ConfigError, match=r"^data\.n_frames: the sweep needs about 36\d GiB"):
            sweep_preflight.check_memory(spec, local=local, available=24 * GIB)


def test_each_distinct_video_counts_twice_once_per_cell_sharing_it() -> None:
    """Two seeds of the data: two videos, each in the driver and in Ray's object store; two
    methods on one video: one."""
    two_videos = sweep("grid: {data.seed: [0, 1]}\n")
    one_video = sweep("grid: {method: [gaussian, bilinear]}\n")
    video = preflight.video_bytes(one_video.base.data)
    # 4 videos' worth fits 80 % of 5.1 videos' worth of memory, not of 4.5
    sweep_preflight.check_memory(two_videos, local=False, available=int(5.1 * video))
    with pytest.raises(ConfigError, match=r"^data\.n_frames: .*2 video\(s\)"):
        sweep_preflight.check_memory(two_videos, local=False, available=int(4.5 * video))
    sweep_preflight.check_memory(one_video, local=False, available=int(2.6 * video))
    with pytest.raises(ConfigError, match=r"1 video\(s\)"):
        sweep_preflight.check_memory(one_video, local=False, available=int(2.4 * video))


def test_trials_at_once_count_on_a_sweep_started_here(monkeypatch: pytest.MonkeyPatch) -> None:
    # 2.9 GiB of activations a trial (200 pairs of paper frames): 2 at once need 6.2 GiB with
    # the video, beyond 80 % of 7 GiB; one at a time fits, and so does the same sweep on a
    # cluster (the driver holds only the video)
    monkeypatch.setattr(sweep_preflight.os, "cpu_count", lambda: 2)
    body = "grid: {method: [gaussian, bilinear]}\nresources: {cpu: 1}\n"
    spec = sweep(body, base=", train.batch_size: 200")
    assert sweep_preflight.trials_at_once(spec) == 2
    with pytest.raises(ConfigError, match=r"^train\.batch_size: the sweep .* 2 trial\(s\) at once"):
        sweep_preflight.check_memory(spec, local=True, available=7 * GIB)
    one = sweep(body + "max_concurrent: 1\n", base=", train.batch_size: 200")
    assert sweep_preflight.trials_at_once(one, cores=2) == 1
    sweep_preflight.check_memory(one, local=True, available=7 * GIB)
    sweep_preflight.check_memory(spec, local=False, available=7 * GIB)


def test_trials_at_once_are_what_the_cores_hold_at_most_max_concurrent_and_the_trials() -> None:
    grid = "grid: {train.seed: [0, 1, 2, 3, 4, 5]}\n"
    assert sweep_preflight.trials_at_once(sweep(grid + "resources: {cpu: 1}\n"), cores=4) == 4
    assert sweep_preflight.trials_at_once(sweep(grid + "resources: {cpu: 2}\n"), cores=4) == 2
    assert sweep_preflight.trials_at_once(sweep(grid + "resources: {cpu: 0.5}\n"), cores=4) == 6
    assert sweep_preflight.trials_at_once(sweep(grid + "max_concurrent: 3\n"), cores=16) == 3
    assert sweep_preflight.trials_at_once(sweep(grid + "resources: {cpu: 8}\n"), cores=4) == 1
    fused = "resources: {cpu: 1, fuse: 3}\n"  # 6 cells as 2 Ray trials
    assert sweep_preflight.trials_at_once(sweep(grid + fused), cores=16) == 2
    search = "search: {num_samples: 5, space: {train.lr: {dist: uniform, low: 0.01, high: 0.1}}}\n"
    assert sweep_preflight.trials_at_once(sweep(search), cores=16) == 5
    # one Optuna Tuner run per grid cell, one after another: 5 at once, not 6 x 5
    assert sweep_preflight.trials_at_once(sweep(grid + search), cores=64) == 5


def test_fused_cells_count_as_one_trial_of_k_runs() -> None:
    # 4 seeds fused: one Ray trial with 4 runs' activations (4 x 2.9 GiB); one at a time
    body = "grid: {train.seed: [0, 1, 2, 3]}\nmax_concurrent: 1\n"
    base = ", train.batch_size: 200"
    sweep_preflight.check_memory(sweep(body, base=base), local=True, available=8 * GIB)
    with pytest.raises(ConfigError, match=r"^train\.batch_size: .* 11\.\d GiB"):
        fused = sweep(body + "resources: {fuse: 4}\n", base=base)
        sweep_preflight.check_memory(fused, local=True, available=8 * GIB)


def test_a_search_is_checked_at_the_corners_of_its_space() -> None:
    search = (
        "search: {num_samples: 2, space: {train.batch_size: {dist: int, low: 20, high: %d}}}\n"
        "max_concurrent: 1\n"
    )
    sweep_preflight.check_memory(sweep(search % 100), local=True, available=8 * GIB)
    with pytest.raises(ConfigError, match=r"^train\.batch_size: .*search\.space at"):
        sweep_preflight.check_memory(sweep(search % 600), local=True, available=8 * GIB)
    # a searched data.* key: the trial simulates its own video, counted with the trial
    frames = "search: {num_samples: 2, space: {data.n_frames: {dist: int, low: 100, high: %d}}}\n"
    sweep_preflight.check_memory(sweep(frames % 1000), local=True, available=8 * GIB)
    with pytest.raises(ConfigError, match=r"^data\.n_frames: .*search\.space at"):
        sweep_preflight.check_memory(sweep(frames % 40000), local=True, available=8 * GIB)


def test_a_trial_on_the_gpu_is_checked_against_its_share(fake_gpu: None) -> None:
    # a paper trial on CUDA: 0.16 GiB of video and 0.94 GiB for the probe's 256 frames at a
    # time, beyond 80 % of a quarter of 4 GiB, within 80 % of a half
    quarter = sweep("resources: {gpu: 0.25}\n", device="auto")
    pattern = r"^train\.batch_size: a trial needs .* its resources\.gpu share \(0\.25\) of the "
    with pytest.raises(ConfigError, match=pattern + r"GPU's \(Fake GPU\) 1 GiB.*\(in grid cell"):
        sweep_preflight.check_memory(quarter, local=True, available=24 * GIB)
    half = sweep("resources: {gpu: 0.5}\n", device="auto")
    sweep_preflight.check_memory(half, local=True, available=24 * GIB)
    # without a GPU share an auto trial trains on the CPU: the machine's memory counts
    sweep_preflight.check_memory(sweep(device="auto"), local=True, available=24 * GIB)
    # on a cluster the driver leaves the share to each trial (`trainable`)
    sweep_preflight.check_memory(quarter, local=False, available=24 * GIB)


def test_a_gpu_trials_own_video_counts_on_this_machine(fake_cuda: Callable[..., None]) -> None:
    """A searched data.* key: the trial simulates its video in host memory, on any device."""
    fake_cuda("Huge GPU", 1000 * GIB)
    frames = "search: {num_samples: 1, space: {data.n_frames: {dist: int, low: 100, high: %d}}}\n"
    body = "resources: {gpu: 0.5}\n" + frames
    sweep_preflight.check_memory(sweep(body % 1000, "auto"), local=True, available=8 * GIB)
    with pytest.raises(ConfigError, match=r"^data\.n_frames: the sweep needs .*search\.space at"):
        sweep_preflight.check_memory(sweep(body % 40000, "auto"), local=True, available=8 * GIB)


def test_a_trial_checks_its_own_gpu_share_where_it_runs(fake_gpu: None) -> None:
    from ssvae_core.sweep import trainable

    quarter = sweep("resources: {gpu: 0.25}\n", device="auto")
    cfg = quarter.cells[0].config
    with pytest.raises(ConfigError, match=r"its resources\.gpu share \(0\.25\)"):
        trainable._check_gpu_share(quarter, cfg, {"device": "cuda"})
    trainable._check_gpu_share(quarter, cfg, {"device": "cpu"})  # Ray gave it no GPU
    # no share, yet Ray 2.60 shows the node's GPUs: it plans on no share, and is not refused
    trainable._check_gpu_share(sweep(), cfg, {"device": "cuda"})
    trainable._check_gpu_share(sweep("resources: {gpu: 0.5}\n"), cfg, {"device": "cuda"})
    with pytest.raises(ConfigError, match=r"resources\.gpu share \(0\.5\)"):  # two fused runs
        trainable._check_gpu_share(sweep("resources: {gpu: 0.5}\n"), cfg, {"device": "cuda"}, 2)


def test_the_paper_sweep_fits_a_gpu_at_32_trials(fake_cuda: Callable[..., None]) -> None:
    """paper.yaml's trials at ``gpu: 1/32`` of an 80 GB device (the GPU script's k = 32)."""
    fake_cuda("H100", 80 * 10**9)
    cfg = loader.load("paper", None, ["train.device=cuda"])
    preflight.check_gpu_share(cfg, 1 / 32)
    with pytest.raises(ConfigError):
        preflight.check_gpu_share(cfg, 1 / 64)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("h:6379", ("h", 6379)), ("h", ("h", 6379)), ("ray://h", ("h", 10001)),
        ("ray://h:1234", ("h", 1234)), ("[::1]:6380", ("::1", 6380)), ("[::1]", ("::1", 6379)),
    ],
)  # fmt: skip
def test_an_address_gives_its_host_and_port_or_rays_default(
    address: str, expected: tuple[str, int]
) -> None:
    """'[::1]:6379' kept its brackets as the host, so nothing answered at it (exit 3)."""
    assert sweep_preflight.host_port(address, "--address") == expected


def test_without_an_address_ray_address_is_named_and_else_this_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A local start that failed was blamed on '$RAY_ADDRESS=None'."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert sweep_preflight.ray_address(None) == (None, "Ray (started on this machine)")
    monkeypatch.setenv("RAY_ADDRESS", "h:1")
    assert sweep_preflight.ray_address(None) == ("h:1", "$RAY_ADDRESS=h:1")
    assert sweep_preflight.ray_address("g:2") == ("g:2", "--address g:2")
