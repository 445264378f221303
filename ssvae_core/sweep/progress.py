"""Live progress of a sweep: one short line per trial epoch, completion and error.

Ray's own console output (a status table every 30 s and a box per trial) is turned off in
the runner; these lines say the same per trial, e.g.::

    [  41s] grid | method=gaussian, train.seed=1 | epoch 2 | probe 3.54 px | loss 1.07
    [  43s] grid | method=gaussian, train.seed=1 | ok: 3.54 px in 6 s   (3 of 4 done)
"""

from __future__ import annotations

import math
import time
from typing import Any

from ray import tune

from ssvae_core.sweep.spec import SweepSpec


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


class Progress(tune.Callback):
    """Print trial events of the Tuner run `tuner_run` of `spec` (a Ray Tune driver callback)."""

    def __init__(self, spec: SweepSpec, tuner_run: str) -> None:
        self.spec, self.tuner_run, self.started = spec, tuner_run, time.monotonic()
        self.total = spec.search.num_samples if spec.search else len(spec.groups)

    def setup(self, *args: Any, **info: Any) -> None:
        """At the start of every fit, a restored one too: the clock starts now."""
        self.started = time.monotonic()

    def _line(self, trial: Any, text: str) -> None:
        params = self.spec.trial_params(trial.config)
        label = ", ".join(f"{k}={_fmt(v)}" for k, v in params.items()) or trial.trial_id
        members = () if self.spec.search else self.spec.members(int(trial.config["cell"]))
        if len(members) > 1:  # a fused trial's figures are its members' mean: every one named
            each = [dict(self.spec.cells[m].params) for m in members]
            values = {
                k: "|".join(dict.fromkeys(_fmt(p.get(k, "-")) for p in each)) for k in each[0]
            }
            label = ", ".join(f"{k}={v}" for k, v in values.items())
            label += f" (fused: the mean of {len(members)})"
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:5.0f}s] {self.tuner_run} | {label} | {text}", flush=True)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        if result.get("final"):
            return
        text = f"epoch {result.get('epoch')}"
        for key, label, unit in (("probe_error_px", "probe", " px"), ("loss", "loss", "")):
            value = result.get(key)
            if isinstance(value, float) and math.isfinite(value):  # measured this epoch
                text += f" | {label} {value:.3g}{unit}"
        self._line(trial, text)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        done = _done(trials, trial)
        result = trial.last_result or {}
        status = result.get("status", "?") if result.get("final") else "stopped"
        seconds = result.get("time_total_s", math.nan)
        px = result.get("probe_error_px", math.nan)
        self._line(
            trial, f"{status}: {px:.2f} px in {seconds:.0f} s   ({done} of {self.total} done)"
        )

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        done = _done(trials, trial)
        self._line(trial, f"ERROR ({done} of {self.total} done): {trial.error_file}")


def _done(trials: list, trial: Any) -> int:
    """Trials finished, `trial` among them: Ray marks a trial finished after its completion
    callback but before its error callback."""
    return sum(t.is_finished() or t is trial for t in trials)
