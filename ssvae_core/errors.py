"""The project's user-facing errors and exit codes, written once.

Every command exits with one of the `EXIT_*` statuses. A user's mistake is a `ConfigError`
whose message starts with the offending dotted key (``train.lr: must be > 0, got -1``); the
command prints it and exits with `EXIT_BAD_INPUT` before any compute, never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

_T = TypeVar("_T")

EXIT_OK = 0
EXIT_FAILED = 1  # the work ran and failed: a diverged run, an errored trial, a regression
EXIT_BAD_INPUT = 2  # bad input, refused before any compute
EXIT_INFRA = 3  # infrastructure: tracking unreachable, a concurrent run, trials that errored
EXIT_INTERRUPTED = 130  # Ctrl-C

# How much of a user's value an error message repeats (a YAML alias bomb expands to gigabytes).
MAX_REPR = 200


class ConfigError(ValueError):
    """Bad input; the message starts with the offending dotted key."""


def shown(value: Any, limit: int = MAX_REPR) -> str:
    """``repr(value)``, cut to `limit` characters (never the whole of a huge value)."""
    if isinstance(value, (list, tuple, dict, set)) and len(value) > limit:
        return f"<{type(value).__name__} of {len(value)} items>"
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def check(ok: bool, key: str, message: str) -> None:
    """Raise `ConfigError` ``"key: message"`` unless `ok`."""
    if not ok:
        raise ConfigError(f"{key}: {message}")


def unknown_name(name: Any, valid: Iterable[str]) -> str:
    """The message for a name that is not in a registry: ``unknown name 'x'; choose from a, b``."""
    return f"unknown name {shown(name)}; choose from {', '.join(sorted(valid))}"


def check_name(name: Any, key: str, registry: Iterable[str]) -> None:
    """`name` must be one of `registry`; the error names `key` and lists the valid names."""
    valid = list(registry)
    check(isinstance(name, str) and name in valid, key, unknown_name(name, valid))


def within(where: str, call: Callable[..., _T], *args: Any) -> _T:
    """``call(*args)``, with ``(in WHERE)`` appended to a `ConfigError` (a grid cell, say)."""
    try:
        return call(*args)
    except ConfigError as err:
        raise ConfigError(f"{err} (in {where})") from None
