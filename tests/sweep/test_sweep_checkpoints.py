"""A trial's checkpoints: none deleted while Ray runs, the superseded ones pruned after."""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("ray")

from sweep_helpers import SMOKE

from ssvae_core.sweep import checkpoints, runner, spec

NO_RESULT = "no result"  # `_tuner_dir`: a trial that has reported nothing yet


def _tuner_dir(root: Path, names: dict[str, str | None]) -> Path:
    """A Tuner run's directory as Ray leaves it: trial id -> the checkpoint its last result
    in the saved state names (None: a result without one; NO_RESULT: no result yet); each
    trial with checkpoints 0-3."""
    tuner_dir = root / "grid"
    trial_data = []
    for n, (trial_id, name) in enumerate(names.items()):
        trial = tuner_dir / f"train_trial_{trial_id}_{n}_cell={n}_2026-12-07_10-00-00"
        for index in range(4):
            (trial / f"checkpoint_{index:06d}").mkdir(parents=True)
            (trial / f"checkpoint_{index:06d}" / "state.pt").write_bytes(b"")
        last = {"loss": 1.0} | ({} if name is None else {"checkpoint_dir_name": name})
        metadata = {"last_result": {} if name == NO_RESULT else last}
        trial_data.append([json.dumps({"trial_id": trial_id}), json.dumps(metadata)])
    state = tuner_dir / "experiment_state-2026-12-07_10-00-00.json"
    state.write_text(json.dumps({"trial_data": trial_data}))
    return tuner_dir


def _left(tuner_dir: Path) -> dict[str, list[int]]:
    """Trial -> the indices of the checkpoints left."""
    return {
        trial.name.split("_")[3]: sorted(int(c.name[-6:]) for c in trial.glob("checkpoint_*"))
        for trial in sorted(tuner_dir.glob("train_trial_*"))
    }


def test_prune_keeps_the_checkpoint_the_saved_state_names_the_one_before_and_the_newer(
    tmp_path: Path,
) -> None:
    """Ray restores a trial from the checkpoint its last result names or, while the save of
    that one is under way, the one before (seen in states Ray wrote here)."""
    names = {"ab0de_00000": "checkpoint_000003", "ab0de_00001": None, "ab0de_00002": NO_RESULT}
    tuner_dir = _tuner_dir(tmp_path, names)
    removed = checkpoints.prune(tuner_dir)
    assert [p.name for p in removed] == ["checkpoint_000000", "checkpoint_000001"]
    assert _left(tuner_dir) == {"00000": [2, 3], "00001": [0, 1, 2, 3], "00002": [0, 1, 2, 3]}
    (tuner_dir / "train_trial_ab0de_00000_0_cell=0_2026-12-07_10-00-00/checkpoint_000009").mkdir()
    assert checkpoints.prune(tuner_dir) == []  # one taken after Ray saved its state is kept


def test_a_searchers_trial_ids_and_a_trial_made_again_on_a_resume_are_found(
    tmp_path: Path,
) -> None:
    """A searcher names trials ``4497fae4``, not ``590e0_00003``: none of an Optuna sweep's
    checkpoints was pruned. A trial made again on a resume gets a folder of a new date."""
    tuner_dir = _tuner_dir(tmp_path, {"4497fae4": "checkpoint_000003", "0c1d2e3f": None})
    again = tuner_dir / "train_trial_4497fae4_0_cell=0_2026-12-07_11-00-00" / "checkpoint_000000"
    again.mkdir(parents=True)  # the same id, a later life that has not reached checkpoint 3
    removed = checkpoints.prune(tuner_dir)
    assert [(p.parent.name[12:22], p.name[-1]) for p in removed] == [
        ("4497fae4_0", "0"),  # the folder that holds the one named: its first life's
        ("4497fae4_0", "1"),
    ]
    assert again.is_dir() and len(list(tuner_dir.glob("*0c1d2e3f*/checkpoint_*"))) == 4


def test_before_a_resume_the_checkpoints_taken_after_ray_saved_its_state_go(
    tmp_path: Path,
) -> None:
    """Ray restores a trial from the checkpoint its state names (or the one before) and
    writes the next ones into the same folders, over what is there: a file the new one
    lacks would outlive it."""
    names = {"ab0de_00000": "checkpoint_000001", "ab0de_00001": None, "ab0de_00002": NO_RESULT}
    tuner_dir = _tuner_dir(tmp_path, names)
    removed = checkpoints.unsaved(tuner_dir)
    assert len(removed) == 2 + 4
    assert _left(tuner_dir) == {
        "00000": [0, 1],
        "00001": [0, 1, 2, 3],  # a result without a checkpoint: Ray may restore any of them
        "00002": [],  # no result yet: Ray starts it again from nothing
    }


@pytest.mark.parametrize(
    "damage",
    ["cut short", "a name that is not a checkpoint's", "the named one missing", "two trial dirs"],
)
@pytest.mark.parametrize("remove", [checkpoints.prune, checkpoints.unsaved])
def test_nothing_is_removed_where_the_saved_state_is_not_understood(
    tmp_path: Path, damage: str, remove: Callable[[Path], list[Path]]
) -> None:
    tuner_dir = _tuner_dir(tmp_path, {"ab0de_00000": "checkpoint_000002"})
    state = next(tuner_dir.glob("experiment_state-*.json"))
    if damage == "cut short":
        state.write_text(state.read_text()[:40])
    elif damage == "a name that is not a checkpoint's":
        state.write_text(state.read_text().replace("checkpoint_000002", "../../etc"))
    elif damage == "the named one missing":
        next(tuner_dir.glob("*/checkpoint_000002")).rename(tuner_dir / "elsewhere")
    else:  # both holding the one named: which is Ray's cannot be told
        again = tuner_dir / "train_trial_ab0de_00000_9_cell=9_2026-12-07_11-00-00"
        (again / "checkpoint_000002").mkdir(parents=True)
    assert remove(tuner_dir) == []
    left = list(tuner_dir.glob("*/checkpoint_*"))
    assert len(left) == {"the named one missing": 3, "two trial dirs": 5}.get(damage, 4)


def test_the_pruner_prunes_the_trials_tuner_run_at_most_once_a_period(tmp_path: Path) -> None:
    tuner_dir = _tuner_dir(tmp_path, {"ab0de_00000": "checkpoint_000002"})
    [trial_dir] = tuner_dir.glob("train_trial_*")
    trial, pruner = SimpleNamespace(path=str(trial_dir)), checkpoints.Pruner()
    pruner.on_checkpoint(iteration=1, trials=[trial], trial=trial, checkpoint=None)
    assert _left(tuner_dir)["00000"] == [1, 2, 3]
    state = next(tuner_dir.glob("experiment_state-*.json"))
    state.write_text(state.read_text().replace("checkpoint_000002", "checkpoint_000003"))
    pruner.on_checkpoint(iteration=2, trials=[trial], trial=trial, checkpoint=None)
    assert _left(tuner_dir)["00000"] == [1, 2, 3]  # within the period: Ray's state not read
    pruner.last -= checkpoints.PERIOD_S
    pruner.on_checkpoint(iteration=3, trials=[trial], trial=trial, checkpoint=None)
    assert _left(tuner_dir)["00000"] == [2, 3]


def test_the_pruner_waits_longer_after_a_slow_prune(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray's state of a large grid is large: reading it every 10 s on Ray's driver thread
    would slow the whole sweep. A prune that took 2 s waits 38 s for the next."""
    clock = iter([100.0, 102.0, 130.0, 140.0, 140.5])  # now, then the prune's end: 2 s
    monkeypatch.setattr(checkpoints.time, "monotonic", lambda: next(clock))
    calls: list[Path] = []
    monkeypatch.setattr(checkpoints, "prune", lambda tuner_dir: calls.append(tuner_dir) or [])
    trial, pruner = SimpleNamespace(path=str(tmp_path / "grid" / "t")), checkpoints.Pruner()
    pruner.on_checkpoint(iteration=1, trials=[trial], trial=trial, checkpoint=None)  # at 100
    assert pruner.wait == 38.0
    pruner.on_checkpoint(iteration=2, trials=[trial], trial=trial, checkpoint=None)  # 130: no
    pruner.on_checkpoint(iteration=3, trials=[trial], trial=trial, checkpoint=None)  # 140: yes
    assert calls == [tmp_path / "grid"] * 2 and pruner.wait == checkpoints.PERIOD_S


def test_the_pruner_never_raises_into_ray(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Ray records a checkpoint after its callbacks, and not at all if one raises: its state
    would go on naming the older one."""

    def broken(tuner_dir: Path) -> list[Path]:
        raise PermissionError(13, "Permission denied", str(tuner_dir))

    monkeypatch.setattr(checkpoints, "prune", broken)
    trial = SimpleNamespace(path=str(tmp_path / "grid" / "trial"))
    checkpoints.Pruner().on_checkpoint(iteration=1, trials=[trial], trial=trial, checkpoint=None)
    assert "superseded checkpoints left in" in caplog.text and "Permission denied" in caplog.text


@pytest.mark.slow
def test_the_pruner_reads_rays_own_state_while_the_sweep_runs(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray saves its state at every step and the pruner reads it at every checkpoint: the
    checkpoint each saved state would restore from (read with Ray's own class) is there
    whenever it is looked at, the older ones go while the trial runs, and the last two
    stay. (That Ray itself deletes none is the next test's.)"""
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
    looks: list[str] = []  # the checkpoint Ray would restore from, each time looked at
    missing: list[str] = []  # ... and found gone: pruned under the state that names it
    looked = threading.Event()

    def look() -> None:  # what a driver killed now would leave for --resume
        from ray.tune.trainable.metadata import _TrainingRunMetadata

        while not looked.is_set():
            try:  # the newest saved state, as Ray's restore reads it (a half-copied one: next)
                newest = max(tuner_dir.glob("experiment_state-*.json"))
                trial_data = json.loads(newest.read_bytes())["trial_data"]
            except (ValueError, OSError):
                continue
            for _, metadata in trial_data:
                manager = _TrainingRunMetadata.from_json_state(metadata).checkpoint_manager
                if (latest := manager.latest_checkpoint_result) is not None:
                    looks.append(Path(latest.checkpoint.path).name)
                    if not Path(latest.checkpoint.path).is_dir():  # Ray's restore would fail
                        missing.append(latest.checkpoint.path)
            time.sleep(0.002)

    looker = threading.Thread(target=look)
    looker.start()
    try:
        [result] = tuner.fit()
    finally:
        looked.set()
        looker.join()
    assert missing == [] and len(set(looks)) >= 4, (missing, sorted(set(looks)))
    seen = result.metrics["seen"]  # before its last epoch: the older ones pruned as it ran
    assert "checkpoint_000004" in seen and "checkpoint_000000" not in seen, seen
    checkpoints.prune(tuner_dir)  # as the runner does after the fit
    [trial] = tuner_dir.glob("six_checkpoints_*")
    assert sorted(c.name for c in trial.glob("checkpoint_*")) == [
        "checkpoint_000004",
        "checkpoint_000005",
    ]
    assert (trial / "checkpoint_000005" / "state.pt").read_text() == "5"


@pytest.mark.slow
def test_ray_deletes_no_checkpoint_its_saved_state_names(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race `checkpoints` closes, made certain: Ray saves its state only when it must,
    and after each checkpoint Ray registers (where ``num_to_keep`` deletes) the one its
    newest saved state names must still be there, or a driver killed now leaves a trial no
    ``--resume`` can restore. With ``num_to_keep=2`` the third checkpoint deleted it."""
    import ray
    from ray import tune
    from ray.tune.experiment.trial import Trial

    tuner_dir = workdir / "runs" / "grid"
    gone: list[str] = []
    registered = Trial.on_checkpoint

    def on_checkpoint(trial: Trial, result: object) -> None:
        registered(trial, result)
        [named] = checkpoints.saved(tuner_dir).values() or [-1]
        folders = list(tuner_dir.glob(f"*/checkpoint_{named:06d}"))
        if named >= 0 and not folders:
            gone.append(f"checkpoint_{named:06d}")

    def four_checkpoints(config: dict) -> None:  # local: Ray's workers cannot import tests
        for epoch in range(4):
            with tempfile.TemporaryDirectory() as work:
                (Path(work) / "state.pt").write_text(str(epoch))
                metrics = {"probe_error_px": 1.0, "final": epoch == 3}
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(work))

    monkeypatch.setattr(Trial, "on_checkpoint", on_checkpoint)
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "1000")  # saved only when Ray must
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    [result] = runner._tuner(spec.load(SMOKE), four_checkpoints, tuner_dir, {"cell": 0}, None).fit()
    assert result.error is None and gone == [], gone
