"""``ssvae nightly SPEC ...`` and ``ssvae nightly history SPEC_NAME``: parse, run, print.

    ssvae nightly SPEC [--baseline last|RUN_ID] [--history K] [--set key=value ...]
                  [--tracking-uri URI] [--address A] [--notify URL] [--name NAME]
                  [--storage-path DIR]
    ssvae nightly history SPEC_NAME [--out DIR] [--history K] [--tracking-uri URI]

``history`` takes only its three options: one of the others (`NOT_HISTORY`) is refused, exit 2,
rather than ignored. It only reads: a sqlite ``--tracking-uri`` must name an existing MLflow
database (`report.check_database`), which it neither creates nor changes.

Exit status: 0 baseline / pass / improvement, 1 regression, 2 bad input (before any
compute), 3 infrastructure (MLflow unreachable, an overlapping nightly, errored trials).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ssvae_core.errors import (
    EXIT_BAD_INPUT,
    EXIT_INFRA,
    EXIT_INTERRUPTED,
    EXIT_OK,
    ConfigError,
    check,
    path_arg,
    url_shown,
)

DESCRIPTION = (
    "Run a sweep spec as tonight's nightly ablation and compare it, cell by cell and paired by "
    "seed, with the last finished nightly and the history (docs/nightly.md); or, with "
    "'history SPEC_NAME', draw the history of a spec's nightlies from MLflow alone."
)


USAGE = """\
%(prog)s SPEC [--baseline last|RUN_ID] [--history K] [--set KEY=VALUE ...]
                     [--tracking-uri URI] [--address A] [--notify URL] [--name NAME]
                     [--storage-path DIR]
       %(prog)s history SPEC_NAME [--out DIR] [--history K] [--tracking-uri URI]"""
# the options of `nightly SPEC` that `nightly history` has no use for: given, they are refused
NOT_HISTORY = {
    "baseline": "--baseline", "overrides": "--set", "address": "--address",
    "notify": "--notify", "name": "--name", "storage_path": "--storage-path",
}  # fmt: skip


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``nightly`` to an argparse subparsers object; returns its parser. Every option of
    `NOT_HISTORY` defaults to None (``--set`` to []), so that `run` sees which were given."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "nightly",
        help="a scheduled ablation compared with its baseline",
        description=DESCRIPTION,
        usage=USAGE,
    )
    parser.add_argument("target", type=path_arg, nargs="+", metavar="SPEC | history SPEC_NAME")
    parser.add_argument("--baseline", help="last (default) or a parent run id")
    parser.add_argument(
        "--history",
        type=int,
        help="earlier nights to compare with (default: the spec's nightly.history; for "
        "'history', that key's default)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key in every trial's config (repeatable)",
    )
    parser.add_argument(
        "--tracking-uri", help="MLflow (default: $MLFLOW_TRACKING_URI, else sqlite)"
    )
    parser.add_argument("--address", help="Ray cluster to join ('auto' on a head node)")
    parser.add_argument("--notify", metavar="URL", help="POST the verdict as JSON here")
    parser.add_argument("--name", help="tonight's sweep name (default: SPEC_NAME-DATE-TIME)")
    parser.add_argument(
        "--storage-path", type=path_arg, help="where sweeps live (default: runs/sweeps)"
    )
    parser.add_argument(
        "--out", type=path_arg, help="history only: write its table and figure here"
    )
    parser.set_defaults(func=run)
    return parser


# A taken --name: what to do instead (a sweep's refusal says 'pass --resume', which a nightly
# does not take).
NIGHT_TAKEN = (
    "a night takes a name of its own (the default, SPEC_NAME-YYYYmmdd-HHMMSS, is new each second)"
)


def run(args: argparse.Namespace) -> int:
    """Run ``ssvae nightly`` for parsed `args`; -> the exit status."""
    from ssvae_core import loader, safe_yaml
    from ssvae_core.sweep.cli import missing_extra

    target = list(args.target)
    is_history = target[0] == "history"
    try:
        if (is_history and len(target) != 2) or (not is_history and len(target) != 1):
            raise ConfigError("usage: ssvae nightly SPEC ... | ssvae nightly history SPEC_NAME")
        if is_history:
            given = [f for key, f in NOT_HISTORY.items() if getattr(args, key) not in (None, [])]
            check(
                not given,
                ", ".join(given),
                "not for 'ssvae nightly history SPEC_NAME', which takes only --out, --history "
                "and --tracking-uri (the others are for 'ssvae nightly SPEC')",
            )
        check(is_history or args.out is None, "--out",
              "only for 'ssvae nightly history': a night writes into its sweep's folder "
              "(--storage-path)")  # fmt: skip
        if args.history is not None and args.history < 0:
            raise ConfigError(f"--history: must be >= 0, got {args.history}")
        if args.notify is not None:
            check_notify_url(args.notify)
        if is_history:
            from ssvae_core.preflight import writable_dir
            from ssvae_core.sweep.storage import check_name_component

            check_name_component(target[1], "SPEC_NAME")  # ../../etc wrote outside runs/
            writable_dir(history_dir(target[1], args.out), "--out")
        if not is_history:
            text = safe_yaml.read_text(target[0], "sweep file (sweeps/NAME.yaml)")  # read once
            safe_yaml.read_yaml(text, target[0])  # broken YAML at once, before torch loads
            overrides: dict[str, Any] = {}
            for override in args.overrides:
                loader.merge(overrides, loader.parse_override(override))
            from ssvae_core.sweep import spec, storage

            sweep = spec.load(target[0], overrides=overrides, text=text)
            check(
                sweep.search is None,
                "search",
                "a nightly pairs each grid cell and seed with the last night's, and a "
                "search's trials have neither; judge a grid nightly (its axes under grid:)",
            )
            root = args.storage_path or storage.DEFAULT_STORAGE
            folder = storage.sweep_dir(sweep, root, args.name)  # a bad --name: now, not later
            if args.name is not None:  # the default, SPEC_NAME-YYYYmmdd-HHMMSS, is new
                storage.check_state(sweep, folder, resume=False, taken=NIGHT_TAKEN)
    except ConfigError as err:
        print(f"ssvae nightly: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if (message := missing_extra()) is not None:
        print(f"ssvae nightly: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from ssvae_core.sweep import cluster, lock, runner, storage, tracking

    try:
        uri = tracking.default_uri(args.tracking_uri)
        if is_history:
            return _history(target[1], uri, args)
        from ssvae_core.sweep.nightly.run import NightlyOptions, run_nightly

        options = NightlyOptions(
            baseline="last" if args.baseline is None else args.baseline,
            history=args.history,
            tracking_uri=uri,
            address=args.address,
            storage_path=args.storage_path or storage.DEFAULT_STORAGE,
            name=args.name,
            notify=args.notify,
        )
        return run_nightly(sweep, options).exit_code
    except ConfigError as err:
        print(f"ssvae nightly: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (tracking.TrackingUnavailable, lock.Busy, cluster.ClusterUnavailable) as err:
        print(f"ssvae nightly: error: {err}", file=sys.stderr)
        return EXIT_INFRA
    except runner.SweepInterrupted:  # its parent run stays RUNNING; the next night closes it
        print(
            "ssvae nightly: interrupted; no verdict tonight (the next nightly of this spec "
            "closes this one as stale)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except OSError as err:  # the storage path full or read-only mid-night: a machine's problem
        said = storage.disk_error(err, args.storage_path or storage.DEFAULT_STORAGE)
        print(f"ssvae nightly: error: {said}", file=sys.stderr)
        return EXIT_INFRA


def check_notify_url(url: str) -> None:
    """``--notify``: an http(s) URL with a host and a valid port (1-65535; not ``file://``,
    which urllib would open) and no space or control character (http.client refuses those
    when it sends, after the night), or a `ConfigError`."""
    bad = next((i for i, c in enumerate(url) if ord(c) <= 32 or ord(c) == 127), None)
    check(
        bad is None,
        "--notify",
        f"a space or control character at position {bad}: percent-encode it (a space is %20)",
    )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a port out of range)
    except ValueError as err:
        raise ConfigError(f"--notify: {url_shown(url, path=False)} is not a URL ({err})") from None
    check(
        "@" not in parts.netloc,
        "--notify",
        "a user or token before @ is not sent (urllib would look it up as the host's name); "
        f"put it in the path, got {url_shown(url, path=False)}",
    )
    ok = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    check(
        ok,
        "--notify",
        "expected an http:// or https:// URL with a host and port 1-65535, got "
        + url_shown(url, path=False),
    )


def history_dir(name: str, out: str | None) -> Path:
    """Where ``history SPEC_NAME`` writes: ``--out``, else runs/nightly-history/SPEC_NAME."""
    return Path(out or f"runs/nightly-history/{name}")


def _history(name: str, uri: str, args: argparse.Namespace) -> int:
    """The history table and figure of spec `name`'s nightlies, from MLflow alone."""
    from ssvae_core.sweep.nightly.report import history_report

    where = "--tracking-uri" if args.tracking_uri else "$MLFLOW_TRACKING_URI"
    if not args.tracking_uri and not os.environ.get("MLFLOW_TRACKING_URI"):
        where = f"--tracking-uri (default {uri})"
    out = history_dir(name, args.out)
    try:
        paths = history_report(name, uri, out, args.history, where)
    except OSError as err:  # a full disk: named here, not as the (unused) storage path
        print(f"ssvae nightly: error: --out: could not write in {out}: {err.strerror or err}",
              file=sys.stderr)  # fmt: skip
        return EXIT_INFRA
    for path in paths:
        print(path)
    return EXIT_OK
