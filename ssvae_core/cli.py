"""The ``ssvae`` command: parse, call one function, print.

Bad input (unknown key, unknown name, a value out of range) exits with status 2 and a message
naming the key, before any video is simulated or any training starts.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from ssvae_core import config

EXIT_BAD_INPUT = 2


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="small", help="paper | small (default: small)")
    parser.add_argument("--config", help="a YAML file of config sections, applied on the preset")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one dotted key, e.g. --set coupling.kind=bilinear (repeatable)",
    )


def _json_default(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else str(value)


def _clean(metrics: dict[str, Any]) -> dict[str, Any]:
    """NaN/inf -> null so that the output is strict JSON."""
    return {
        k: _json_default(v) if isinstance(v, float) and not math.isfinite(v) else v
        for k, v in metrics.items()
    }


def cmd_train(args: argparse.Namespace) -> int:
    cfg = config.load(args.preset, args.config, args.overrides)
    from tqdm import tqdm

    from ssvae_core import artifacts
    from ssvae_core.balls import simulate
    from ssvae_core.train import fit

    video = simulate(cfg.data, cfg.data.seed)
    epochs = 0 if cfg.train.mode == "untrained" else cfg.train.epochs
    with tqdm(
        total=epochs,
        desc=f"{cfg.train.mode}:{cfg.coupling.kind}",
        unit="epoch",
        disable=args.quiet,
        file=sys.stderr,
    ) as bar:

        def progress(metrics: dict[str, Any], _ckpt: str | None) -> None:
            bar.set_postfix(
                loss=f"{metrics.get('loss', math.nan):.3f}",
                probe_px=f"{metrics['probe_error_px']:.2f}",
            )
            bar.update(1 if metrics["epoch"] > 0 else 0)

        result = fit(cfg, report=progress, checkpoint_dir=args.checkpoint_dir, video=video)
    if args.out:
        artifacts.write_run(result, video, args.out)
    metrics = _clean(result.metrics())
    if result.status != "ok":
        print(f"ssvae: run {result.status}: {result.message}", file=sys.stderr)
    if args.json:
        print(json.dumps(metrics))
    else:
        for key, value in metrics.items():
            print(f"{key:>16}: {value}")
    return 0 if result.status == "ok" else 1


def cmd_data(args: argparse.Namespace) -> int:
    cfg = config.load(args.preset, args.config, args.overrides)
    from ssvae_core import figures
    from ssvae_core.balls import simulate

    video = simulate(cfg.data, cfg.data.seed)
    print(f"video: {video.frames.shape} uint8, positions {video.positions.shape} px")
    if args.preview:
        print(f"preview: {figures.preview(video, args.preview)}")
    return 0


def cmd_fig1c(args: argparse.Namespace) -> int:
    from ssvae_core import reproduce

    runs = reproduce.configs(args.preset, args.methods, args.seeds, args.overrides)

    def show(method: str, seed: int, result: Any) -> None:
        print(
            f"{method:>11} seed {seed}: {result.probe_error_px:7.3f} px  "
            f"({result.status}, {result.seconds:.0f} s)",
            file=sys.stderr,
            flush=True,
        )

    table = reproduce.fig1c(runs, args.out, on_result=show)
    print(reproduce.summary(table).to_string(float_format=lambda v: f"{v:.2f}"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssvae", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train one run and probe it")
    _config_args(train)
    train.add_argument("--out", help="write config, metrics, history and figures here")
    train.add_argument("--json", action="store_true", help="print one JSON object last")
    train.add_argument("--checkpoint-dir", help="resume from / write checkpoints here")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)

    data = sub.add_parser("data", help="simulate the moving-balls video")
    _config_args(data)
    data.add_argument("--preview", metavar="FILE.png", help="draw frames with true centres")
    data.set_defaults(func=cmd_data)

    fig = sub.add_parser("fig1c", help="Fig. 1C: methods x seeds, sequentially")
    _config_args(fig)
    fig.add_argument(
        "--methods", nargs="+", default=["supervised", "gaussian", "bilinear", "untrained"]
    )
    fig.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    fig.add_argument("--out", help="write fig1c.csv and fig1c.png here")
    fig.set_defaults(func=cmd_fig1c)

    from ssvae_core.sweep.cli import add_parser as add_sweep  # imports no ray until it runs
    from ssvae_core.sweep.cli import add_report_parser

    add_sweep(sub)
    add_report_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except config.ConfigError as err:
        print(f"ssvae: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (FileNotFoundError, yaml.YAMLError) as err:
        print(f"ssvae: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
