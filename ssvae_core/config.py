"""Run configuration: frozen dataclasses, the two presets and the Fig. 1C method bundles.

One `RunConfig` holds everything a run needs, in sections whose dotted keys sweeps, docs and
users rely on: ``data.*``, ``encoder.*``, ``coupling.*``, ``objective.*``,
``train.*``, ``probe.*``. Every section validates itself in ``__post_init__``; `RunConfig`
checks what spans sections (a batch the video cannot fill, more negatives than frames).

A setting that belongs to one coupling, encoder or optimiser (``coupling.lengthscale``,
``encoder.hidden``, ``train.momentum``) is None until set; set, it must be one that the chosen
kind declares (`couplings.coupling_params`, `encoder.encoder_params`, `optim.optimizer_params`),
else a `ConfigError` names it. Its default is the one the kind declares, defined once there;
`used` lists what a run actually uses. Loading from YAML or ``--set``: `ssvae_core.loader`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ssvae_core.balls import BallsConfig
from ssvae_core.couplings import COUPLINGS, coupling_params
from ssvae_core.encoder import ENCODERS, encoder_params, stochastic_params
from ssvae_core.errors import ConfigError, check, check_name
from ssvae_core.objectives import ESTIMATORS
from ssvae_core.optim import OPTIMIZERS, SCHEDULES, optimizer_params

__all__ = ["ConfigError", "RunConfig", "check", "check_name"]

MAX_SEED = 2**63 - 1  # what numpy and torch generators both accept
# Bounds beyond which a value is a typo, not a setting: they keep floats far from overflow.
MAX_LR = 10.0
MAX_SCALE = 1e3  # a lengthscale, sigma or temperature in encoder units (they span [-1, 1])
MAX_DOF = 1e6
# The least noise that still moves z: in float32, z + sigma * eps rounds back to z (up to 1 in
# size) below about 6e-8, so a smaller sigma ran deterministic under the stochastic label.
MIN_SIGMA = 1e-6


def _check_seed(seed: int, key: str) -> None:
    check(0 <= seed <= MAX_SEED, key, f"must be in [0, 2**63 - 1], got {seed}")


def _set(section: Any) -> dict[str, Any]:
    """The fields of `section` that were set (not None)."""
    return {k: v for k, v in dataclasses.asdict(section).items() if v is not None}


def _check_declared(given: Mapping[str, Any], declared: Mapping[str, Any], what: str) -> None:
    """Each of `given` must be declared by `what` (a coupling, encoder or optimiser)."""
    for key in given:
        takes = ", ".join(declared) or "none"
        check(key in declared, key, f"{what} takes no {key!r} (its settings: {takes})")


@dataclass(frozen=True)
class DataConfig:
    """The moving-balls video (`ssvae_core.balls.BallsConfig`) and the seed that draws it."""

    n_frames: int = BallsConfig.n_frames
    size: int = BallsConfig.size
    n_balls: int = BallsConfig.n_balls
    diameter: int = BallsConfig.diameter
    noise_deg: float = BallsConfig.noise_deg
    seed: int = 0

    def __post_init__(self) -> None:
        self.balls  # noqa: B018 (BallsConfig checks every field; its messages name them)
        _check_seed(self.seed, "seed")

    @property
    def balls(self) -> BallsConfig:
        """The simulator's config: `balls.simulate(cfg.data.balls, cfg.data.seed)`."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(BallsConfig)}
        return BallsConfig(**values)


TRAIN_MODES = ("ssl", "supervised", "untrained")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class EncoderConfig:
    """``com``: the paper's conv + centre-of-mass network (Fig. 2); ``mlp``: on flat pixels.

    ``stochastic`` makes Q(z|x) = N(g(x), sigma^2 I) with reparameterised samples; ``sigma``
    and ``learn_sigma`` apply only then, ``hidden`` only to ``mlp``.
    """

    kind: str = "com"
    stochastic: bool = False
    sigma: float | None = None
    learn_sigma: bool | None = None
    hidden: int | None = None

    def __post_init__(self) -> None:
        check_name(self.kind, "kind", ENCODERS)
        own = {k: v for k, v in _set(self).items() if k not in ("kind", "stochastic")}
        noise = stochastic_params() if self.stochastic else {}
        _check_declared(own, {**encoder_params(self.kind), **noise}, self._what())
        if self.sigma is not None:
            ok = MIN_SIGMA <= self.sigma <= MAX_SCALE
            check(ok, "sigma", f"must be in [{MIN_SIGMA:g}, {MAX_SCALE:g}], got {self.sigma}")
        if self.hidden is not None:
            check(self.hidden >= 1, "hidden", f"must be >= 1, got {self.hidden}")

    def _what(self) -> str:
        return f"a {'stochastic' if self.stochastic else 'deterministic'} {self.kind!r} encoder"

    def params(self) -> dict[str, Any]:
        """The keyword arguments of `encoder.build_encoder` that were set."""
        return {k: v for k, v in _set(self).items() if k not in ("kind", "stochastic")}

    def used(self) -> dict[str, Any]:
        """Every setting this encoder runs with, defaults included."""
        noise = stochastic_params() if self.stochastic else {}
        own = {**encoder_params(self.kind), **noise, **self.params()}
        return {"kind": self.kind, "stochastic": self.stochastic, **own}


@dataclass(frozen=True)
class CouplingConfig:
    """The coupling f(z, z'), i.e. the prior P(z'|z) ∝ Q(z') f(z, z') (eq. 30).

    The other fields are the settings of some coupling each (`couplings.coupling_params`);
    only those of the chosen ``kind`` may be set.
    """

    kind: str = "gaussian"
    lengthscale: float | None = None
    learn_lengthscale: bool | None = None
    per_dim: bool | None = None
    dof: float | None = None
    temperature: float | None = None
    learn_temperature: bool | None = None
    hidden: int | None = None
    embed_dim: int | None = None

    def __post_init__(self) -> None:
        check_name(self.kind, "kind", COUPLINGS)
        _check_declared(self.params(), coupling_params(self.kind), f"coupling {self.kind!r}")
        for key, limit in (
            ("lengthscale", MAX_SCALE),
            ("dof", MAX_DOF),
            ("temperature", MAX_SCALE),
        ):
            value = getattr(self, key)
            ok = value is None or 0 < value <= limit
            check(ok, key, f"must be in (0, {limit:g}], got {value}")
        for key in ("hidden", "embed_dim"):
            value = getattr(self, key)
            check(value is None or value >= 1, key, f"must be >= 1, got {value}")

    def params(self) -> dict[str, Any]:
        """The keyword arguments of `couplings.build_coupling` that were set."""
        return {k: v for k, v in _set(self).items() if k != "kind"}

    def used(self) -> dict[str, Any]:
        """Every setting this coupling runs with, defaults included."""
        return {"kind": self.kind, **coupling_params(self.kind), **self.params()}


@dataclass(frozen=True)
class ObjectiveConfig:
    """The MI estimator (`ssvae_core.objectives.ESTIMATORS`) and the number of negatives N.

    ``n_negatives``: None means in-batch, N = B - 1 (the paper). Fewer: a random subset of the
    in-batch targets per anchor. More: N - (B - 1) extra random frames encoded alongside.
    """

    estimator: str = "infonce"
    n_negatives: int | None = None

    def __post_init__(self) -> None:
        check_name(self.estimator, "estimator", ESTIMATORS)
        if self.n_negatives is not None:
            check(self.n_negatives >= 1, "n_negatives", f"must be >= 1, got {self.n_negatives}")


@dataclass(frozen=True)
class TrainConfig:
    """``mode``: ``ssl`` (a coupling), ``supervised`` (Fig. 1C baseline) or ``untrained``.

    ``momentum`` is SGD's (`optim.optimizer_params`): None until set.
    """

    mode: str = "ssl"
    epochs: int = 30
    batch_size: int = 30
    lr: float = 0.005
    optimizer: str = "sgd"
    momentum: float | None = None
    lr_schedule: str = "constant"
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        check_name(self.mode, "mode", TRAIN_MODES)
        check(self.epochs >= 0, "epochs", f"must be >= 0, got {self.epochs}")
        check(self.batch_size >= 2, "batch_size", f"must be >= 2, got {self.batch_size}")
        check(0 < self.lr <= MAX_LR, "lr", f"must be in (0, {MAX_LR:g}], got {self.lr}")
        check_name(self.optimizer, "optimizer", OPTIMIZERS)
        _check_declared(self.settings(), optimizer_params(self.optimizer), self.optimizer)
        if self.momentum is not None:
            ok = 0 <= self.momentum < 1
            check(ok, "momentum", f"must be in [0, 1), got {self.momentum}")
        check_name(self.lr_schedule, "lr_schedule", SCHEDULES)
        _check_seed(self.seed, "seed")
        check_name(self.device, "device", DEVICES)

    def settings(self) -> dict[str, Any]:
        """The optimiser's own settings that were set (`optim.build_optimizer`)."""
        return {} if self.momentum is None else {"momentum": self.momentum}


@dataclass(frozen=True)
class ProbeConfig:
    """The linear probe (`ssvae_core.probe`): held-out split and how often it runs."""

    train_fraction: float = 0.8
    every_epochs: int = 5

    def __post_init__(self) -> None:
        check(
            0 < self.train_fraction < 1,
            "train_fraction",
            f"must be in (0, 1), got {self.train_fraction}",
        )
        check(self.every_epochs >= 1, "every_epochs", f"must be >= 1, got {self.every_epochs}")


@dataclass(frozen=True)
class RunConfig:
    """Everything one training run needs. Defaults are the paper's setting (section 4)."""

    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    coupling: CouplingConfig = field(default_factory=CouplingConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)

    @property
    def epochs_trained(self) -> int:
        """The epochs this run trains: ``train.epochs``, none for the ``untrained`` control."""
        return 0 if self.train.mode == "untrained" else self.train.epochs

    def __post_init__(self) -> None:
        pairs = self.data.n_frames - 1
        check(
            self.train.batch_size <= pairs,
            "train.batch_size",
            f"{self.train.batch_size} pairs do not fit in a video of "
            f"{self.data.n_frames} frames ({pairs} consecutive pairs)",
        )
        n = self.objective.n_negatives
        if n is not None:
            check(
                n <= self.data.n_frames - 2,
                "objective.n_negatives",
                f"{n} negatives need more frames than the video's {self.data.n_frames}",
            )
        n_test = round(self.data.n_frames * (1 - self.probe.train_fraction))
        n_train = self.data.n_frames - n_test
        check(
            min(n_test, n_train) >= 2,
            "probe.train_fraction",
            f"leaves {n_train} train / {n_test} test frames; need >= 2 each",
        )


SMALL = RunConfig(data=DataConfig(size=64, diameter=8))
PRESETS: dict[str, RunConfig] = {"paper": RunConfig(), "small": SMALL}
DEFAULT_PRESET = "small"  # what `ssvae train` and a sweep's `base` start from

# The Fig. 1C methods, as overrides on a preset (`ssvae fig1c`, a sweep's `method` axis).
# The couplings train with the paper's SGD, lr 0.005. The supervised baseline does not
# converge in 30 epochs with it at the small preset (4.8 px on seed 0), so it uses Adam
# (lr 0.01 left seed 2 at 7.8 px; lr 0.03 reached 0.21 px there).
METHODS: dict[str, dict[str, dict[str, Any]]] = {
    "supervised": {"train": {"mode": "supervised", "optimizer": "adam", "lr": 0.03}},
    "gaussian": {"train": {"mode": "ssl"}, "coupling": {"kind": "gaussian"}},
    "bilinear": {"train": {"mode": "ssl"}, "coupling": {"kind": "bilinear"}},
    "untrained": {"train": {"mode": "untrained"}},
}


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The nested plain-dict form (YAML/JSON-ready); `loader.from_dict` inverts it."""
    return dataclasses.asdict(cfg)


def flatten(nested: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``{"data": {"size": 64}, ...}`` -> ``{"data.size": 64, ...}``."""
    return {
        f"{section}.{key}": v for section, values in nested.items() for key, v in values.items()
    }


def used(cfg: RunConfig) -> dict[str, Any]:
    """The settings this run actually uses, flat (``coupling.lengthscale``: 0.05, ...).

    Defaults included; what the mode ignores left out: a supervised or untrained run has no
    coupling or objective, an untrained one no optimiser, epochs or batches.
    """
    sections: dict[str, Mapping[str, Any]] = {
        "data": to_dict(cfg)["data"],
        "encoder": cfg.encoder.used(),
    }
    train = {k: v for k, v in dataclasses.asdict(cfg.train).items() if k != "momentum"}
    train |= {**optimizer_params(cfg.train.optimizer), **cfg.train.settings()}
    if cfg.train.mode == "ssl":
        sections |= {"coupling": cfg.coupling.used(), "objective": to_dict(cfg)["objective"]}
    if cfg.train.mode == "untrained":
        train = {k: train[k] for k in ("mode", "seed", "device")}
    sections |= {"train": train, "probe": to_dict(cfg)["probe"]}
    return flatten(sections)
