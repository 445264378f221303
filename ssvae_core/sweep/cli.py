"""``ssvae sweep FILE`` and ``ssvae report FILE``: parse, call one function, print.

The ``ssvae`` command wires them with `add_parser` / `add_report_parser` (``sweeps/run.py``
runs it on a Ray cluster head). The sweep file is read and validated before Ray, Optuna or
MLflow is imported, so a bad file answers at once. Exit status (`ssvae_core.errors`): 0 done,
1 some trial errored, 2 bad spec (the message names the dotted key), trials no node can
hold, a sweep directory in the wrong state or a missing ``sweep`` extra; 3 MLflow out of
reach, another driver of the same sweep name running, or a Ray address that does not answer
- all before any trial starts - or a disk that fills up mid-sweep; 130 interrupted (Ctrl-C
or SIGTERM; ``--resume`` continues it), as the nightly's (``ssvae nightly``) are; 143 a
SIGTERM before the first trial started (``--resume`` runs it from the start) or after the
last one ended, while the tables are written (``--resume`` writes them).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

from ssvae_core.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INFRA,
    EXIT_INTERRUPTED,
    EXIT_OK,
    ConfigError,
    path_arg,
)

SWEEP_EXTRA = ("ray", "optuna", "mlflow")


def missing_extra() -> str | None:
    """The message for an install without the ``sweep`` extra, or None when it is there.

    (Imported, not only looked up: the runner imports them next anyway.)
    """
    missing = []
    for name in SWEEP_EXTRA:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if not missing:
        return None
    return (
        f"this needs the 'sweep' extra ({', '.join(missing)} not installed): "
        "pip install 'ssvae[sweep]' (or `make venv` in a checkout)"
    )


def _storage_args(parser: argparse.ArgumentParser, name_default: str) -> None:
    parser.add_argument(
        "--storage-path", type=path_arg, help="where sweeps live (default: runs/sweeps)"
    )
    parser.add_argument("--name", help=f"the sweep's directory name (default: {name_default})")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``sweep`` to an argparse subparsers object; returns its parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sweep",
        help="run a study (sweeps/NAME.yaml) on Ray Tune, tracked in MLflow",
        description="Run a sweep spec (sweeps/NAME.yaml) on Ray Tune; MLflow tracks every trial.",
    )
    parser.add_argument(
        "file", type=path_arg, metavar="FILE", help="a sweep spec, e.g. sweeps/smoke.yaml"
    )
    parser.add_argument(
        "--address", help="Ray cluster to join ('auto' on a head node); default: start one here"
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db "
        "here, what `mlflow ui` reads)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue an interrupted sweep (same spec, name)"
    )
    only = parser.add_mutually_exclusive_group()
    only.add_argument(
        "--sync",
        action="store_true",
        help="only replay MLflow operations left pending by an outage; no trials run",
    )
    only.add_argument(
        "--dry-run",
        action="store_true",
        help="check the spec against this machine and say what it would run; nothing runs, "
        "and neither Ray nor MLflow is needed",
    )
    _storage_args(parser, "the spec's name")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``ssvae sweep`` for parsed `args`; -> the exit status."""
    from ssvae_core import safe_yaml

    try:
        text = safe_yaml.read_text(args.file, "sweep file (sweeps/NAME.yaml)")  # read once
        safe_yaml.read_yaml(text, str(args.file))  # broken YAML at once, before torch loads
        from ssvae_core.preflight import writable_dir
        from ssvae_core.sweep import plan, preflight, spec, storage

        sweep = spec.load(args.file, text=text)
        root = args.storage_path or storage.DEFAULT_STORAGE
        directory = storage.sweep_dir(sweep, root, args.name)  # a bad --name: now
        for same in [*plan.same_runs(sweep), *plan.idle_searches(sweep)] if not args.sync else ():
            print(f"ssvae sweep: warning: {same}", file=sys.stderr)
        if args.dry_run:
            preflight.check_sweep(sweep, args.address)
            if preflight.starts_ray_here(args.address):  # else the cluster's nodes decide
                preflight.check_resources_here(sweep)
            writable_dir(directory.parent, "--storage-path")  # as `runner.run_sweep` checks it
            storage.check_state(sweep, directory, args.resume)
            if missing_extra() is None:  # the URI's store, where MLflow is there to ask
                from ssvae_core.sweep import tracking

                tracking.default_uri(args.tracking_uri)
            print(plan.describe(sweep, directory, args.resume))
            print("nothing was run (--dry-run)")
            return EXIT_OK
    except ConfigError as err:
        print(f"ssvae sweep: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if (message := missing_extra()) is not None:
        print(f"ssvae sweep: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from ssvae_core.sweep import cluster, lock, runner, tracking

    try:
        uri = tracking.default_uri(args.tracking_uri)
        if args.sync:
            left = runner.sync_sweep(sweep, uri, root, args.name)
            print(f"MLflow operations still pending: {left}")
            return EXIT_OK if left == 0 else EXIT_FAILED
        result = runner.run_sweep(sweep, args.address, uri, args.resume, root, args.name)
    except ConfigError as err:
        print(f"ssvae sweep: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (tracking.TrackingUnavailable, lock.Busy, cluster.ClusterUnavailable) as err:
        print(f"ssvae sweep: error: {err}", file=sys.stderr)
        return EXIT_INFRA
    except runner.SweepInterrupted as err:
        print(f"ssvae sweep: {err}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as err:  # the storage path full or read-only mid-sweep: a machine's problem
        said = storage.disk_error(err, root)
        print(f"ssvae sweep: error: {said}; once fixed, try --resume", file=sys.stderr)
        return EXIT_INFRA
    return EXIT_FAILED if result.n_errors else EXIT_OK


def add_report_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``report`` to an argparse subparsers object; returns its parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report",
        help="redraw a finished sweep's figures and summary.md from its trials table",
        description="Redraw a sweep's study figures and summary.md from DIR/trials.csv "
        "(DIR = storage path / name); nothing is trained, and Ray is not needed.",
    )
    parser.add_argument(
        "file",
        type=path_arg,
        metavar="FILE",
        help="the sweep spec it ran, e.g. sweeps/critics.yaml",
    )
    _storage_args(parser, "the newest finished sweep of the spec")
    parser.add_argument(
        "--out", type=path_arg, help="write the figures and summary.md here (default: DIR)"
    )
    parser.set_defaults(func=run_report)
    return parser


def run_report(args: argparse.Namespace) -> int:
    """Run ``ssvae report`` for parsed `args`; -> the exit status (2: no such sweep, or a
    table without the grid's axes or the study's columns; 1: the study could not draw it)."""
    import pandas as pd

    from ssvae_core.preflight import writable_dir
    from ssvae_core.sweep import reports, spec, storage, tables

    try:
        sweep = spec.load(args.file)
        root = args.storage_path or storage.DEFAULT_STORAGE
        directory = storage.finished_sweep(sweep, root, args.name)
        table = directory / "trials.csv"
        try:
            trials = tables.read_trials(table)
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
            raise ConfigError(f"{table}: not a trials table ({err})") from None
        except OSError as err:  # a table this user may not read
            raise ConfigError(f"{table}: cannot read it: {err.strerror or err}") from None
        if trials.empty:
            raise ConfigError(f"{table}: no trials in it (a header only): nothing to draw")
        missing = [key for key, _ in sweep.axes if key not in trials.columns]
        if missing:
            raise ConfigError(
                f"{table}: not the trials table of {args.file}: no column for its grid axes "
                f"{', '.join(missing)}"
            )
        missing = [key for key in reports.columns(sweep.report) if key not in trials.columns]
        if missing:
            raise ConfigError(
                f"{table}: no column {', '.join(missing)}, which the {sweep.report!r} report draws"
            )
        partial = {k for k, _ in sweep.axes if any(k not in dict(c.params) for c in sweep.cells)}
        reports.check_values(
            sweep.report, trials, sweep.axes, str(table), partial,
            most=sweep.n_trials, one_per_cell=sweep.search is None,
        )  # fmt: skip
        out = writable_dir(args.out or directory, "--out")
    except ConfigError as err:
        print(f"ssvae report: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        paths = reports.write(sweep.report, trials, sweep.report_context(), out, strict=True)
        if sweep.search is not None:  # the study's estimate, kept in summary.md
            from ssvae_core.sweep import selection

            selection.redraw_section(directory, out)
    except (KeyError, ValueError) as err:  # a trials table the study cannot read
        print(f"ssvae report: error: the {sweep.report!r} report failed: {err!r}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as err:  # a folder or a pipe where a figure goes, a full disk
        where = err.filename or out
        print(f"ssvae report: error: could not write {where}: {err.strerror or err}",
              file=sys.stderr)  # fmt: skip
        return EXIT_FAILED
    for path in paths:
        print(path)
    return EXIT_OK
