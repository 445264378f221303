"""The project's user-facing errors and exit codes, written once.

Every command exits with one of the `EXIT_*` statuses. A user's mistake is a `ConfigError`
whose message starts with the offending dotted key (``train.lr: must be in (0, 10], got
-1.0``); the command prints it and exits with `EXIT_BAD_INPUT` before any compute, never a
traceback.
"""

from __future__ import annotations

import argparse
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

_T = TypeVar("_T")

EXIT_OK = 0
EXIT_FAILED = 1  # the work ran and failed: a diverged run, an errored trial, a regression
EXIT_BAD_INPUT = 2  # bad input, refused before any compute
EXIT_INFRA = 3  # infrastructure: tracking unreachable, a concurrent run, trials that errored
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_PIPE = 141  # the reader of stdout left (`| head`), as for a process SIGPIPE ended
EXIT_TERMINATED = 143  # SIGTERM (systemd's stop, `timeout`, `kill`), as the signal's own


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is (`ssvae_core.cli.main` installs it): what Ctrl-C
    cleans up (a half-written temporary file, a run's rows so far) is cleaned up for it too."""


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


def first_line(err: BaseException) -> str:
    """An error's first line (SQLAlchemy's add the SQL and a link), or its type's name."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def key_shown(key: Any, limit: int = 100) -> str:
    """A key (or a place, ``grid cell a=1``) as a message names it: as typed, unless it is
    longer than `limit` or holds a newline or another unprintable character, then `shown`."""
    text = str(key)
    return text if len(text) <= limit and text.isprintable() else shown(text, limit)


def repeated(values: Iterable[Any]) -> list[str]:
    """The values given more than once, as text, each once, in the order first given (a
    flag's repeat would run the same case again and count it as one more)."""
    return [str(value) for value, times in Counter(values).items() if times > 1]


NAME_MAX, PATH_MAX = 255, 4096  # bytes in one name of a path, and in a path (Linux)


def path_problem(text: str) -> str | None:
    """What makes `text` no path this machine could open, or None: empty (``--out ''`` wrote
    nothing and said nothing), or a name or the whole over the file system's limits (every
    ``exists()`` on it raised 'File name too long')."""
    if not text:
        return "expected a path, got an empty one"
    longest = max(text.split("/"), key=lambda name: len(os.fsencode(name)))
    if len(os.fsencode(longest)) > NAME_MAX:
        return f"a name in the path is {len(os.fsencode(longest))} bytes long, {NAME_MAX} at most"
    if len(os.fsencode(text)) >= PATH_MAX:
        return f"the path is {len(os.fsencode(text))} bytes long, under {PATH_MAX} at most"
    return None


def path_arg(text: str) -> str:
    """An argparse ``type`` for a path: `path_problem` refuses it (exit 2) at parsing."""
    problem = path_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


# scheme://user:password@ as SQLAlchemy reads a database URI: the password runs to the first
# "@" and may hold "/", "#" or "?", which urlsplit would take for the end of the host; in an
# http(s) URL, as urllib reads it, those end the host ("http://h:5000/a@b" has no password)
_USERINFO = re.compile(
    r"^(?P<user>(?!https?://)[A-Za-z][\w+.-]*://[^:/@?#]*):(?P<password>[^@]*)@"
    r"|^(?P<web>https?://[^:/@?#]*):(?P<secret>[^@/?#]*)@",
    re.IGNORECASE,
)
# a secret in the query: ?password=... (libpq), ?token=..., ?api_key=...
_QUERY_SECRET = re.compile(r"(?i)([?&](?:password|passwd|pwd|token|secret|api_key|key)=)[^&#]*")


def _secrets(url: str) -> list[tuple[str, str]]:
    """The parts of `url` that hold a secret, each as it appears and as it may be shown."""
    found = []
    if (userinfo := _USERINFO.match(url)) is not None:
        user = userinfo.group("user") or userinfo.group("web")
        password = userinfo.group("password") or userinfo.group("secret") or ""
        found.append((f"{user}:{password}@", f"{user}:***@"))
    for query in _QUERY_SECRET.finditer(url):
        found.append((query.group(0), f"{query.group(1)}***"))
    return found


def url_shown(url: str, path: bool = True) -> str:
    """`url` as a message may repeat it (logs and mails keep messages): a password in its user
    info or its query as ``***`` (``postgresql://u:***@db/mlflow``); without `path`, only
    ``scheme://host:port/...``, no user info (a webhook's path or user is its secret). Cut to
    `MAX_REPR`."""
    if path or "://" not in url:
        text = without_password(url, url)
    else:
        scheme, _, rest = url.partition("://")
        if (userinfo := _USERINFO.match(url)) is not None:
            rest = url[userinfo.end() :]
        authority = re.match(r"[^/?#]*", rest).group(0)  # type: ignore[union-attr]
        tail = rest[len(authority) :]
        text = f"{scheme}://{authority.rpartition('@')[2]}" + ("/..." if tail.strip("/") else "")
    return text if len(text) <= MAX_REPR else f"{text[: MAX_REPR - 3]}..."


def without_password(text: str, url: str) -> str:
    """`text` (a message that may repeat `url`, or a library's message about it) with every
    secret of `url` (`url_shown`) as ``***`` where it appears in its context (``user:pw@``,
    ``password=pw``), never a bare word replaced."""
    for raw, shown_as in _secrets(url):
        text = text.replace(raw, shown_as)
    return text


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
        raise ConfigError(f"{err} (in {key_shown(where, MAX_REPR)})") from None
