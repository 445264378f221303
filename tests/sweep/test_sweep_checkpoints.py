"""A trial's checkpoints: none deleted while Ray runs, the superseded ones pruned after."""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("ray")

from sweep_helpers import SMOKE

from ssvae_core.sweep import checkpoints, runner, spec


def _tuner_dir(root: Path, names: dict[str, str | None]) -> Path:
    """A Tuner run's directory as Ray leaves it: trial id -> the checkpoint its saved state
    names (None: a last result without one); each trial with checkpoints 0-3."""
    tuner_dir = root / "grid"
    trial_data = []
    for n, (trial_id, name) in enumerate(names.items()):
        trial = tuner_dir / f"train_trial_{trial_id}_{n}_cell={n}_2026-12-07_10-00-00"
        for index in range(4):
            (trial / f"checkpoint_{index:06d}").mkdir(parents=True)
            (trial / f"checkpoint_{index:06d}" / "state.pt").write_bytes(b"")
        last = {"loss": 1.0} | ({} if name is None else {"checkpoint_dir_name": name})
        trial_data.append([json.dumps({"trial_id": trial_id}), json.dumps({"last_result": last})])
    state = tuner_dir / "experiment_state-2026-12-07_10-00-00.json"
    state.write_text(json.dumps({"trial_data": trial_data}))
    return tuner_dir


def _left(tuner_dir: Path) -> dict[str, list[str]]:
    return {
        trial.name.split("_")[3]: sorted(c.name for c in trial.glob("checkpoint_*"))
        for trial in sorted(tuner_dir.glob("train_trial_*"))
    }


def test_prune_keeps_the_checkpoint_the_saved_state_names_and_the_newer(tmp_path: Path) -> None:
    tuner_dir = _tuner_dir(tmp_path, {"aa_00000": "checkpoint_000002", "aa_00001": None})
    removed = checkpoints.prune(tuner_dir)
    assert [p.name for p in removed] == ["checkpoint_000000", "checkpoint_000001"]
    assert _left(tuner_dir) == {  # a newer one (a driver killed before Ray saved) is kept
        "00000": ["checkpoint_000002", "checkpoint_000003"],
        "00001": [f"checkpoint_{i:06d}" for i in range(4)],  # its state names none: all kept
    }


@pytest.mark.parametrize(
    "damage",
    ["cut short", "a name that is not a checkpoint's", "the named one missing", "two trial dirs"],
)
def test_prune_removes_nothing_where_the_saved_state_is_not_understood(
    tmp_path: Path, damage: str
) -> None:
    tuner_dir = _tuner_dir(tmp_path, {"aa_00000": "checkpoint_000002"})
    state = next(tuner_dir.glob("experiment_state-*.json"))
    if damage == "cut short":
        state.write_text(state.read_text()[:40])
    elif damage == "a name that is not a checkpoint's":
        state.write_text(state.read_text().replace("checkpoint_000002", "../../etc"))
    elif damage == "the named one missing":
        next(tuner_dir.glob("*/checkpoint_000002")).rename(tuner_dir / "elsewhere")
    else:
        (tuner_dir / "train_trial_aa_00000_9_cell=9_2026-12-07_11-00-00").mkdir()
    checkpoints.prune(tuner_dir)
    left = list(tuner_dir.glob("*/checkpoint_*"))
    assert len(left) == (3 if damage == "the named one missing" else 4)


def test_the_pruner_prunes_the_trials_tuner_run_at_most_once_a_period(tmp_path: Path) -> None:
    tuner_dir = _tuner_dir(tmp_path, {"aa_00000": "checkpoint_000001"})
    [trial_dir] = tuner_dir.glob("train_trial_*")
    trial, pruner = SimpleNamespace(path=str(trial_dir)), checkpoints.Pruner()
    pruner.on_checkpoint(iteration=1, trials=[trial], trial=trial, checkpoint=None)
    assert _left(tuner_dir)["00000"] == [f"checkpoint_{i:06d}" for i in (1, 2, 3)]
    state = next(tuner_dir.glob("experiment_state-*.json"))
    state.write_text(state.read_text().replace("checkpoint_000001", "checkpoint_000003"))
    pruner.on_checkpoint(iteration=2, trials=[trial], trial=trial, checkpoint=None)
    assert len(_left(tuner_dir)["00000"]) == 3  # within the period: Ray's state not read
    pruner.last -= checkpoints.PERIOD_S
    pruner.on_checkpoint(iteration=3, trials=[trial], trial=trial, checkpoint=None)
    assert _left(tuner_dir)["00000"] == ["checkpoint_000003"]


@pytest.mark.slow
def test_no_checkpoint_ray_may_restore_from_is_deleted_while_the_sweep_runs(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``num_to_keep=2`` Ray deleted a trial's oldest checkpoint before it saved the
    state naming the next: a driver killed in between left a state naming a checkpoint that
    was gone, and that trial errored on every ``--resume`` (seen in CI). Here Ray saves its
    state at every step and the pruner reads it at every checkpoint: the checkpoint the saved
    state names is there whenever it is looked at, and the older ones go while the trial
    runs (Ray's real state read, not a copy of its format)."""
    import ray
    from ray import tune

    tuner_dir = workdir / "runs" / "grid"

    def six_checkpoints(config: dict) -> None:  # local: Ray's workers cannot import tests
        for epoch in range(6):
            with tempfile.TemporaryDirectory() as work:
                (Path(work) / "state.pt").write_text(str(epoch))
                seen = sorted(p.name for p in tuner_dir.glob("*/checkpoint_*"))
                metrics = {"probe_error_px": 1.0, "final": epoch == 5, "seen": seen}
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(work))
            time.sleep(0.3)

    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "0")  # Ray's state saved at every step
    monkeypatch.setattr(checkpoints, "PERIOD_S", 0.0)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    tuner = runner._tuner(spec.load(SMOKE), six_checkpoints, tuner_dir, {"cell": 0}, None)
    missing: list[str] = []
    looked = threading.Event()

    def look() -> None:  # what a driver killed now would leave for --resume
        while not looked.is_set():
            for name in checkpoints.named(tuner_dir).values():
                if not list(tuner_dir.glob(f"*/{name}")):
                    missing.append(name)
            time.sleep(0.005)

    looker = threading.Thread(target=look)
    looker.start()
    try:
        [result] = tuner.fit()
    finally:
        looked.set()
        looker.join()
    assert missing == []
    seen = result.metrics["seen"]  # before its last epoch: the older ones pruned as it ran
    assert "checkpoint_000004" in seen and "checkpoint_000000" not in seen, seen
    checkpoints.prune(tuner_dir)  # as the runner does after the fit
    [trial] = tuner_dir.glob("six_checkpoints_*")
    assert sorted(c.name for c in trial.glob("checkpoint_*")) == ["checkpoint_000005"]
    assert (trial / "checkpoint_000005" / "state.pt").read_text() == "5"
