"""Sweeps and ablations of self-supervised VAEs: InfoNCE as the ELBO of an SSVAE whose prior is
set by the coupling f(z, z').

Each subcommand parses its options, calls one function of the package and prints. Bad input
(an unknown key or name, a value out of range, a missing file) exits with status 2 and a
message naming the key or path, before any video is simulated or any training starts.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ssvae_core import allocator
from ssvae_core.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INFRA,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PIPE,
    EXIT_TERMINATED,
    ConfigError,
    Terminated,
    path_arg,
    shown,
)
from ssvae_core.mi_bench import cli as mi_bench_cli
from ssvae_core.sweep import cli as sweep_cli  # imports no Ray until a sweep runs
from ssvae_core.sweep.nightly import cli as nightly_cli

EPILOG = """\
examples:
  ssvae train --preset small --set coupling.kind=gaussian --out runs/g0
  ssvae sweep sweeps/paper-small.yaml --dry-run   (what it would run; nothing runs)
  ssvae sweep sweeps/paper-small.yaml        (then `mlflow ui` in this directory)
  ssvae report sweeps/paper-small.yaml
  ssvae nightly sweeps/nightly-small.yaml    (a scheduled ablation against its baseline)
  ssvae mi-bench --smoke-test

exit status: 0 done; 1 the work failed (a diverged run, an errored trial, a regression);
2 bad input, refused before any compute; 3 infrastructure (MLflow or Ray out of reach,
another run of the same name, a full disk); 130 interrupted (a sweep or nightly stopped
by Ctrl-C or SIGTERM: --resume continues it); 141 stdout's reader left; 143 terminated by
SIGTERM (train, data, fig1c, mi-bench, report; a sweep or nightly before its trials start
or after they end; a sweep's --resume finishes it)
"""


class _Once(argparse.Action):
    """An option that may be given once: a second ``--config`` replaced the first, whose
    settings were then silently not applied."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option: str | None = None) -> None:  # fmt: skip
        if getattr(namespace, self.dest) is not None:
            parser.error(f"{option}: given twice ({getattr(namespace, self.dest)}, {values}); "
                         "put the settings of both in one file")  # fmt: skip
        setattr(namespace, self.dest, values)


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="small", help="paper | small (default: small)")
    parser.add_argument(
        "--config",
        type=path_arg,
        action=_Once,
        help="a YAML file of config sections, applied on the preset",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one dotted key, e.g. --set coupling.kind=bilinear (repeatable)",
    )


class Tolerant:
    """`stream` (stderr) for progress lines during training, its write errors dropped: a full
    disk under ``2> log`` stopped a run at its next progress line, and the run is worth more
    than the line."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            written = self._stream.write(text)
        except OSError:
            return 0
        return written if isinstance(written, int) else len(text)

    def flush(self) -> None:
        with contextlib.suppress(OSError):
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding: tqdm asks
        return getattr(self._stream, name)

    def __eq__(self, other: object) -> bool:  # tqdm clears its bar for a line to its file
        inner = other._stream if isinstance(other, Tolerant) else other
        return inner is self._stream

    def __hash__(self) -> int:
        return id(self._stream)


def cmd_train(args: argparse.Namespace) -> int:
    from ssvae_core import loader, preflight

    values = loader.given(args.config, args.overrides)
    cfg = loader.from_preset(args.preset, values)
    if unused := loader.ignored(cfg, values):
        said = f"train.mode {cfg.train.mode} does not train with {', '.join(unused)}"
        print(f"ssvae train: warning: {said}: set, it changes nothing in the run", file=sys.stderr)
    preflight.check_run(cfg)
    from ssvae_core import run_files
    from ssvae_core.checkpoint import CHECKPOINT_FILE

    for folder, key, names in (
        (args.out, "--out", run_files.FILES),
        (args.checkpoint_dir, "--checkpoint-dir", (CHECKPOINT_FILE,)),
    ):
        if folder:
            preflight.writable_dir(folder, key)
            for name in names:
                path = preflight.output_file(Path(folder) / name, key)
                if args.config and path.resolve() == Path(args.config).resolve():
                    raise ConfigError(f"{key}: {path} is also the --config file; choose another")
    from tqdm import tqdm

    from ssvae_core.balls import simulate
    from ssvae_core.metrics import json_ready
    from ssvae_core.train import fit

    video = simulate(cfg.data.balls, cfg.data.seed)
    epochs = cfg.epochs_trained
    with tqdm(
        total=epochs,
        desc=f"{cfg.train.mode}:{cfg.coupling.kind}",
        unit="epoch",
        disable=args.quiet,
        file=Tolerant(sys.stderr),
    ) as bar:
        shown: dict[str, str] = {}

        def progress(metrics: dict[str, Any], _ckpt: str | None) -> None:
            if "loss" in metrics:
                shown["loss"] = f"{metrics['loss']:.3f}"
            if "probe_error_px" in metrics:  # the probe's epochs only
                shown["probe_px"] = f"{metrics['probe_error_px']:.2f}"
            if not reported and metrics["epoch"] > 0:  # a fresh run reports epoch 0 first
                _said(bar, f"resumed from {args.checkpoint_dir} after epoch {metrics['epoch'] - 1}")
            reported.append(metrics["epoch"])
            bar.n = metrics["epoch"]  # the epochs done, those restored included
            bar.set_postfix(shown)

        reported: list[int] = []

        try:
            result = fit(cfg, report=progress, checkpoint_dir=args.checkpoint_dir, video=video)
        except OSError as err:  # the only files `fit` writes: its checkpoints (a full disk)
            if not args.checkpoint_dir:
                raise
            print(
                f"ssvae: error: could not write a checkpoint in {args.checkpoint_dir}: "
                f"{err.strerror or err}; the last one written is kept, and the same command "
                "resumes from it",
                file=sys.stderr,
            )
            return EXIT_INFRA
        done = max(len(result.history) - 1, 0)  # the epochs done, those restored included
        if not reported and args.checkpoint_dir and done > 0:  # nothing trained since
            if result.status == "ok" and done >= cfg.epochs_trained:
                _said(
                    bar, f"the checkpoint in {args.checkpoint_dir} holds every epoch: none trained"
                )
            else:  # the first epoch after it diverged
                _said(bar, f"resumed from {args.checkpoint_dir} after epoch {done}")
        bar.n = done
        bar.refresh()
    written = True
    if args.out:
        try:
            run_files.write_run(result, video, args.out)
        except OSError as err:  # a disk that filled during training: the metrics still print
            print(f"ssvae: error: could not write {args.out}: {err}", file=sys.stderr)
            written = False  # the machine's problem, as in fig1c: exit 3
    metrics = json_ready(result.metrics())
    if result.status != "ok":
        print(f"ssvae: run {result.status}: {result.message}", file=sys.stderr)
    if args.json:
        print(json.dumps(metrics))
    else:
        for key, value in metrics.items():
            print(f"{key:>16}: {value}")
    if result.status != "ok":  # the run's own failure first: what the user must change
        return EXIT_FAILED
    return EXIT_OK if written else EXIT_INFRA


def _said(bar: Any, line: str) -> None:
    """One line on stderr above the progress bar (as the bar itself, even with --quiet)."""
    bar.write(f"ssvae train: {line}", file=Tolerant(sys.stderr))


def cmd_data(args: argparse.Namespace) -> int:
    from ssvae_core import loader, preflight

    data, unused = loader.data_from_preset(args.preset, loader.given(args.config, args.overrides))
    if unused:
        print(
            f"ssvae data: warning: {', '.join(unused)}: set, it changes nothing in the video",
            file=sys.stderr,
        )
    preflight.check_video(data)
    if args.preview:
        preflight.image_path(args.preview, "--preview")
    from ssvae_core import figures
    from ssvae_core.balls import simulate

    video = simulate(data.balls, data.seed)
    print(f"video: {video.frames.shape} uint8, positions {video.positions.shape} px")
    if args.preview:
        try:
            print(f"preview: {figures.preview(video, args.preview)}")
        except OSError as err:  # a full disk, say
            print(f"ssvae: error: could not write {args.preview}: {err}", file=sys.stderr)
            return EXIT_FAILED
    return EXIT_OK


def cmd_fig1c(args: argparse.Namespace) -> int:
    from ssvae_core import fig1c, loader, preflight

    values = loader.given(args.config, args.overrides)
    runs = fig1c.method_configs(args.preset, args.methods, args.seeds, values)
    if unused := fig1c.unused(runs, values):
        print(
            f"ssvae fig1c: warning: {', '.join(unused)}: set, and no method of --methods trains "
            "with it: it changes nothing in the runs",
            file=sys.stderr,
        )

    for _, _, cfg in runs:
        preflight.check_run(cfg)
    if args.out:
        preflight.writable_dir(args.out, "--out")
        for name in fig1c.FILES:  # found after hours of training, a stack
            preflight.output_file(Path(args.out) / name, "--out")

    from tqdm import tqdm

    total = sum(cfg.epochs_trained for _, _, cfg in runs)
    stderr = Tolerant(sys.stderr)
    with tqdm(total=total, desc="fig1c", unit="epoch", disable=args.quiet, file=stderr) as bar:

        def epoch_done(metrics: dict[str, Any], _ckpt: str | None) -> None:
            bar.update(1 if metrics["epoch"] > 0 else 0)

        def show(method: str, seed: int, result: Any) -> None:
            bar.update(result.config.epochs_trained - (len(result.history) - 1))  # diverged
            bar.write(
                f"{method:>11} seed {seed}: {result.probe_error_px:7.3f} px  "
                f"({result.status}, {result.seconds:.0f} s)",
                file=stderr,
            )

        try:
            table = fig1c.run_methods(runs, args.out, on_result=show, report=epoch_done)
        except OSError as err:  # a full disk under --out
            where = err.filename or args.out
            print(f"ssvae fig1c: error: could not write {where}: {err.strerror or err}",
                  file=sys.stderr)  # fmt: skip
            return EXIT_INFRA
    print(fig1c.summary(table).to_string(float_format=lambda v: f"{v:.2f}"))
    failed = table[table["status"] != "ok"]
    if len(failed):  # as `ssvae train`: a run that did not finish ok is exit 1
        runs_shown = ", ".join(
            f"{r.method} seed {r.seed} ({r.status})" for r in failed.itertuples()
        )
        print(
            f"ssvae fig1c: {len(failed)} of {len(table)} runs failed: {runs_shown}", file=sys.stderr
        )
        return EXIT_FAILED
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssvae",
        description=__doc__.split("\n\n")[0].replace("\n", " "),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train",
        help="train one run and probe it",
        description="Train one SSVAE (or a control) on the moving-balls video and score its "
        "representation with a linear probe. The config is a preset, then --config, then --set.",
    )
    _config_args(train)
    train.add_argument(
        "--out", type=path_arg, help="write config, metrics, history and figures here"
    )
    train.add_argument("--json", action="store_true", help="print one JSON object last")
    train.add_argument(
        "--checkpoint-dir", type=path_arg, help="resume from / write checkpoints here"
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)

    data = sub.add_parser(
        "data", help="simulate the moving-balls video", description="Simulate the video."
    )
    _config_args(data)
    data.add_argument(
        "--preview", type=path_arg, metavar="FILE.png", help="draw frames with true centres"
    )
    data.set_defaults(func=cmd_data)

    fig = sub.add_parser(
        "fig1c",
        help="Fig. 1C: methods x seeds, one after another",
        description="Fig. 1C without Ray or MLflow: every method x seed, one after another.",
    )
    _config_args(fig)
    fig.add_argument(
        "--methods", nargs="+", default=["supervised", "gaussian", "bilinear", "untrained"]
    )
    fig.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    fig.add_argument("--out", type=path_arg, help="write fig1c.csv and fig1c.png here")
    fig.add_argument("--quiet", action="store_true", help="no progress bar")
    fig.set_defaults(func=cmd_fig1c)

    sweep_cli.add_parser(sub)
    sweep_cli.add_report_parser(sub)
    nightly_cli.add_parser(sub)

    bench = sub.add_parser(
        "mi-bench", help="score the MI estimators on known MI", description=mi_bench_cli.DESCRIPTION
    )
    mi_bench_cli.add_arguments(bench)
    bench.set_defaults(func=mi_bench_cli.run)
    return parser


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated


FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO}  # a stream that cannot be written


def _check_tqdm_environment() -> None:
    """``TQDM_*`` variables that tqdm cannot use (``TQDM_NCOLS=abc`` fails its import,
    ``TQDM_BAR_FORMAT={bar`` its first bar) are a `ConfigError` naming them, before any
    compute; without any, tqdm is not imported here."""
    names = sorted(name for name in os.environ if name.upper().startswith("TQDM_"))
    if not names:
        return
    try:
        from tqdm import tqdm

        interval, tqdm.monitor_interval = tqdm.monitor_interval, 0  # no monitor thread left
        try:
            with tqdm(total=2, file=io.StringIO(), mininterval=0) as bar:
                bar.update(1)
                bar.refresh()
        finally:
            tqdm.monitor_interval = interval
    except Exception as err:  # ValueError, KeyError, TypeError: whatever the variable broke
        said = ", ".join(f"${name}={shown(os.environ[name], 40)}" for name in names)
        which = "it" if len(names) == 1 else "one of them"
        raise ConfigError(f"{said}: tqdm (the progress bars) cannot use {which}: {err!r}") from None


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so Python's own flush at exit cannot fail a second time."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def main(argv: Sequence[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(raw)
    args.argv = raw[1:]  # the subcommand's own arguments, as typed
    func: Callable[[argparse.Namespace], int] = args.func
    allocator.tune_process()  # before torch is imported: see ssvae_core/allocator.py
    # Every figure is a file: matplotlib's Agg, whatever MPLBACKEND says (an unknown name there
    # fails `import matplotlib` itself, after the training). Ray's local workers inherit it.
    os.environ["MPLBACKEND"] = "agg"
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        _check_tqdm_environment()
        return func(args)
    except ConfigError as err:
        print(f"ssvae: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: one line, not the stack it landed in
        said = "terminated (SIGTERM)" if isinstance(err, Terminated) else "interrupted"
        with contextlib.suppress(OSError):
            print(f"\nssvae {raw[0] if raw else ''}: {said}", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(err, Terminated) else EXIT_INTERRUPTED
    except BrokenPipeError:  # `ssvae ... | head` read what it wanted: no stack, as `cat` dies
        _drop_stdout()
        return EXIT_PIPE
    except OSError as err:
        if err.errno not in FULL or err.filename is not None:
            raise
        # Only the standard streams are written without a name (`> /dev/full`, a full disk
        # under `2> log`): every file the commands write is named, and caught where written.
        _drop_stdout()
        with contextlib.suppress(OSError):
            print(f"ssvae: error: could not write the output: {err.strerror}", file=sys.stderr)
        return EXIT_INFRA
    finally:
        signal.signal(signal.SIGTERM, previous)  # main() called in a process that goes on


if __name__ == "__main__":
    sys.exit(main())
