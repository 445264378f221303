"""Run configuration: frozen dataclasses, a strict loader, and the two presets.

One `RunConfig` holds everything a run needs, in sections whose dotted keys sweeps, docs and
users rely on (DESIGN.md): ``data.*``, ``encoder.*``, ``coupling.*``, ``objective.*``,
``train.*``, ``probe.*``. Every section validates itself in ``__post_init__``; `RunConfig`
checks what spans sections (a batch the video cannot fill, more negatives than frames).

`from_dict` rejects unknown keys and wrong types and names the offending dotted key, e.g.
``ConfigError("train.lr: must be > 0, got -1")``; nothing is built or trained before that.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union

import yaml

from ssvae_core.balls import BallsConfig
from ssvae_core.couplings import COUPLINGS, coupling_params
from ssvae_core.encoder import ENCODERS
from ssvae_core.objectives import ESTIMATORS
from ssvae_core.optim import OPTIMIZERS, SCHEDULES

T = TypeVar("T")


class ConfigError(ValueError):
    """Bad configuration; the message starts with the offending dotted key."""


def check(ok: bool, key: str, message: str) -> None:
    """Raise `ConfigError` ``"key: message"`` unless `ok`."""
    if not ok:
        raise ConfigError(f"{key}: {message}")


def check_name(name: Any, key: str, registry: Iterable[str]) -> None:
    """`name` must be one of `registry`; the error lists the valid names."""
    valid = sorted(registry)
    check(name in valid, key, f"unknown name {name!r}; choose from {', '.join(valid)}")


@dataclass(frozen=True)
class DataConfig(BallsConfig):
    """The moving-balls video (see `ssvae_core.balls`) and the seed that draws it."""

    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")


TRAIN_MODES = ("ssl", "supervised", "untrained")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class EncoderConfig:
    """``com``: the paper's conv + centre-of-mass encoder (Fig. 2); ``mlp``: on flat pixels.

    ``stochastic`` makes Q(z|x) = N(g(x), sigma^2 I) with reparameterised samples.
    """

    kind: str = "com"
    stochastic: bool = False
    sigma: float = 0.03
    learn_sigma: bool = False
    hidden: int = 64

    def __post_init__(self) -> None:
        check_name(self.kind, "kind", ENCODERS)
        check(self.sigma > 0, "sigma", f"must be > 0, got {self.sigma}")
        check(self.hidden >= 1, "hidden", f"must be >= 1, got {self.hidden}")


@dataclass(frozen=True)
class CouplingConfig:
    """The coupling f(z, z'), i.e. the prior P(z'|z) ∝ Q(z') f(z, z') (eq. 30).

    Only the fields the chosen kind accepts are passed to it (`params`).
    """

    kind: str = "gaussian"
    lengthscale: float = 0.05
    learn_lengthscale: bool = True
    per_dim: bool = False
    dof: float = 1.0
    temperature: float = 0.1
    learn_temperature: bool = False
    hidden: int = 64
    embed_dim: int = 32

    def __post_init__(self) -> None:
        check_name(self.kind, "kind", COUPLINGS)
        check(self.lengthscale > 0, "lengthscale", f"must be > 0, got {self.lengthscale}")
        check(self.dof > 0, "dof", f"must be > 0, got {self.dof}")
        check(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        check(self.hidden >= 1, "hidden", f"must be >= 1, got {self.hidden}")
        check(self.embed_dim >= 1, "embed_dim", f"must be >= 1, got {self.embed_dim}")

    def params(self) -> dict[str, Any]:
        """The keyword arguments of `build_coupling` that this kind accepts."""
        accepted = coupling_params(self.kind)
        return {k: v for k, v in dataclasses.asdict(self).items() if k in accepted}


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
    """``mode``: ``ssl`` (a coupling), ``supervised`` (Fig. 1C baseline) or ``untrained``."""

    mode: str = "ssl"
    epochs: int = 30
    batch_size: int = 30
    lr: float = 0.005
    optimizer: str = "sgd"
    momentum: float = 0.0
    lr_schedule: str = "constant"
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        check_name(self.mode, "mode", TRAIN_MODES)
        check(self.epochs >= 0, "epochs", f"must be >= 0, got {self.epochs}")
        check(self.batch_size >= 2, "batch_size", f"must be >= 2, got {self.batch_size}")
        check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        check_name(self.optimizer, "optimizer", OPTIMIZERS)
        check(0 <= self.momentum < 1, "momentum", f"must be in [0, 1), got {self.momentum}")
        check_name(self.lr_schedule, "lr_schedule", SCHEDULES)
        check_name(self.device, "device", DEVICES)


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


# ---------------------------------------------------------------- strict loading


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-3`` as a string; here it is a float, as a user means it."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_yaml(text: str) -> Any:
    """Parse YAML text (safe), reading scientific notation as floats."""
    return yaml.load(text, Loader=_Loader)


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether a YAML/JSON value has the declared type (an int is a float; a bool is not)."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint)


def build(cls: type[T], base: T, values: Mapping[str, Any], prefix: str) -> T:
    """`base` (a `cls` dataclass) with `values` replaced, checked key by key; nested sections
    recurse. Errors are `ConfigError`s whose message starts with `prefix` + the key."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or '<root>'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    changes: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"{dotted}: unknown key; valid keys: {', '.join(names)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            changes[key] = build(hint, getattr(base, key), value, f"{dotted}.")  # type: ignore[arg-type]
        elif _type_ok(value, hint):
            changes[key] = float(value) if hint is float else value
        else:
            raise ConfigError(f"{dotted}: expected {_hint_name(hint)}, got {value!r}")
    try:
        return dataclasses.replace(base, **changes)  # type: ignore[type-var]
    except ConfigError as err:
        raise ConfigError(f"{prefix}{err}") from None
    except ValueError as err:  # BallsConfig's checks start with the field name
        raise ConfigError(f"{prefix}{err}") from None


def _hint_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def from_dict(values: Mapping[str, Any], base: RunConfig | None = None) -> RunConfig:
    """`base` (default: the paper preset) updated by a nested mapping, strictly checked."""
    return build(RunConfig, base or RunConfig(), values, "")


def parse_override(text: str) -> dict[str, Any]:
    """``"train.lr=0.01"`` -> ``{"train": {"lr": 0.01}}`` (the value is read as YAML)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"{text}: expected key=value, e.g. train.lr=0.01")
    nested: dict[str, Any] = {}
    node = nested
    *parents, leaf = key.strip().split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = read_yaml(raw)
    return nested


def merge(into: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge `update` into `into` (in place) and return it."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value
    return into


def load(
    preset: str = "small", path: str | None = None, overrides: Iterable[str] = ()
) -> RunConfig:
    """The config the CLI builds: a preset, then a YAML file, then ``key=value`` overrides."""
    check_name(preset, "preset", PRESETS)
    values: dict[str, Any] = {}
    if path is not None:
        with open(path) as fh:
            merge(values, read_yaml(fh.read()) or {})
    for text in overrides:
        merge(values, parse_override(text))
    return from_dict(values, PRESETS[preset])


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The nested plain-dict form (YAML/JSON-ready); `from_dict` inverts it."""
    return dataclasses.asdict(cfg)


def flatten(cfg: RunConfig) -> dict[str, Any]:
    """``{"data.size": 64, "train.lr": 0.005, ...}``: every key, for MLflow params."""
    return {
        f"{section}.{key}": value
        for section, values in to_dict(cfg).items()
        for key, value in values.items()
    }
