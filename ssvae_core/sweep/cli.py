"""``ssvae sweep FILE``: parse, call `run_sweep` (or `sync_sweep`), print; exit 2 on bad input.

The ``ssvae`` command wires it as ``add_parser(subparsers)`` and ``run(args)``; also runnable
alone as ``python -m ssvae_core.sweep.cli sweep FILE ...`` (and by ``sweeps/run.py`` on a Ray
cluster head). Exit status: 0 done, 1 some trial errored, 2 bad spec (the message names the
dotted key), unreachable MLflow or a sweep directory in the wrong state - all before any
trial starts; 130 interrupted (Ctrl-C; ``--resume`` continues it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from ssvae_core.config import ConfigError

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``sweep`` to an argparse subparsers object; returns its parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sweep",
        help="run a study (sweeps/NAME.yaml) on Ray Tune, tracked in MLflow",
        description="Run a sweep spec (sweeps/NAME.yaml) on Ray Tune; MLflow tracks every trial.",
    )
    parser.add_argument("file", metavar="FILE", help="a sweep spec, e.g. sweeps/smoke.yaml")
    parser.add_argument(
        "--address", help="Ray cluster to join ('auto' on a head node); default: start one here"
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: sqlite:///mlflow.db here, what `mlflow ui` reads)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue an interrupted sweep (same spec, name)"
    )
    parser.add_argument(
        "--sync",
        action="store_true",
        help="only replay MLflow operations left pending by an outage; no trials run",
    )
    parser.add_argument(
        "--storage-path", default=None, help="where sweeps live (default: runs/sweeps)"
    )
    parser.add_argument("--name", help="the sweep's directory name (default: the spec's name)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``ssvae sweep`` for parsed `args`; -> the exit status."""
    from ssvae_core.sweep import runner, spec, tracking

    uri = args.tracking_uri or tracking.DEFAULT_TRACKING_URI
    storage = args.storage_path or runner.DEFAULT_STORAGE
    try:
        sweep = spec.load(args.file)
        if args.sync:
            left = runner.sync_sweep(sweep, uri, storage, args.name)
            print(f"MLflow operations still pending: {left}")
            return 0 if left == 0 else 1
        cells = runner.run_sweep(sweep, args.address, uri, args.resume, storage, args.name)
    except (ConfigError, FileNotFoundError, yaml.YAMLError, tracking.TrackingUnavailable) as err:
        print(f"ssvae sweep: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except runner.SweepInterrupted as err:
        print(f"ssvae sweep: {err}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 1 if len(cells) and int(cells["n_error"].sum()) > 0 else 0


def add_report_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``report`` to an argparse subparsers object; returns its parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report",
        help="redraw a finished sweep's figures and summary.md from its trials table",
        description="Redraw a sweep's study figures and summary.md from DIR/trials.csv "
        "(DIR = storage path / name); nothing is trained.",
    )
    parser.add_argument(
        "file", metavar="FILE", help="the sweep spec it ran, e.g. sweeps/critics.yaml"
    )
    parser.add_argument(
        "--storage-path", default=None, help="where sweeps live (default: runs/sweeps)"
    )
    parser.add_argument("--name", help="the sweep's directory name (default: the spec's name)")
    parser.add_argument("--out", help="write the figures and summary.md here (default: DIR)")
    parser.set_defaults(func=run_report)
    return parser


def run_report(args: argparse.Namespace) -> int:
    """Run ``ssvae report`` for parsed `args`; -> the exit status (2: no such sweep)."""
    import pandas as pd

    from ssvae_core.sweep import runner, spec

    try:
        sweep = spec.load(args.file)
        directory = runner.sweep_dir(sweep, args.storage_path or runner.DEFAULT_STORAGE, args.name)
        trials = pd.read_csv(directory / "trials.csv")
    except (ConfigError, FileNotFoundError, yaml.YAMLError) as err:
        print(f"ssvae report: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        paths = runner.write_study(sweep, trials, Path(args.out or directory), strict=True)
    except (KeyError, ValueError) as err:  # a trials table the study cannot read
        print(f"ssvae report: error: the {sweep.report!r} report failed: {err!r}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ssvae")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_parser(subparsers)
    add_report_parser(subparsers)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
