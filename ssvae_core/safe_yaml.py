"""Reading YAML that a user wrote: safely, bounded, and naming the file in every error.

Safe: `yaml.SafeLoader`, so no tag can build an object or run code. Bounded: a text over
`MAX_YAML_BYTES`, or one whose aliases expand past `MAX_YAML_NODES` values (an alias bomb), is
refused before anything is built from it; a pipe is waited on for at most `PIPE_WAIT_S`.
Numbers are decimal, as a user means them: ``1e-3`` is a float, and YAML 1.1's octal, base-60
and hex forms stay text, as does an int of more than 100 digits. A key twice in one mapping is
an error, not the last one winning.
Imports nothing heavy, so a missing or broken file answers at once.
"""

from __future__ import annotations

import os
import re
import select
import stat
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from ssvae_core.errors import ConfigError

MAX_YAML_BYTES = 1_000_000
MAX_YAML_NODES = 100_000
PIPE_WAIT_S = 5.0  # how long a pipe may stay silent before its writer closes it


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-3`` as a string; here it is a float, as a user means it. And YAML
    1.1 reads ``010`` as 8 (octal), ``1:00`` as 60 and ``1:30.0`` as 90.0 (base 60), ``0x10``
    as 16; here numbers are decimal, and those stay strings, which a number-typed key refuses
    (exit 2)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """A key twice in one mapping is an error (YAML 1.1 keeps the last one, silently:
        a second ``grid:`` would replace the first)."""
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # the base class refuses it, naming it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark, f"{key!r} is there twice",
                    key_node.start_mark,
                )  # fmt: skip
            seen.add(key)
        return super().construct_mapping(node, deep)


INT, FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_Loader.yaml_implicit_resolvers = {  # the class's own copy, without YAML 1.1's number forms
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (INT, FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
# at most 100 digits: Python refuses to read an int of more than 4300 (a ValueError); a longer
# one stays text, which a number-typed key refuses
DECIMAL_INT = re.compile(r"^[-+]?(?:0|[1-9][0-9_]{0,99})$")
DECIMAL_FLOAT = re.compile(  # with or without an exponent; no base 60 (1:30.0)
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_Loader.add_implicit_resolver(INT, DECIMAL_INT, list("-+0123456789"))
_Loader.add_implicit_resolver(FLOAT, DECIMAL_FLOAT, list("-+0123456789."))


def _decimal(forms: tuple[re.Pattern[str], ...], build: Any, what: str) -> Any:
    """A constructor of `build`'s numbers that takes the decimal `forms` only: an explicit tag
    (``!!int 010``, ``!!float 1:30``) went to YAML 1.1's octal and base 60 (8, 90.0)."""

    def construct(loader: _Loader, node: yaml.ScalarNode) -> Any:
        text = loader.construct_scalar(node)
        if not any(form.match(str(text)) for form in forms):
            raise yaml.constructor.ConstructorError(
                None, None, f"{text!r} is not a decimal {what}", node.start_mark
            )
        return build(loader, node)

    return construct


_Loader.add_constructor(INT, _decimal((DECIMAL_INT,), yaml.SafeLoader.construct_yaml_int, "int"))
_Loader.add_constructor(  # !!float 3 is 3.0
    FLOAT, _decimal((DECIMAL_FLOAT, DECIMAL_INT), yaml.SafeLoader.construct_yaml_float, "float")
)


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many values `node` stands for once every alias is expanded (memoised per node)."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 1  # a recursive alias counts once instead of looping
    size = 1
    if isinstance(node, yaml.SequenceNode):
        size += sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size += sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    memo[id(node)] = size
    return size


def _one_line(err: yaml.YAMLError) -> str:
    """PyYAML's error on one line: where (line and column) and what, without the quoted
    source and caret it prints below (a message is one line)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None)
    if mark is not None and problem:
        context = getattr(err, "context", None)
        said = f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
        return said + (f" ({context})" if context else "")
    return " ".join(str(err).replace('"<unicode string>", ', "").split())


def read_yaml(text: str, where: str = "<yaml>") -> Any:
    """Parse YAML text safely, bounded in size; `where` (a path) names it in errors."""
    if len(text.encode("utf-8", "replace")) > MAX_YAML_BYTES:
        raise ConfigError(f"{where}: larger than {MAX_YAML_BYTES} bytes; not a config file")
    loader = None
    try:
        loader = _Loader(text)  # a control character is refused here (ReaderError)
        loader.name = where  # the file's path in the parser's own "line L, column C" marks
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_YAML_NODES:
            raise ConfigError(
                f"{where}: holds more than {MAX_YAML_NODES} values once aliases are expanded"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as err:  # a control character is refused before loader.name is set
        raise ConfigError(f"{where}: not valid YAML: {_one_line(err)}") from None
    except ConfigError:
        raise
    except ValueError as err:  # a date that does not exist (2020-02-30), a bad UTC offset
        raise ConfigError(f"{where}: not valid YAML: {err}") from None
    except RecursionError:  # PyYAML's parser recurses once per level ([[[[...]]]])
        raise ConfigError(f"{where}: nested too deeply; not a config") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_bytes(path: str | Path, what: str = "file", limit: int = MAX_YAML_BYTES) -> bytes:
    """A file's bytes, at most `limit` of them: a larger file (or ``/dev/zero``, a pipe that
    never ends) is refused after reading ``limit + 1``, never read whole. A missing path, a
    directory or an unreadable file name the path. A pipe (``--config <(cmd)``, or a named
    one) is read once something is written to it or its writer has closed (an empty pipe
    reads as an empty file does), and refused if it falls silent for `PIPE_WAIT_S` before its
    end: ``open`` alone would wait for ever for a writer that never comes, and ``read`` for
    one that never closes."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what}") from None
    except OSError as err:  # a folder it may not enter, a name too long
        raise ConfigError(f"{path}: cannot read it as a {what}: {err.strerror}") from None
    mode = os.fstat(fd).st_mode
    if stat.S_ISDIR(mode):
        os.close(fd)
        raise ConfigError(f"{path}: is a directory; expected a {what}")
    with os.fdopen(fd, "rb") as handle:
        try:
            if stat.S_ISFIFO(mode):
                data = _read_pipe(fd, limit, path, what)
            else:
                os.set_blocking(fd, True)
                data = handle.read(limit + 1)
        except OSError as err:
            raise ConfigError(f"{path}: cannot read it as a {what}: {err}") from None
    if len(data) > limit:
        raise ConfigError(f"{path}: larger than {limit} bytes; not a {what}")
    return data


def _read_pipe(fd: int, limit: int, path: Path, what: str) -> bytes:
    """A pipe's bytes to its end (or `limit` + 1 of them), each wait at most `PIPE_WAIT_S`."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        if not select.select([fd], [], [], PIPE_WAIT_S)[0]:
            said = (
                f"a pipe nothing was written to within {PIPE_WAIT_S:g} s"
                if not chunks
                else f"a pipe whose writer went silent for {PIPE_WAIT_S:g} s without closing it"
            )
            raise ConfigError(f"{path}: {said}; expected a {what}")
        chunk = os.read(fd, min(1 << 16, limit + 1 - size))
        if not chunk:  # its writer closed: the end
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def read_text(path: str | Path, what: str = "file") -> str:
    """A text file's content (`read_bytes`, bounded by `MAX_YAML_BYTES`) as UTF-8."""
    try:
        return read_bytes(path, what).decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: cannot read it as a {what}: {err}") from None


def read_yaml_file(path: str | Path, what: str = "YAML file") -> Any:
    """`read_yaml` of a file (`read_text`'s errors for a missing or unreadable one)."""
    return read_yaml(read_text(path, what), str(path))
