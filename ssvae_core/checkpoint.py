"""A run's checkpoint, ``DIR/state.pt``: written atomically, read without running code.

The file holds the modules' and the optimiser's state, the generator, the history and the
config's `fingerprint`. `load` reads it with ``torch.load(weights_only=True)``, which builds
tensors and plain containers only (a tampered file cannot execute anything), and refuses,
with a `CheckpointError` (exit 2) that names the keys, a checkpoint written for another
config: resuming another lr or another coupling from these weights would label old weights
with a new config. What may differ is what leaves the weights as they are: where the run
executes (``train.device``), how often it is probed, and, under a constant learning rate,
``train.epochs`` (training for longer continues the same run; fewer epochs than the
checkpoint holds is refused).
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ssvae_core import config
from ssvae_core.errors import ConfigError, shown
from ssvae_core.files import replacing

CHECKPOINT_FILE = "state.pt"
RESUMABLE_CHANGES = frozenset({"train.device", "probe.every_epochs"})


class CheckpointError(ConfigError):
    """A checkpoint that is not one, or that belongs to another config."""


def fingerprint(cfg: config.RunConfig) -> dict[str, Any]:
    """Every config key and value (flat, plain types) that a resumed run must share."""
    flat = config.flatten(config.to_dict(cfg))
    free = RESUMABLE_CHANGES | ({"train.epochs"} if cfg.train.lr_schedule == "constant" else set())
    return {key: value for key, value in flat.items() if key not in free}


def save(directory: str | Path, state: dict[str, Any], cfg: config.RunConfig) -> Path:
    """Write `state` and the config's fingerprint to ``directory/state.pt``; the path.

    Written to a temporary file, then renamed: a crash mid-write leaves the previous one.
    """
    path = Path(directory) / CHECKPOINT_FILE
    with replacing(path) as tmp, open(tmp, "wb") as fh:  # a file object: the archive's
        try:  # name is not the temp file's
            torch.save({**state, "config": fingerprint(cfg)}, fh)
        except Exception as err:  # Ctrl-C or SIGTERM mid-write: torch's zip writer, closed
            if isinstance(err.__context__, KeyboardInterrupt):  # half-written, raised its
                raise err.__context__ from None  # own error over it (a traceback, exit 1)
            raise
    return path


def load(
    directory: str | Path, cfg: config.RunConfig, device: torch.device
) -> dict[str, Any] | None:
    """The state in ``directory/state.pt`` (tensors on `device`), or None if there is none.

    CheckpointError: the file is not a checkpoint (or was tampered with), or it was written
    for a config that differs from `cfg` in a key of its `fingerprint`.
    """
    path = Path(directory) / CHECKPOINT_FILE
    if not path.exists():
        return None
    if not path.is_file():  # a named pipe would block torch.load's open() for ever
        raise CheckpointError(f"{path}: not a valid ssvae checkpoint (not a regular file)")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"{path}: not a valid ssvae checkpoint ({_reason(err)})") from None
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict):
        raise CheckpointError(f"{path}: not a valid ssvae checkpoint (no config fingerprint)")
    differences = _differences(state["config"], fingerprint(cfg), config.used(cfg))
    if differences:
        raise CheckpointError(
            f"{path}: written for another config ({'; '.join(differences)}); resume with "
            "the same config, or start in another --checkpoint-dir"
        )
    return state


@contextmanager
def restoring(directory: str | Path) -> Iterator[None]:
    """Around putting a loaded state into the run: one whose keys, shapes or types do not fit
    (a file of an older ssvae with the same fingerprint, say, or one edited) is a
    `CheckpointError` naming the file. What the optimiser and schedule refuse on load
    (`optim`: a `ConfigError` naming the key, ``optimizer.state.0.exp_avg: missing``) is said
    as they say it; any other error with its type. Both before the first step: a state that
    would fail or train wrongly mid-run is refused here (`optim.Optimizer.load_state_dict`)."""
    path = Path(directory) / CHECKPOINT_FILE
    try:
        yield
    except CheckpointError:
        raise
    except ConfigError as err:
        raise CheckpointError(f"{path}: not a valid ssvae checkpoint ({err})") from None
    except (KeyError, IndexError, RuntimeError, ValueError, TypeError, AttributeError) as err:
        why = f"{type(err).__name__}: {_reason(err)}"
        raise CheckpointError(f"{path}: not a valid ssvae checkpoint ({why})") from None


# Torch's weights-only refusal opens with this, then gives the reason (on the same line or
# the next) and advice, which suggests loading with weights_only=False: that would run the
# file's code, so no line that mentions it is shown.
_TORCH_PREFIX = "Weights only load failed."
_TORCH_ADVICE = ("Please file an issue", "Check the documentation", "In PyTorch 2.6")


def _reason(err: BaseException) -> str:
    """The line of a load error that says why: the refused global torch names, else its first
    line that is neither empty nor torch's advice (`_TORCH_ADVICE`, ``weights_only``)."""
    lines = [line.strip().removeprefix(_TORCH_PREFIX).strip() for line in str(err).splitlines()]
    reasons = [
        line for line in lines
        if line and not line.startswith(_TORCH_ADVICE) and "weights_only" not in line
    ]  # fmt: skip
    named = [line for line in reasons if "GLOBAL" in line]
    return (named or reasons or [type(err).__name__])[0][:300]


def _differences(
    saved: dict[str, Any], current: dict[str, Any], defaults: dict[str, Any]
) -> list[str]:
    """``key: saved -> current`` for every key whose value differs (or exists on one side); a
    null (unset) is its default in `defaults` (`config.used`), so ``coupling.lengthscale:
    0.05``, the Gaussian's own, resumes a run that left it unset."""
    missing = object()
    found = []
    for key in sorted(set(saved) | set(current)):
        before, now = saved.get(key, missing), current.get(key, missing)
        default = defaults.get(key, missing)
        if (default if before is None else before) == (default if now is None else now):
            continue
        if before != now:
            old = "(absent)" if before is missing else shown(before, 40)
            new = "(absent)" if now is missing else shown(now, 40)
            found.append(f"{key}: {old} in the checkpoint, {new} now")
    return found
