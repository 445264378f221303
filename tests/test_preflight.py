"""`preflight`: `check_memory` on a GPU, the run measured against the GPU's memory, not the
machine's (a CUDA device is faked: this machine has none); output folders checked, not made."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ssvae_core import cli, loader, preflight
from ssvae_core.couplings import COUPLINGS, build_coupling
from ssvae_core.errors import ConfigError

GIB = 2**30


def test_a_run_beyond_the_gpus_memory_is_refused_naming_the_key(fake_gpu: None) -> None:
    # 20000 paper frames: 3.7 GiB of video on the GPU, more than 80 % of its 4 GiB; the
    # machine's memory would hold it
    cfg = loader.load("paper", None, ["train.device=cuda", "data.n_frames=20000"])
    assert preflight.on_gpu(cfg)
    with pytest.raises(ConfigError, match=r"^data\.n_frames: .* of the GPU's \(Fake GPU\) 4 GiB"):
        preflight.check_memory(cfg)
    on_cpu = loader.load("paper", None, ["train.device=cpu", "data.n_frames=20000"])
    preflight.check_memory(on_cpu, available=24 * GIB)  # the same run fits the machine
    preflight.check_memory(loader.load("paper", None, ["train.device=cuda"]))  # paper itself


def test_auto_counts_as_the_gpu_only_where_there_is_one(
    fake_gpu: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = loader.load("paper", None, ["train.device=auto", "data.n_frames=20000"])
    with pytest.raises(ConfigError, match="the GPU's"):
        preflight.check_memory(cfg)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not preflight.on_gpu(cfg)
    preflight.check_memory(cfg, available=24 * GIB)


def test_cuda_where_there_is_none_is_check_devices_refusal_not_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`ssvae data` checks memory only: with no CUDA here it is the machine's memory."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = loader.load("paper", None, ["train.device=cuda"])
    assert not preflight.on_gpu(cfg)
    preflight.check_memory(cfg, available=24 * GIB)
    preflight.check_memory(cfg)
    with pytest.raises(ConfigError, match=r"^train\.device: cuda, but torch sees no CUDA"):
        preflight.check_run(cfg)


def test_the_video_is_counted_once_on_a_gpu_twice_on_the_cpu(fake_gpu: None) -> None:
    """On the CPU the simulator's copy and the device copy share the memory; on a GPU only
    the device copy is there."""
    gpu = preflight.estimate(loader.load("paper", None, ["train.device=cuda"]))
    cpu = preflight.estimate(loader.load("paper", None, ["train.device=cpu"]))
    assert cpu["data.n_frames"] == 2 * gpu["data.n_frames"] == 2 * 900 * 256 * 256 * 3


@pytest.mark.parametrize(
    ("sets", "key"),
    [
        (["coupling.kind=concat_mlp", "coupling.hidden=70000"], "coupling.hidden"),
        (["coupling.kind=separable_mlp", "coupling.embed_dim=10000000000"], "coupling.embed_dim"),
    ],
)
def test_an_mlp_critic_beyond_the_machine_is_refused_naming_its_key(
    sets: list[str], key: str
) -> None:
    """Once a torch allocation error (a traceback) at 10^7, and at 70000 an H^2 = 4.9e9
    weights that would swap: the critic's weights were not counted."""
    cfg = loader.load("small", None, sets)
    with pytest.raises(ConfigError, match=rf"^{key}: the run needs about"):
        preflight.check_memory(cfg, available=24 * GIB)
    fits = loader.load("small", None, [sets[0]])  # the default sizes are a few hundred kB
    assert sum(preflight.coupling_bytes(fits).values()) < 2**20
    preflight.check_memory(fits, available=24 * GIB)
    assert preflight.coupling_bytes(loader.load("small", None, [])) == {}  # gaussian: none


def test_a_critics_activations_are_blamed_on_what_made_them_large() -> None:
    """concat_mlp's [B, M, H] activations at its default H: a batch of 4096 is what grew."""
    sets = ["coupling.kind=concat_mlp", "train.batch_size=4096", "data.n_frames=20000"]
    parts = preflight.coupling_bytes(loader.load("small", None, sets))
    assert parts["train.batch_size"] > 1000 * parts["coupling.hidden"]
    with pytest.raises(ConfigError, match=r"^train\.batch_size: the run needs about"):
        preflight.check_memory(loader.load("small", None, sets), available=24 * GIB)


@pytest.mark.parametrize(
    ("sets", "key"),
    [
        (["data.size=3000"], "data.size"),  # was blamed on train.batch_size, at its default
        (["data.n_frames=10000000"], "data.n_frames"),
        (["train.batch_size=100000", "data.n_frames=200000"], "train.batch_size"),
        (["data.size=264", "data.n_frames=2000000"], "data.n_frames"),  # too large at 256
    ],
)
def test_a_run_too_large_is_blamed_on_the_key_that_made_it_large(sets: list[str], key: str) -> None:
    """A frame side beyond every preset's scales the video and the activations alike, so it
    is named rather than the batch or the frames left at their defaults."""
    with pytest.raises(ConfigError, match=rf"^{key}: the run needs about"):
        preflight.check_memory(loader.load("small", None, sets), available=24 * GIB)
    size = preflight.LARGEST["data.size"]
    assert set(preflight.estimate(loader.load("small", None, [f"data.size={size}"]))) == {
        "data.n_frames", "train.batch_size", "encoder.hidden"
    }  # fmt: skip


def test_an_output_folder_is_checked_without_being_made(tmp_path: Path) -> None:
    """A command refused after its --out is checked must not leave folders behind."""
    out = tmp_path / "made" / "a" / "b"
    assert preflight.writable_dir(out, "--out") == out
    assert not (tmp_path / "made").exists() and list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match=r"--out: cannot write to .*f/x \(.*f is a file, not a"):
        preflight.writable_dir(tmp_path / "f" / "x", "--out")
    with pytest.raises(ConfigError, match=r"--out: .*f is a file, not a directory$"):
        preflight.writable_dir(tmp_path / "f", "--out")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match=r"--out: .*dangling is a symbolic link to nothing"):
        preflight.writable_dir(tmp_path / "dangling" / "x", "--out")


@pytest.mark.parametrize(
    "argv",
    [
        ["mi-bench", "--out", "made/a/t.md", "--tasks", "cauchy"],
        ["train", "--out", "made/a", "--checkpoint-dir", "f/x"],
    ],
)
def test_a_refused_command_leaves_no_folder(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f").write_text("")
    assert cli.main(argv) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_an_output_file_that_would_hang_or_fail_at_the_end_is_refused_first(
    tmp_path: Path,
) -> None:
    os.mkfifo(tmp_path / "pipe.png")
    (tmp_path / "dangling.md").symlink_to(tmp_path / "gone" / "x.md")
    for name, problem in [("pipe.png", "is a named pipe"), ("dangling.md", "is a symbolic link "
                          "to nothing"), (".", "is a directory")]:  # fmt: skip
        with pytest.raises(ConfigError, match=f"^--out: .*{problem}$"):
            preflight.output_file(tmp_path / name, "--out")
    assert preflight.output_file(tmp_path / "new" / "x.md", "--out") == tmp_path / "new" / "x.md"
    with pytest.raises(ConfigError, match=r"^--out: cannot write to .* \(File name too long\)"):
        preflight.writable_dir(tmp_path / ("a" * 300) / "x", "--out")  # exists() raises


def test_data_preview_on_a_full_disk_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "full.png").symlink_to("/dev/full")
    tiny = ["--set", "data.n_frames=60", "--set", "data.size=32", "--set", "data.diameter=6",
            "--set", "train.batch_size=10"]  # fmt: skip
    assert cli.main(["data", *tiny, "--preview", str(tmp_path / "full.png")]) == 1
    err = capsys.readouterr().err
    assert "could not write" in err and "No space left" in err and "Traceback" not in err


def test_a_steps_memory_counts_the_frames_its_mode_encodes() -> None:
    """A supervised run encodes B frames a step and an untrained one none: N extra
    negatives, which only SSL draws, made a supervised run 'need' 139 GiB (exit 2 naming
    train.batch_size, where the warning said the run does not train with them)."""
    base = {"data": {"n_frames": 20000}, "objective": {"n_negatives": 19000}}
    size = {}
    for mode in ("ssl", "supervised", "untrained"):
        cfg = loader.from_dict({**base, "train": {"mode": mode}}, loader.PRESETS["paper"])
        size[mode] = sum(preflight.run_bytes(cfg, gpu=False).values())
    assert size["ssl"] > 100 * 2**30 > 2**30 > size["supervised"] >= size["untrained"] > 0


@pytest.mark.parametrize("kind", sorted(COUPLINGS))
def test_every_coupling_with_weights_is_counted_by_the_memory_check(kind: str) -> None:
    """`preflight.coupling_bytes` names its kinds; a new critic with weights and no entry
    there would be estimated at 0 bytes and pass the check whatever its size."""
    cfg = loader.load("small", None, [f"coupling.kind={kind}"])
    dim = 2 * cfg.data.n_balls
    coupling = build_coupling(kind, dim, **cfg.coupling.params())
    weights = sum(p.numel() for p in coupling.parameters()) * 4  # float32
    counted = sum(preflight.coupling_bytes(cfg).values())
    assert counted >= weights or weights <= 4 * dim * dim, (kind, weights, counted)


def test_an_output_name_too_long_for_its_temporary_file_is_refused_before_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file is written as .NAME.xxxxxxxx.tmp, 14 bytes longer: a 246-byte name passed the
    check, and the write failed after the training ('File name too long'). A relative path
    over the limit once made absolute was an OSError traceback."""
    with pytest.raises(ConfigError, match=r"^--figure: .* is written as \.NAME\.xxxxxxxx\.tmp"):
        preflight.output_file(tmp_path / ("b" * 242), "--figure")
    preflight.output_file(tmp_path / ("b" * 241), "--figure")  # 255 bytes with the suffix
    deep = tmp_path / "/".join(["d" * 200] * 19)  # 3,800 bytes: made, then entered
    os.makedirs(deep)
    monkeypatch.chdir(deep)
    with pytest.raises(ConfigError, match=r"^--out: "):
        preflight.output_file("/".join(["e" * 200] * 2) + "/f", "--out")
