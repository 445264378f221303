"""What a run measures: every metric's name, written once, and the measures computed here.

`METRICS` names each number a run reports (in its history rows, its `RunResult.metrics`, a
sweep's trials table, MLflow) with its direction: ``min`` or ``max`` for those a search may
optimise, None for those that are only reported. The rest are the small computations on a
run's outputs that more than one place needs.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Metric:
    doc: str
    mode: str | None = None  # "min" / "max": a search or scheduler may optimise it


METRICS: dict[str, Metric] = {
    "probe_error_px": Metric("mean distance of decoded to true centres, held-out frames", "min"),
    "probe_r2": Metric("R^2 of the linear probe on held-out frames", "max"),
    "mi_estimate": Metric("the estimator's MI estimate, mean over an epoch's steps (nats)", "max"),
    "loss": Metric("training loss, mean over an epoch's steps", "min"),
    "lengthscale": Metric("a distance coupling's learned L (mean over dimensions)"),
    "sigma": Metric("a stochastic encoder's sigma (mean over dimensions)"),
    "z_step": Metric("RMS change of the representation between frames (`representation_step`)"),
    "elbo": Metric("InfoNCE ELBO of eq. 20 after training (nats, `elbo.evaluate_elbo`)"),
    "elbo_gap": Metric("Jensen gap of the ELBO to the log evidence, eq. 18 (nats)"),
    "elbo_at_mean": Metric("the InfoNCE terms at the mean representation (nats)"),
}
SEARCHABLE: dict[str, str] = {name: m.mode for name, m in METRICS.items() if m.mode is not None}
ELBO_KEYS = ("elbo", "elbo_gap", "elbo_at_mean")


def representation_step(z: np.ndarray) -> float:
    """RMS per-coordinate change of z between consecutive frames; z [T, D] -> a float.

    The maximum-likelihood L of the prior P(z'|z) = N(z, L^2 I) of eq. 35 for this
    representation: what a learned lengthscale would match if the prior fitted the motion.
    """
    return float(np.sqrt(np.mean(np.diff(z.astype(np.float64), axis=0) ** 2)))


def position_step(positions: np.ndarray, size: int) -> float:
    """`representation_step` of the true centres in encoder coordinates; positions [T, K, 2] px.

    The encoder's coordinates span [-1, 1] over the image (`encoder.CentreOfMassEncoder`), so
    one pixel is 2 / size: this is the L of eq. 35 that the balls' own motion implies.
    """
    return representation_step(positions.reshape(len(positions), -1) * (2.0 / size))


def learned_lengthscale(coupling: Any) -> float | None:
    """A coupling's current lengthscale L (mean over dimensions), if it has one."""
    value = getattr(coupling, "lengthscale", None)
    return None if value is None else float(value.detach().mean())


def learned_sigma(encoder: Any) -> float | None:
    """A stochastic encoder's current sigma (mean over dimensions); None if deterministic."""
    value = getattr(encoder, "sigma", None)
    return None if value is None else float(value.detach().mean())


def finite_or_none(value: Any) -> Any:
    """NaN and ±inf as None (JSON has no NaN); anything else unchanged."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def as_numbers(values: Any) -> Any:
    """A column read from a table as floats: NaN where a cell is no number, ±inf where it is
    beyond a float (pandas reads a long integer as a Python int, which ``to_numeric`` refused
    with an OverflowError). `values` a pandas Series (or None: NaN)."""
    import pandas as pd  # here: training imports this module without pandas

    try:
        return pd.to_numeric(values, errors="coerce")
    except OverflowError:
        return pd.to_numeric(values.astype(str), errors="coerce")


def json_ready(values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` with every non-finite float as None, so that it is strict JSON."""
    return {key: finite_or_none(value) for key, value in values.items()}


def finite_numbers(values: Mapping[str, Any]) -> dict[str, float]:
    """The entries a chart can plot: finite ints and floats (no NaN, None, strings, bools)."""
    return {
        k: float(v)
        for k, v in values.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= sys.float_info.max
    }
