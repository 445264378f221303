"""Fig. 1C of the paper, run one after another on one machine: methods × seeds -> a table.

Each method is a bundle of overrides on one preset (`config.METHODS`); seeds change
``train.seed`` only, so every method sees the same video and runs are paired by seed.
(`ssvae sweep sweeps/paper-small.yaml` runs the same study in parallel on Ray; this is the
path without Ray or MLflow, ``ssvae fig1c``.)
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ssvae_core import config, figures, loader
from ssvae_core.balls import simulate
from ssvae_core.errors import ConfigError, check, check_name, repeated
from ssvae_core.files import write_text
from ssvae_core.train import Report, RunResult, fit


def method_configs(
    preset: str,
    methods: Sequence[str],
    seeds: Sequence[int],
    given: Mapping[str, Any] | None = None,
) -> list[tuple[str, int, config.RunConfig]]:
    """Every (method, seed, config), all validated before anything runs.

    The preset, then `given` (``loader.given``: the --config file, then --set), then the
    method's bundle and the seed. A key the bundle (with another value) or ``--seeds`` sets is
    refused if also given: it would be replaced.
    """
    for method in methods:
        check_name(method, "--methods", config.METHODS)
    for flag, chosen in (("--methods", methods), ("--seeds", seeds)):
        twice = repeated(chosen)
        check(not twice, flag, f"{', '.join(twice)} given twice: each run once")
    for seed in seeds:
        check(seed >= 0, "--seeds", f"must be >= 0, got {seed}")
    check_name(preset, "--preset", config.PRESETS)
    given = given or {}
    base = loader.from_dict(given, config.PRESETS[preset])
    user = config.flatten(given)
    if "train.seed" in user:
        raise ConfigError("train.seed: ssvae fig1c sets it, once per --seeds value; use --seeds")
    for method in dict.fromkeys(methods):
        for key, value in config.flatten(config.METHODS[method]).items():
            if key in user and user[key] != value:
                raise ConfigError(
                    f"{key}: method {method!r} sets it ({value!r}); leave {key} out of "
                    f"--config/--set, or {method} out of --methods"
                )
    runs = []
    for method, seed in itertools.product(methods, seeds):
        values = loader.merge(copy.deepcopy(config.METHODS[method]), {"train": {"seed": seed}})
        runs.append((method, seed, loader.from_dict(values, base)))
    return runs


def unused(
    runs: Sequence[tuple[str, int, config.RunConfig]], given: Mapping[str, Any]
) -> list[str]:
    """The dotted keys set in `given` that no run of `runs` trains with (`loader.ignored`)."""
    others = [set(loader.ignored(cfg, given)) for _, _, cfg in runs[1:]]
    return [key for key in loader.ignored(runs[0][2], given) if all(key in o for o in others)]


FILES = ("fig1c.csv", "fig1c.png")  # what `run_methods` writes under `out`


def run_methods(
    runs: list[tuple[str, int, config.RunConfig]],
    out: str | Path | None = None,
    on_result: Callable[[str, int, RunResult], None] | None = None,
    report: Report | None = None,
) -> pd.DataFrame:
    """Run every config; one row per run. With `out`, also the CSV (written after each run)
    and the Fig. 1C PNG.
    `report` is each run's `train.fit` report (every epoch), `on_result` called after each."""
    first = runs[0][2].data if runs else None
    video = simulate(first.balls, first.seed) if first is not None else None
    rows = []
    for method, seed, cfg in runs:
        result = fit(cfg, report, video=video if cfg.data == first else None)
        rows.append({"method": method, "seed": seed, **result.metrics()})
        if out is not None:  # after every run: Ctrl-C or a crash keeps the runs done
            write_text(Path(out) / "fig1c.csv", pd.DataFrame(rows).to_csv(index=False))
        if on_result is not None:
            on_result(method, seed, result)
    table = pd.DataFrame(rows)
    if out is not None and len(table):
        out = Path(out)
        errors = {m: list(g["probe_error_px"]) for m, g in table.groupby("method", sort=False)}
        figures.probe_error_bars(errors, out / "fig1c.png")
    return table


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Median, min and max probe error per method (the README's table)."""
    grouped = table.groupby("method", sort=False)["probe_error_px"]
    return pd.DataFrame(
        {
            "median_px": grouped.median(),
            "min_px": grouped.min(),
            "max_px": grouped.max(),
            "seeds": grouped.size(),
        }
    )
