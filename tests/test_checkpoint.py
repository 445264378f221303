"""ssvae_core.checkpoint: a tampered file runs nothing, another config is refused by name."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from ssvae_core import checkpoint, cli, config, loader
from ssvae_core.balls import Video
from ssvae_core.checkpoint import CHECKPOINT_FILE, CheckpointError
from ssvae_core.config import RunConfig
from ssvae_core.train import fit

# `ssvae train` at a tiny size (add the epochs and the checkpoint folder)
TINY_TRAIN = ["--set", "data.n_frames=60", "--set", "data.size=32", "--set", "data.diameter=6",
              "--set", "train.batch_size=10", "--quiet"]  # fmt: skip


class _Payload:
    """What an attacker would put in a checkpoint: unpickling it runs a command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_a_tampered_checkpoint_is_refused_and_runs_nothing(
    tmp_path: Path, tiny_cfg: RunConfig
) -> None:
    marker = tmp_path / "pwned"
    torch.save({"config": checkpoint.fingerprint(tiny_cfg), "x": _Payload(marker)},
               tmp_path / CHECKPOINT_FILE)  # fmt: skip
    with pytest.raises(CheckpointError, match=r"not a valid ssvae checkpoint .*posix\.system"):
        checkpoint.load(tmp_path, tiny_cfg, torch.device("cpu"))
    assert not marker.exists()
    torch.load(tmp_path / CHECKPOINT_FILE, weights_only=False)  # what the old code did
    assert marker.exists()  # the test's payload is real: unchecked loading runs it


@pytest.mark.parametrize(
    "content",
    [b"", b"not a zip", b"PK\x03\x04 truncated", b"\0" * 64],
    ids=["empty", "text", "truncated", "zeros"],
)
def test_a_file_that_is_not_a_checkpoint_says_so(
    tmp_path: Path, tiny_cfg: RunConfig, content: bytes
) -> None:
    """...and never relays torch's advice to load it with weights_only=False."""
    (tmp_path / CHECKPOINT_FILE).write_bytes(content)
    with pytest.raises(
        CheckpointError, match=f"{CHECKPOINT_FILE}: not a valid ssvae checkpoint"
    ) as err:
        checkpoint.load(tmp_path, tiny_cfg, torch.device("cpu"))
    assert "weights_only" not in str(err.value)


def test_a_checkpoint_without_a_fingerprint_is_refused(tmp_path: Path, tiny_cfg: RunConfig) -> None:
    torch.save({"encoder": {}}, tmp_path / CHECKPOINT_FILE)
    with pytest.raises(CheckpointError, match="no config fingerprint"):
        checkpoint.load(tmp_path, tiny_cfg, torch.device("cpu"))


def test_resuming_another_config_names_every_key_that_differs(
    tmp_path: Path, tiny_cfg: RunConfig, tiny_video: Video
) -> None:
    fit(tiny_cfg, checkpoint_dir=str(tmp_path), video=tiny_video)
    before = (tmp_path / CHECKPOINT_FILE).read_bytes()
    other = loader.from_dict({"train": {"lr": 0.01}, "coupling": {"kind": "bilinear"}}, tiny_cfg)
    with pytest.raises(CheckpointError) as err:
        fit(other, checkpoint_dir=str(tmp_path), video=tiny_video)
    message = str(err.value)
    assert "coupling.kind: 'gaussian' in the checkpoint, 'bilinear' now" in message
    assert "train.lr: 0.005 in the checkpoint, 0.01 now" in message
    assert "data." not in message  # only what differs
    assert (tmp_path / CHECKPOINT_FILE).read_bytes() == before  # the old run is left alone


def test_what_leaves_the_weights_alone_may_change_on_resume(
    tmp_path: Path, tiny_cfg: RunConfig, tiny_video: Video
) -> None:
    fit(tiny_cfg, checkpoint_dir=str(tmp_path), video=tiny_video)
    longer = loader.from_dict({"train": {"epochs": 3, "device": "auto"},
                               "probe": {"every_epochs": 2}}, tiny_cfg)  # fmt: skip
    assert len(fit(longer, checkpoint_dir=str(tmp_path), video=tiny_video).history) == 4
    cosine = loader.from_dict({"train": {"lr_schedule": "cosine"}}, tiny_cfg)
    assert "train.epochs" in checkpoint.fingerprint(cosine)  # its schedule depends on epochs


def test_a_default_set_by_its_value_resumes_the_run_that_left_it_unset(
    tmp_path: Path, tiny_cfg: RunConfig, tiny_video: Video
) -> None:
    """'coupling.lengthscale: None in the checkpoint, 0.05 now' refused the same run."""
    assert tiny_cfg.coupling.kind == "gaussian" and tiny_cfg.coupling.lengthscale is None
    fit(tiny_cfg, checkpoint_dir=str(tmp_path), video=tiny_video)
    explicit = {"coupling": {"lengthscale": 0.05}, "train": {"momentum": 0.0, "epochs": 3}}
    resumed = fit(loader.from_dict(explicit, tiny_cfg), checkpoint_dir=str(tmp_path),
                  video=tiny_video)  # fmt: skip
    assert len(resumed.history) == 4
    other = loader.from_dict({"coupling": {"lengthscale": 0.06}}, tiny_cfg)
    with pytest.raises(CheckpointError, match=r"coupling.lengthscale: 0.05 in the checkpoint"):
        fit(other, checkpoint_dir=str(tmp_path), video=tiny_video)


def test_resuming_with_fewer_epochs_than_the_checkpoint_holds_is_refused(
    tmp_path: Path, tiny_cfg: RunConfig, tiny_video: Video
) -> None:
    longer = loader.from_dict({"train": {"epochs": 2}}, tiny_cfg)
    fit(longer, checkpoint_dir=str(tmp_path), video=tiny_video)
    shorter = loader.from_dict({"train": {"epochs": 1}}, tiny_cfg)
    with pytest.raises(CheckpointError, match=r"train.epochs: 1, but the checkpoint in .* is "
                       r"after epoch 2; ask for 2 or more"):  # fmt: skip
        fit(shorter, checkpoint_dir=str(tmp_path), video=tiny_video)
    assert len(fit(longer, checkpoint_dir=str(tmp_path), video=tiny_video).history) == 3


def test_the_command_exits_2_on_another_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny = [*TINY_TRAIN, "--set", "train.epochs=1", "--checkpoint-dir", str(tmp_path)]
    assert cli.main(["train", *tiny]) == 0
    assert cli.main(["train", *tiny, "--set", "train.lr=0.02"]) == 2
    err = capsys.readouterr().err
    assert "train.lr: 0.005 in the checkpoint, 0.02 now" in err and "Traceback" not in err


def test_the_reason_given_is_torchs_reason_never_its_advice() -> None:
    """The forms of torch's weights-only refusal (`torch.serialization`, 2.13): the reason
    may sit on the first line after its prefix, or lines below the advice; a refused global's
    name is the reason wherever it sits, before any other line."""
    from torch.serialization import UNSAFE_MESSAGE

    reason = "torch.nested._internal.nested_tensor must be imported to load this"
    forms = [
        f"Weights only load failed. {reason}\n {UNSAFE_MESSAGE}\n",
        f"Weights only load failed. {UNSAFE_MESSAGE}\nPlease file an issue with the following so "
        f"that we can make `weights_only=True` compatible: WeightsUnpickler error: \n\n{reason}",
    ]
    for message in forms:
        assert checkpoint._reason(RuntimeError(message)) == reason
    refused = "Unsupported global: GLOBAL builtins.exec was not an allowed global by default."
    named = f"Weights only load failed. {reason}\n{UNSAFE_MESSAGE}\nWeightsUnpickler error: "
    named += refused
    assert checkpoint._reason(RuntimeError(named)) == f"WeightsUnpickler error: {refused}"
    assert checkpoint._reason(EOFError()) == "EOFError"


@pytest.mark.parametrize(
    ("spoil", "why"),
    [
        (lambda state: state.pop("history"), "KeyError: 'history'"),
        (lambda state: state.update(history="x"), "TypeError: history: expected a list"),
        (lambda state: state["history"][-1].update(mi_estimate="abc"), "TypeError: history"),
        (lambda state: state["encoder"].popitem(), "RuntimeError: Error(s) in loading state_dict"),
        (lambda state: state.update(optimizer=[]), "(optimizer: expected an optimizer state"),
    ],
    ids=[
        "no history",
        "history a string",
        "a metric a string",
        "an encoder key less",
        "optimizer a list",
    ],
)
def test_a_checkpoint_with_its_fingerprint_but_not_its_state_is_refused(
    tmp_path: Path, tiny_cfg: RunConfig, tiny_video: Video, spoil: Any, why: str
) -> None:
    """The right fingerprint over a state that does not fit (an older ssvae's file, or one
    edited): a `CheckpointError` naming the file, not a traceback from the restore."""
    fit(tiny_cfg, checkpoint_dir=str(tmp_path), video=tiny_video)
    state = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    spoil(state)
    torch.save(state, tmp_path / CHECKPOINT_FILE)
    with pytest.raises(CheckpointError, match=f"{CHECKPOINT_FILE}: not a valid ssvae") as err:
        fit(tiny_cfg, checkpoint_dir=str(tmp_path), video=tiny_video)
    assert why in str(err.value)


def test_a_checkpoint_that_is_a_named_pipe_is_refused_not_waited_on(
    tmp_path: Path, tiny_cfg: RunConfig, refused_not_waited: Any
) -> None:
    fifo = tmp_path / CHECKPOINT_FILE
    os.mkfifo(fifo)  # torch.load's open() would wait for a writer
    message = refused_not_waited(
        fifo, lambda: checkpoint.load(tmp_path, tiny_cfg, torch.device("cpu"))
    )
    assert "not a valid ssvae checkpoint (not a regular" in message


def test_optimiser_moments_of_another_shape_are_refused_at_the_resume(
    tmp_path: Path, tiny_cfg: RunConfig, tiny_video: Video
) -> None:
    """Adam's moments of the first two weights exchanged: the first step after the resume
    failed with a broadcast RuntimeError; now the resume is refused, naming the file."""
    import dataclasses

    cfg = dataclasses.replace(tiny_cfg, train=dataclasses.replace(tiny_cfg.train, optimizer="adam"))
    fit(cfg, checkpoint_dir=str(tmp_path), video=tiny_video)
    state = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    moments = state["optimizer"]["state"]
    assert moments[0]["exp_avg"].shape != moments[1]["exp_avg"].shape
    moments[0], moments[1] = moments[1], moments[0]
    torch.save(state, tmp_path / CHECKPOINT_FILE)
    shape = r"exp_avg: of shape \[6\], but its parameter's is \[6, 3, 3, 3\]\)"
    with pytest.raises(CheckpointError, match=r"checkpoint \(optimizer\.state\.0\." + shape):
        fit(cfg, checkpoint_dir=str(tmp_path), video=tiny_video)


def _with(cfg: RunConfig, **train: Any) -> RunConfig:
    import dataclasses

    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **train))


# The tester's table (a checkpoint with its fingerprint, its optimiser or schedule state
# edited; resumed with more epochs), then SGD's momentum buffer: what the resume did, and the
# key the refusal now names.
DAMAGED: dict[str, tuple[dict[str, Any], Any, str]] = {
    "exp_avg removed (KeyError mid-training)": (
        {"optimizer": "adam"},
        lambda state: state["optimizer"]["state"][0].pop("exp_avg"),
        "optimizer.state.0.exp_avg: missing",
    ),
    "exp_avg int32 (RuntimeError in lerp_)": (
        {"optimizer": "adam"},
        lambda state: state["optimizer"]["state"][0].update(
            exp_avg=state["optimizer"]["state"][0]["exp_avg"].to(torch.int32)
        ),
        "optimizer.state.0.exp_avg: expected a floating-point tensor, got torch.int32",
    ),
    "step -1 (ZeroDivisionError)": (
        {"optimizer": "adam"},
        lambda state: state["optimizer"]["state"][0].update(step=torch.tensor(-1.0)),
        "optimizer.state.0.step: expected a whole number >= 0, got -1.0",
    ),
    "exp_avg sparse (NotImplementedError)": (
        {"optimizer": "adam"},
        lambda state: state["optimizer"]["state"][0].update(
            exp_avg=state["optimizer"]["state"][0]["exp_avg"].to_sparse()
        ),
        "optimizer.state.0.exp_avg: expected a dense tensor, got a torch.sparse_coo one",
    ),
    "base_lrs [5.0] (trained at lr 5.0)": (
        {"optimizer": "adam"},
        lambda state: state["schedule"].update(base_lrs=[5.0]),
        "schedule.base_lrs: 5.0 in the checkpoint, but this run's (train.lr) is 0.005",
    ),
    "momentum_buffer int64": (
        {"optimizer": "sgd", "momentum": 0.9},
        lambda state: state["optimizer"]["state"][1].update(
            momentum_buffer=state["optimizer"]["state"][1]["momentum_buffer"].long()
        ),
        "optimizer.state.1.momentum_buffer: expected a floating-point tensor, got torch.int64",
    ),
}


@pytest.mark.parametrize("case", DAMAGED)
def test_a_damaged_optimiser_or_schedule_state_is_refused_before_training(
    tmp_path: Path, tiny_cfg: RunConfig, tiny_video: Video, case: str
) -> None:
    """The right fingerprint over a damaged optimiser or schedule state: the resume failed
    mid-training (or trained at the file's rate, not the config's); now it is a
    `CheckpointError` naming the file and the key, and the checkpoint is left as it is."""
    settings, spoil, says = DAMAGED[case]
    cfg = _with(tiny_cfg, epochs=1, **settings)
    fit(cfg, checkpoint_dir=str(tmp_path), video=tiny_video)
    state = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    spoil(state)
    torch.save(state, tmp_path / CHECKPOINT_FILE)
    damaged = (tmp_path / CHECKPOINT_FILE).read_bytes()
    with pytest.raises(CheckpointError) as err:
        fit(_with(cfg, epochs=2), checkpoint_dir=str(tmp_path), video=tiny_video)
    message = str(err.value)
    assert message.startswith(f"{tmp_path / CHECKPOINT_FILE}: not a valid ssvae checkpoint ({says}")
    assert "\n" not in message
    assert (tmp_path / CHECKPOINT_FILE).read_bytes() == damaged


@pytest.mark.parametrize("settings", [{"optimizer": "adam"}, {"momentum": 0.9}], ids=str)
def test_a_valid_resume_under_a_cosine_schedule_is_bit_for_bit(
    tmp_path: Path, tiny_cfg: RunConfig, tiny_video: Video, settings: dict[str, Any]
) -> None:
    """The checks on load take nothing away: Adam's moments and step, SGD's momentum and the
    schedule's place come back as saved, the rate recomputed from the config's base."""
    cfg = _with(tiny_cfg, epochs=3, lr_schedule="cosine", **settings)
    saved = tmp_path / "after epoch 1"

    def keep_epoch_1(metrics: dict[str, float], directory: str | None) -> None:
        if metrics["epoch"] == 1:  # reported once its checkpoint is written
            shutil.copytree(str(directory), saved)

    straight = fit(cfg, report=keep_epoch_1, checkpoint_dir=str(tmp_path / "ck"), video=tiny_video)
    resumed = fit(cfg, checkpoint_dir=str(saved), video=tiny_video)
    assert len(resumed.history) == 4
    for a, b in zip(resumed.history[2:], straight.history[2:], strict=True):
        assert {k: v for k, v in a.items() if k != "epoch_seconds"} == {
            k: v for k, v in b.items() if k != "epoch_seconds"
        }
    assert resumed.probe_error_px == straight.probe_error_px


def test_the_command_exits_2_on_a_damaged_schedule_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It trained at lr 5.0, the file's, with the config at 0.005, and exited 0."""
    tiny = [*TINY_TRAIN, "--set", "train.optimizer=adam", "--checkpoint-dir", str(tmp_path)]
    assert cli.main(["train", *tiny, "--set", "train.epochs=1"]) == 0
    state = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    state["schedule"]["base_lrs"] = [5.0]
    torch.save(state, tmp_path / CHECKPOINT_FILE)
    capsys.readouterr()
    assert cli.main(["train", *tiny, "--set", "train.epochs=2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{tmp_path / CHECKPOINT_FILE}: not a valid ssvae checkpoint (schedule.base_lrs" in err


def test_the_same_state_saves_to_the_same_bytes(tmp_path: Path, tiny_cfg: RunConfig) -> None:
    """torch.save names its archive after the file it is given: saved to a temporary file by
    path, each checkpoint held that file's random name."""
    state = {"encoder": {"w": torch.ones(3)}, "history": [{"epoch": 0.0}]}
    first = checkpoint.save(tmp_path / "a", state, tiny_cfg).read_bytes()
    assert checkpoint.save(tmp_path / "b", state, tiny_cfg).read_bytes() == first


def test_an_interrupt_mid_write_is_the_interrupt_and_leaves_the_last_checkpoint(
    tmp_path: Path, tiny_cfg: config.RunConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM inside torch.save: its zip writer, closed half-written, raised 'unexpected pos
    3520 vs 3414' over the interrupt, so `ssvae train` ended in a traceback with exit 1 (seen
    once in CI, in test_sigterm_is_one_line_exit_143_and_leaves_no_temporary_file)."""
    from ssvae_core.errors import Terminated

    checkpoint.save(tmp_path, {"history": []}, tiny_cfg)
    before = (tmp_path / "state.pt").read_bytes()

    def interrupted(obj: object, fh: object) -> None:
        try:
            raise Terminated
        finally:  # as torch's writer does on its way out
            raise RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos")

    monkeypatch.setattr(checkpoint.torch, "save", interrupted)
    with pytest.raises(Terminated):
        checkpoint.save(tmp_path, {"history": [1]}, tiny_cfg)
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]
    assert (tmp_path / "state.pt").read_bytes() == before
