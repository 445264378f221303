"""Which of a Tuner run's trial checkpoints to keep: all of them while it runs, then the
ones Ray's saved state may still restore from.

Ray's ``CheckpointConfig(num_to_keep=k)`` deletes a trial's oldest checkpoint as it takes
the newest, and saves its state (``experiment_state-*.json``, naming each trial's latest
checkpoint) only after: a driver killed in between leaves a state naming a checkpoint that
is gone, and that trial errored on every ``--resume`` ("Could not recover from checkpoint as
it does not exist on storage anymore"). So Ray deletes none (``KEEP``), and `prune` removes
a trial's checkpoints older than the one Ray's newest saved state names: as trials
checkpoint (`Pruner`, a driver callback; Ray saves its state every 10 s or so) and once a
Tuner run is over. A trial holds the few checkpoints taken since Ray last saved its state
(one is ``state.pt``, the model and optimiser: 20-170 kB for the centre-of-mass encoder).

Only the state's JSON is read (never its pickles): each trial's id and the
``checkpoint_dir_name`` of its last result.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import time
from pathlib import Path
from typing import Any

from ray import tune

log = logging.getLogger(__name__)

KEEP = None  # CheckpointConfig(num_to_keep=KEEP): every one, until `prune`
INDEX = re.compile(r"checkpoint_(\d+)")
PERIOD_S = 10.0  # `Pruner` reads Ray's state at most this often (Ray saves it about as often)


def named(tuner_dir: Path) -> dict[str, str]:
    """Trial id -> the checkpoint (``checkpoint_000003``) the newest saved state of the Tuner
    run at `tuner_dir` restores it from; {} where that state is missing or unreadable."""
    newest = max(tuner_dir.glob("experiment_state-*.json"), default=None)  # names end in time
    if newest is None:
        return {}
    try:
        trials = json.loads(newest.read_bytes())["trial_data"]
        found = {}
        for trial, metadata in trials:
            last = json.loads(metadata).get("last_result") or {}
            if isinstance(last.get("checkpoint_dir_name"), str):
                found[str(json.loads(trial)["trial_id"])] = last["checkpoint_dir_name"]
        return found
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def prune(tuner_dir: Path) -> list[Path]:
    """Remove each trial's checkpoints older than the one the saved state names (`named`);
    -> those removed. A trial the state does not name, or whose directory is not found
    once, keeps all of its own; one that cannot be removed is a warning (the sweep's results
    are written by then)."""
    removed = []
    for trial_id, keep in named(tuner_dir).items():
        matched = INDEX.fullmatch(keep)
        dirs = [d for d in tuner_dir.glob(f"*_{trial_id}_*") if d.is_dir()]
        if matched is None or len(dirs) != 1 or not (dirs[0] / keep).is_dir():
            continue
        for checkpoint in dirs[0].glob("checkpoint_*"):
            index = INDEX.fullmatch(checkpoint.name)
            older = index is not None and int(index.group(1)) < int(matched.group(1))
            if older and checkpoint.is_dir() and not checkpoint.is_symlink():
                try:
                    shutil.rmtree(checkpoint)
                except OSError as err:
                    log.warning("a superseded checkpoint is left: %s", err)
                    continue
                removed.append(checkpoint)
    return sorted(removed)


class Pruner(tune.Callback):
    """`prune` the Tuner run a trial that just checkpointed belongs to, at most once per
    ``PERIOD_S`` (a Ray Tune driver callback; the run's directory is found from the trial,
    so a sweep moved elsewhere and resumed there prunes there)."""

    def __init__(self) -> None:
        self.last = -math.inf

    def on_checkpoint(
        self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any
    ) -> None:
        now = time.monotonic()
        if now - self.last >= PERIOD_S and trial.path:
            self.last = now
            prune(Path(trial.path).parent)
