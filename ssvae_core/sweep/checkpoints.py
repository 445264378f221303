"""Which of a Tuner run's trial checkpoints to keep: those Ray's saved state may still
restore a trial from, and the ones taken since.

Ray's ``CheckpointConfig(num_to_keep=k)`` deletes a trial's oldest checkpoint as it takes
the newest, and saves its state (``experiment_state-*.json``, naming each trial's latest
checkpoint) only after: a driver killed in between leaves a state naming a checkpoint that
is gone, and that trial errors on every ``--resume`` ("Could not recover from checkpoint as
it does not exist on storage anymore"). So Ray deletes none (``KEEP``), and `prune` removes
a trial's checkpoints older than the one before the one Ray's newest saved state names (a
state's last result can name checkpoint N while the checkpoint manager Ray restores from
still holds N-1): as trials checkpoint (`Pruner`, a driver callback, paced as Ray paces its
own saves) and once a Tuner run is over. A trial holds two checkpoints and those taken
since Ray last saved its state (one is ``state.pt``, the model and optimiser: 20-170 kB for
the centre-of-mass encoder). Before ``--resume``, `unsaved` removes the newer: Ray writes
the next checkpoints over them.

Only the state's JSON is read (never its pickles): each trial's id and the
``checkpoint_dir_name`` of its last result (the trainable checkpoints with every report).
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

log = logging.getLogger(__name__)

KEEP = None  # CheckpointConfig(num_to_keep=KEEP): every one, until `prune`
INDEX = re.compile(r"checkpoint_(\d+)")
# Ray's trial id in its trial folder's name, ``{trainable}_{id}_{index}_{params}_{date}``: a
# grid's (``590e0_00003``) or a searcher's (``4497fae4``)
TRIAL_ID = re.compile(r"_([0-9a-f]{5}_\d{5}|[0-9a-f]{8})_\d+_")
PERIOD_S = 10.0  # `Pruner` reads Ray's state at most this often (Ray saves it about as often)


def saved(tuner_dir: Path) -> dict[str, int]:
    """Trial id -> the index of the checkpoint (3: ``checkpoint_000003``) the last result in
    the newest saved state of the Tuner run at `tuner_dir` names, -1 for a trial with no
    result yet; {} where that state is missing or cannot be read. A trial whose last result
    names no checkpoint is left out (Ray may restore it from any earlier one)."""
    newest = max(tuner_dir.glob("experiment_state-*.json"), default=None)  # names end in time
    if newest is None:
        return {}
    try:
        found = {}
        for trial, metadata in json.loads(newest.read_bytes())["trial_data"]:
            last = json.loads(metadata).get("last_result") or {}
            name = last.get("checkpoint_dir_name")
            index = INDEX.fullmatch(name) if isinstance(name, str) else None
            if name is not None and index is None:
                return {}  # a name not Ray's: nothing is judged by it
            if index is not None or not last:
                found[str(json.loads(trial)["trial_id"])] = int(index.group(1)) if index else -1
        return found
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _remove(tuner_dir: Path, drop: Callable[[int, int], bool], what: str) -> list[Path]:
    """Remove the checkpoints ``checkpoint_<i>`` of each trial `saved` knows, for which
    ``drop(i, named)``, in its one folder (of those with its id, the one holding the named
    checkpoint: a trial made again on a resume gets a folder of a new date); -> those
    removed. One that cannot be removed is a warning."""
    dirs: dict[str, list[Path]] = {}
    for path in tuner_dir.iterdir():
        if (match := TRIAL_ID.search(path.name)) and path.is_dir() and not path.is_symlink():
            dirs.setdefault(match.group(1), []).append(path)
    removed = []
    for trial_id, named in saved(tuner_dir).items():
        found = dirs.get(trial_id, [])  # two: one made again on a resume (a new date)
        if named >= 0:
            found = [d for d in found if (d / f"checkpoint_{named:06d}").is_dir()]
        if len(found) != 1:
            continue
        [trial_dir] = found
        for checkpoint in trial_dir.glob("checkpoint_*"):
            index = INDEX.fullmatch(checkpoint.name)
            if index is None or not drop(int(index.group(1)), named) or checkpoint.is_symlink():
                continue
            try:
                shutil.rmtree(checkpoint)
            except OSError as err:
                log.warning("%s checkpoint is left: %s", what, err)
                continue
            removed.append(checkpoint)
    return sorted(removed)


def prune(tuner_dir: Path) -> list[Path]:
    """Remove each trial's checkpoints older than the one before the one its last result
    names (`saved`); -> those removed. Ray restores a trial from the one the last result
    names or, while its save of that one is still under way, the one before (the state
    saved then names the newer in the result, the older in its checkpoint manager)."""
    return _remove(tuner_dir, lambda index, named: 0 <= index < named - 1, "a superseded")


def unsaved(tuner_dir: Path) -> list[Path]:
    """Before ``--resume``: remove each trial's checkpoints newer than the one its last
    result in Ray's saved state names (all of them for a trial with no result yet): taken
    after Ray last saved it; -> those removed. Ray restores the trial from the named one (or
    the one before, `prune`) and writes the next ones into the same folders over what is
    there, so a file the new one lacks would outlive it; their epochs are trained again.
    The named one itself may be written over: the trainable writes the same files each
    time (its MLflow backlog an empty file when there is none, `runlog`)."""
    return _remove(tuner_dir, lambda index, named: index > named, "an unsaved")


class Pruner(tune.Callback):
    """`prune` the Tuner run a trial that just checkpointed belongs to, at most once per
    ``PERIOD_S``, or per 19 times its last prune took, as Ray paces its own saves: 5 % of the
    driver's time at most, however large its state grows (a Ray Tune driver callback; the
    run's directory is found from the trial, so a sweep moved elsewhere and resumed there
    prunes there)."""

    def __init__(self) -> None:
        self.last, self.wait = -math.inf, PERIOD_S

    def on_checkpoint(
        self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any
    ) -> None:
        now = time.monotonic()
        if now - self.last >= self.wait and trial.path:
            try:  # Ray records the checkpoint after its callbacks, and not if one raises
                prune(Path(trial.path).parent)
            except Exception as err:
                log.warning("superseded checkpoints left in %s: %r", trial.path, err)
            self.last = time.monotonic()
            self.wait = max(PERIOD_S, 19 * (self.last - now))
