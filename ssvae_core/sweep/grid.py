"""A sweep file's ``grid``: the cells of a study, counted before any is built.

``grid`` is a mapping of dotted keys to value lists, whose Cartesian product is the cells::

    grid: {method: [gaussian, bilinear], train.seed: [0, 1, 2]}          # 6 cells

or a list of such mappings, whose products are joined in order: an ablation rarely is one
full product (the untrained control needs no N)::

    grid:
      - {method: [gaussian, bilinear], objective.n_negatives: [8, 29], train.seed: [0, 1, 2]}
      - {method: [untrained], train.seed: [0, 1, 2]}                      # 12 + 3 cells

A cell's params hold only its own block's keys; a key another block sets is `ABSENT` from it
(``-`` in tables). `count` multiplies the list lengths, so a grid too big for its budget is
refused before a single cell's config is built.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

from ssvae_core.errors import check, check_name, shown

Axes = tuple[tuple[str, tuple[Any, ...]], ...]  # one product: (key, values) per axis
Params = tuple[tuple[str, Any], ...]  # one cell: (key, value) per axis of its block
ABSENT = "-"  # a cell's value of an axis only other blocks have
METHOD_AXIS = "method"


def parse_grid(raw: Any, methods: Mapping[str, Any]) -> tuple[Axes, ...]:
    """``grid`` (a mapping, a list of mappings, or None) -> one `Axes` per block."""
    if raw is None:
        return ((),)
    blocks = raw if isinstance(raw, list) else [raw]
    check(bool(blocks), "grid", "expected a mapping of key -> [values], or a list of them")
    return tuple(
        _parse_block(block, f"grid[{i}]" if isinstance(raw, list) else "grid", methods)
        for i, block in enumerate(blocks)
    )


def _parse_block(raw: Any, where: str, methods: Mapping[str, Any]) -> Axes:
    got = shown(raw)
    check(isinstance(raw, Mapping), where, f"expected a mapping of key -> [values], got {got}")
    for key, values in raw.items():
        ok = "." in str(key) or key == METHOD_AXIS  # `train: [{seed: 0}]` slipped past checks
        check(ok, f"{where}.{key}", "an axis is one setting: its dotted key, e.g. train.seed")
        ok = isinstance(values, list) and bool(values)
        check(ok, f"{where}.{key}", f"expected a non-empty list, got {shown(values)}")
        seen = Counter(map(_same, values))
        duplicates = sorted(shown(v, 40) for v, times in seen.items() if times > 1)[:5]
        check(not duplicates, f"{where}.{key}", f"repeated values: {', '.join(duplicates)}")
        for name in values if key == METHOD_AXIS else ():
            text = isinstance(name, str)  # 1 or null: 'unknown name 1; choose from 1, ...'
            check(text, f"{where}.method", f"a method's name is text, got {shown(name)}; quote it")
            check_name(name, f"{where}.method", methods)
    return tuple((str(key), tuple(values)) for key, values in raw.items())


def _same(value: Any) -> Any:
    """What makes two axis values one: a number's value (1 and 1.0 train alike), else its
    text (a value may be unhashable)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return value if number else shown(value, 40)


def label(params: Params) -> str:
    """A cell as its settings read (``method=gaussian, train.seed=0``); ``base`` for none."""
    return ", ".join(f"{k}={v}" for k, v in params) or "base"


def repeated(blocks: tuple[Axes, ...]) -> str | None:
    """The label of a cell that two blocks both make (it would train twice), or None."""
    seen: set[frozenset[tuple[str, Any]]] = set()
    for params in cells(blocks):
        key = frozenset((k, _same(v)) for k, v in params)
        if key in seen:
            return label(params)
        seen.add(key)
    return None


def count(blocks: tuple[Axes, ...]) -> int:
    """How many cells the blocks make, without building them."""
    return sum(math.prod(len(values) for _, values in axes) for axes in blocks)


def cells(blocks: tuple[Axes, ...]) -> Iterator[Params]:
    """Each cell's params, block by block, the last axis fastest."""
    for axes in blocks:
        keys = [key for key, _ in axes]
        for values in itertools.product(*(values for _, values in axes)):
            yield tuple(zip(keys, values, strict=True))


def union(blocks: tuple[Axes, ...]) -> Axes:
    """Every axis of any block (first appearance order) with all its values."""
    merged: dict[str, list[Any]] = {}
    for axes in blocks:
        for key, values in axes:
            known = merged.setdefault(key, [])
            known += [v for v in values if v not in known]
    return tuple((key, tuple(values)) for key, values in merged.items())


def in_every_block(blocks: tuple[Axes, ...], key: str) -> bool:
    """Whether every cell has a value for axis `key`."""
    return all(key in dict(axes) for axes in blocks)
