"""Strict loading of config sections from YAML, JSON-like mappings and ``--set key=value``.

`build` fills a section dataclass from a mapping: an unknown key, a wrong type or a value
out of range is a `ConfigError` that names the dotted key (``train.lr: must be in (0, 10],
got -1.0``);
nothing is built or trained before that. YAML is read by `safe_yaml` (safe and bounded).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar, Union

from ssvae_core.config import DEFAULT_PRESET, PRESETS, DataConfig, RunConfig, flatten, used
from ssvae_core.errors import ConfigError, check_name, key_shown, shown
from ssvae_core.safe_yaml import read_yaml, read_yaml_file

T = TypeVar("T")
ROOT = "<root>"  # how an error names the top of a config
MAX_KEY_PARTS = 16  # a dotted key's names: methods.NAME.section.key is the deepest, 4


def _type_ok(value: Any, hint: Any) -> bool:
    """Whether a YAML/JSON value has the declared type (an int is a float; a bool is not).

    Floats must be finite (``.inf``, ``.nan`` and ints beyond float range are refused).
    """
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
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return False
        return abs(value) <= sys.float_info.max if isinstance(value, int) else math.isfinite(value)
    return isinstance(value, hint)


def _hint_name(hint: Any) -> str:
    text = str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")
    return text.replace("float", "finite float")


@functools.cache
def _fields(cls: type) -> tuple[dict[str, Any], tuple[str, ...]]:
    """A section's type hints and field names, read once per class: `typing.get_type_hints`
    evaluates every annotation again on each call, and a 10 000-cell grid builds 30 000
    sections (4.7 s of its 8.4 s validation under cProfile, 2026-12-07)."""
    return typing.get_type_hints(cls), tuple(f.name for f in dataclasses.fields(cls))


def build(cls: type[T], base: T, values: Mapping[str, Any], prefix: str) -> T:
    """`base` (a `cls` dataclass) with `values` replaced, checked key by key; nested sections
    recurse. Errors are `ConfigError`s whose message starts with `prefix` + the key."""
    if not isinstance(values, Mapping):
        where = prefix.rstrip(".") or ROOT
        raise ConfigError(f"{where}: expected a mapping, got {shown(values)}")
    hints, names = _fields(cls)  # type: ignore[arg-type]  # a class is hashable
    changes: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in names:  # the key as typed, cut (it may be 100 kB)
            raise ConfigError(f"{key_shown(dotted)}: unknown key; valid keys: {', '.join(names)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            changes[key] = build(hint, getattr(base, key), value, f"{dotted}.")  # type: ignore[arg-type]
        elif _type_ok(value, hint):
            changes[key] = float(value) if hint is float else value
        else:
            raise ConfigError(f"{dotted}: expected {_hint_name(hint)}, got {shown(value)}")
    try:
        return dataclasses.replace(base, **changes)  # type: ignore[type-var]
    except ValueError as err:  # ConfigError, and BallsConfig's checks: both start with the key
        raise ConfigError(f"{prefix}{err}") from None


def check_keys(values: Mapping[str, Any], prefix: str, cls: type = RunConfig) -> None:
    """Each key of nested `values` is a key of `cls`'s sections, of its type; else a
    `ConfigError` naming it as `prefix` + the dotted key (``--set train.lrr``). For values
    applied to many configs (a sweep's ``--set``, a method's bundle): checked alone, an error
    names them, not the first grid cell built with them. Checks across keys wait for `build`."""
    hints, names = _fields(cls)
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"{key_shown(dotted)}: unknown key; valid keys: {', '.join(names)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{dotted}: expected a mapping, got {shown(value)}")
            check_keys(value, f"{dotted}.", hint)  # type: ignore[arg-type]
        elif not _type_ok(value, hint):
            raise ConfigError(f"{dotted}: expected {_hint_name(hint)}, got {shown(value)}")


def from_dict(values: Mapping[str, Any], base: RunConfig | None = None) -> RunConfig:
    """`base` (default: the `DEFAULT_PRESET`) updated by a nested mapping, strictly checked."""
    return build(RunConfig, base or PRESETS[DEFAULT_PRESET], values, "")


def nest(values: Any, where: str = ROOT, _open: frozenset[int] = frozenset()) -> dict[str, Any]:
    """``{"train.lr": 0.1, "data": {"size": 32}}`` -> nested sections ``{"train": {...}}``.

    `values` must be a mapping (a `ConfigError` names `where` otherwise); so must everything
    a dotted key reaches into (``train: 5`` beside ``train.lr: 0.1`` names ``train``), and no
    mapping may hold itself (a YAML alias of a mapping inside that mapping).
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {shown(values)}")
    if id(values) in _open:
        raise ConfigError(f"{where}: holds itself (a YAML alias of a mapping inside it)")
    inside = _open | {id(values)}
    nested: dict[str, Any] = {}
    for key, value in values.items():
        *parents, leaf = str(key).split(".")
        if "" in (*parents, leaf) and parents:  # ".train.lr", "train..lr", "train.lr."
            raise ConfigError(f"{_dotted(where, key)}: an empty name between dots")
        if _dotted(where, key).count(".") >= MAX_KEY_PARTS:  # its mappings above count too:
            raise ConfigError(  # merging one level per name recursed to a traceback
                f"{key_shown(_dotted(where, key))}: more than {MAX_KEY_PARTS} names between "
                "dots; no setting is that deep"
            )
        node = nested
        for depth, part in enumerate(parents, 1):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                section = _dotted(where, ".".join(parents[:depth]))
                raise ConfigError(f"{section}: expected a mapping, got {shown(node)}")
        if isinstance(value, Mapping):  # "train.lr" and "train: {...}" in one mapping: both
            section = node.get(leaf, {})
            if not isinstance(section, dict):
                raise ConfigError(
                    f"{_dotted(where, key)}: expected a mapping, got {shown(section)}"
                )
            dotted = _dotted(where, key)
            node[leaf] = _merge_once(section, nest(value, dotted, inside), dotted)
        elif leaf in node:  # "train: {lr: 1}" then "train.lr: 2": one key, spelt twice
            raise ConfigError(f"{_dotted(where, key)}: set twice in one mapping")
        else:
            node[leaf] = value
    return nested


def _merge_once(into: dict[str, Any], update: Mapping[str, Any], where: str) -> dict[str, Any]:
    """`merge`, but a key that both set (``train.lr: 1`` beside ``train: {lr: 2}``) is a
    `ConfigError` rather than the later one winning: within one mapping that is a typo."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge_once(into[key], value, _dotted(where, key))
        elif key in into:
            raise ConfigError(f"{_dotted(where, key)}: set twice in one mapping")
        else:
            into[key] = value
    return into


def _dotted(where: str, key: Any) -> str:
    """The dotted name of `key` inside `where` (just the key at the root), as a message shows
    it (`errors.key_shown`: cut, on one line)."""
    return key_shown(key if where == ROOT else f"{where}.{key}")


def parse_override(text: str) -> dict[str, Any]:
    """``"train.lr=0.01"`` -> ``{"train": {"lr": 0.01}}`` (the value is read as YAML)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{text[:200]}: expected key=value, e.g. train.lr=0.01")
    return nest({key.strip(): read_yaml(raw, f"--set {key.strip()}")})


def merge(into: dict[str, Any], update: Mapping[str, Any], where: str = ROOT) -> dict[str, Any]:
    """Deep-merge `update` into `into` (in place) and return it: a later value wins, but a
    mapping never replaces a value nor a value a mapping (``train: lr=0.1`` in a file, then
    ``--set train.epochs=1``, would drop the file's ``train``): a `ConfigError` names it."""
    for key, value in update.items():
        if key in into and isinstance(value, Mapping) != isinstance(into[key], Mapping):
            scalar = into[key] if isinstance(value, Mapping) else value
            raise ConfigError(f"{_dotted(where, key)}: expected a mapping, got {shown(scalar)}")
        if isinstance(value, Mapping):
            merge(into.setdefault(key, {}), value, _dotted(where, key))
        else:
            into[key] = value
    return into


def load(
    preset: str = DEFAULT_PRESET, path: str | Path | None = None, overrides: Iterable[str] = ()
) -> RunConfig:
    """The config the CLI builds: a preset, then a YAML file, then ``key=value`` overrides."""
    return from_preset(preset, given(path, overrides))


def from_preset(preset: str, values: Mapping[str, Any]) -> RunConfig:
    """A preset updated by nested `values` (`given`), validated."""
    check_name(preset, "--preset", PRESETS)
    return from_dict(values, PRESETS[preset])


def data_from_preset(preset: str, values: Mapping[str, Any]) -> tuple[DataConfig, list[str]]:
    """The video a preset updated by nested `values` (`given`) makes, and the dotted keys set
    outside ``data`` (they change nothing in it). Every section is checked key by key, but
    not against the others: a batch larger than a shorter video is a training error, not
    the video's."""
    check_name(preset, "--preset", PRESETS)
    base = PRESETS[preset]
    hints, names = _fields(RunConfig)
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"{key_shown(key)}: unknown key; valid keys: {', '.join(names)}")
        build(hints[key], getattr(base, key), value, f"{key}.")
    data = build(DataConfig, base.data, values.get("data", {}), "data.")
    others = {k: v for k, v in values.items() if k != "data" and isinstance(v, Mapping)}
    return data, [key for key, v in flatten(others).items() if v is not None]  # null: unset


def ignored(cfg: RunConfig, values: Mapping[str, Any]) -> list[str]:
    """The dotted keys set in `values` (`given`) that `cfg`'s run does not use (`used`: an
    untrained run has no optimiser, a supervised one no coupling), null ones left out; a key
    another kind of coupling would take is refused when the config is built, not here."""
    sections = {k: v for k, v in values.items() if isinstance(v, Mapping)}
    used_keys = used(cfg)  # a null is no setting (a run's own config.yaml writes them)
    return [key for key, v in flatten(sections).items() if key not in used_keys and v is not None]


def given(path: str | Path | None = None, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """What a YAML file, then ``key=value`` overrides, set: nested sections, not yet checked."""
    values: dict[str, Any] = {}
    if path is not None:
        content = read_yaml_file(path, "config file")
        if content is not None and not isinstance(content, Mapping):
            raise ConfigError(
                f"{path}: expected a mapping of config sections, got {shown(content)}"
            )
        merge(values, nest(content or {}))
    for text in overrides:
        merge(values, parse_override(text))
    return values
