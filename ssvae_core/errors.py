"""The project's user-facing errors and exit codes, written once.

Every command exits with one of the `EXIT_*` statuses. A user's mistake is a `ConfigError`
whose message starts with the offending dotted key (``train.lr: must be > 0, got -1``); the
command prints it and exits with `EXIT_BAD_INPUT` before any compute, never a traceback.
"""

from __future__ import annotations

import argparse
import urllib.parse
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


def path_arg(text: str) -> str:
    """An argparse ``type`` for a path: an empty one is refused (exit 2) at parsing. ``--out ''``
    wrote nothing and said nothing; ``fig1c --out ''`` wrote into the working directory."""
    if not text:
        raise argparse.ArgumentTypeError("expected a path, got an empty one")
    return text


def url_shown(url: str, path: bool = True) -> str:
    """`url` as a message may repeat it (logs and mails keep messages): the password of its
    user info as ``***`` (``postgresql://u:***@db/mlflow``); without `path`, only
    ``scheme://host:port/...`` (a webhook's path is its secret). Cut to `MAX_REPR`."""
    parts = urllib.parse.urlsplit(url)
    user, at, host = parts.netloc.rpartition("@")
    if ":" in user:
        user = user.split(":", 1)[0] + ":***"
    netloc = f"{user}{at}{host}"
    if path or not parts.scheme:
        text = url.replace(parts.netloc, netloc, 1)  # urlunsplit would turn sqlite://// to //
    else:
        hidden = parts.path.strip("/") or parts.query or parts.fragment
        text = f"{parts.scheme}://{netloc}" + ("/..." if hidden else "")
    return text if len(text) <= MAX_REPR else f"{text[: MAX_REPR - 3]}..."


def without_password(text: str, url: str) -> str:
    """`text` (a message that may repeat `url`, or a library's message about it) with the
    password in `url`'s user info as ``***`` wherever its ``user:password@host`` appears."""
    netloc = urllib.parse.urlsplit(url).netloc
    user, at, host = netloc.rpartition("@")
    if ":" not in user:
        return text
    return text.replace(netloc, f"{user.split(':', 1)[0]}:***{at}{host}")


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
