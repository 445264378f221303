"""Registries: short names (what YAML and the CLI use) mapped to the things they build.

A registry is a plain dict (`COUPLINGS`, `ESTIMATORS`, `ENCODERS`, `OPTIMIZERS`, ...). `lookup`
gives the error every registry shares (the valid names listed), and `declared_params` reads
the parameters a builder declares, with their one default each, from its signature.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from ssvae_core.errors import unknown_name

T = TypeVar("T")


def lookup(registry: Mapping[str, T], name: str, what: str) -> T:
    """``registry[name]``, or a ValueError naming `what` and listing the valid names."""
    if name not in registry:
        raise ValueError(f"{what}: {unknown_name(name, registry)}")
    return registry[name]


def declared_params(builder: Callable[..., Any], skip: Iterable[str] = ()) -> dict[str, Any]:
    """The keyword parameters `builder` declares, and their defaults (positional ones skipped).

    For a class, its ``__init__``; parameters without a default, ``self`` and `skip` are left
    out: they are the sizes the caller passes, not settings.
    """
    return dict(_declared(builder, tuple(skip)))


@functools.cache
def _declared(builder: Callable[..., Any], skip: tuple[str, ...]) -> tuple[tuple[str, Any], ...]:
    """`declared_params`, read once per builder (every trial config of a grid asks again)."""
    target = builder.__init__ if inspect.isclass(builder) else builder
    skipped = {"self", *skip}
    return tuple(
        (p.name, p.default)
        for p in inspect.signature(target).parameters.values()
        if p.name not in skipped and p.default is not inspect.Parameter.empty
    )
