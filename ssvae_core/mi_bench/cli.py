"""``ssvae mi-bench``: train the estimators' critics on pairs of known MI, print the tables.

    ssvae mi-bench [--tasks gaussian,student_t] [--files pairs.npz ...] [--steps N] [--seeds K]
                   [--estimators ...] [--couplings ...] [--mis 2,6] [--out table.md]
                   [--csv rows.csv] [--figure bias.png] [--from-csv rows.csv] [--smoke-test]

prints markdown tables, one per task (mean ± std over seeds; estimator x coupling rows,
true-MI columns), and with ``--figure`` plots each estimate's bias. ``--files`` adds pairs you
bring (`problems.from_npz`: ``x`` [n, dx], ``y`` [n, dy], ``mi``); ``--tasks none`` runs only
those. Also ``python -m ssvae_core.mi_bench ...``.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ssvae_core.errors import EXIT_BAD_INPUT, EXIT_OK, ConfigError

DESCRIPTION = "Score the MI estimators on pairs of known mutual information."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``ssvae mi-bench`` (see the module doc); nothing heavy is imported."""
    tasks = "gaussian, gaussian-halfcube, student_t, student_t-asinh"
    parser.add_argument("--tasks", default="gaussian", help=f"of {tasks}, or none")
    parser.add_argument("--files", nargs="+", default=[], metavar="NPZ", help="pairs to score")
    parser.add_argument("--steps", type=int, default=2000, help="Adam steps per run")
    parser.add_argument("--seeds", type=int, default=2, help="number of seeds (0..K-1)")
    parser.add_argument("--estimators", help="comma-separated (default: every estimator)")
    parser.add_argument("--couplings", help="comma-separated (default: every coupling)")
    parser.add_argument("--mis", default="2,4,6,8,10", help="true MIs of the tasks (nats)")
    parser.add_argument("--out", default=None, help="also write the markdown tables here")
    parser.add_argument("--csv", default=None, help="also write every run (one row each) here")
    parser.add_argument("--figure", default=None, help="also plot every estimate's bias here")
    parser.add_argument("--smoke-test", action="store_true", help="tiny run: 20 steps, 1 seed")
    parser.add_argument(
        "--from-csv",
        metavar="CSV",
        help="train nothing: redraw the tables and figure from the rows of a --csv",
    )


def run(args: argparse.Namespace) -> int:
    """Run the benchmark for parsed `args`; -> the exit status (2: bad input, before training)."""
    import pandas as pd
    import torch

    from ssvae_core.couplings import COUPLINGS
    from ssvae_core.mi_bench import critics, problems, tables
    from ssvae_core.objectives import ESTIMATORS

    if args.from_csv is not None:
        results = tables.with_optimal_recomputed(pd.read_csv(args.from_csv))
        header = f"Tables redrawn from `{args.from_csv}`; the {critics.OPTIMAL} rows recomputed."
        write_outputs(results, header, args.out, args.csv, args.figure)
        return EXIT_OK
    steps, n_seeds = (20, 1) if args.smoke_test else (args.steps, args.seeds)
    try:
        tasks = [] if args.tasks == "none" else args.tasks.split(",")
        mis = [float(mi) for mi in args.mis.split(",")]
        cases: list[problems.Problem] = [
            problems.synthetic(t, mi) for t, mi in itertools.product(tasks, mis)
        ]
        cases += [problems.from_npz(path) for path in args.files]
        if not cases:
            raise ConfigError("--tasks: no task and no --files: nothing to score")
        estimators = (args.estimators or ",".join(ESTIMATORS)).split(",")
        couplings = (args.couplings or ",".join(COUPLINGS)).split(",")
        started = time.perf_counter()
        total = len(cases) * len(estimators) * (len(couplings) + 1) * n_seeds
        done = itertools.count(1)

        def progress(row: Mapping[str, object]) -> None:
            fields = " ".join(f"{k}={v}" for k, v in row.items())
            elapsed = time.perf_counter() - started
            print(f"[{elapsed:6.0f}s] {next(done)}/{total} {fields}", file=sys.stderr, flush=True)

        results = critics.staircase(
            cases, estimators, couplings, steps, range(n_seeds), True, progress
        )
    except ValueError as err:  # ConfigError too: an unknown name, a bad file, an MI too low
        print(f"ssvae mi-bench: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    seconds = time.perf_counter() - started
    command = " ".join(["ssvae mi-bench", *getattr(args, "argv", [])])
    header = (
        f"`{command}` on {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}: "
        f"{steps} Adam steps (batch 64, lr 5e-4) per cell and seed, seeds 0..{n_seeds - 1}, "
        f"mean ± std; wall time {seconds:.0f} s with {torch.get_num_threads()} torch thread(s)."
    )
    write_outputs(results, header, args.out, args.csv, args.figure)
    return EXIT_OK


def write_outputs(
    results: Any, header: str, out: str | None, csv: str | None, figure: str | None
) -> None:
    """Print the header and tables; write them, the rows and the bias figure where asked."""
    from ssvae_core.mi_bench.tables import markdown_table, markdown_tables

    many = results["task"].nunique() > 1
    tables = markdown_tables(results) if many else markdown_table(results)
    document = f"{header}\n\n{tables}\n"
    print(document)
    if out is not None:
        with open(out, "w", encoding="utf-8") as handle:
            handle.write(document)
    if csv is not None:
        results.to_csv(csv, index=False)
    if figure is not None:
        from ssvae_core.mi_bench.figures import estimator_bias

        estimator_bias(results, figure)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ssvae_core.mi_bench ARGS``: the same as ``ssvae mi-bench ARGS``."""
    parser = argparse.ArgumentParser(prog="ssvae mi-bench", description=DESCRIPTION)
    add_arguments(parser)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    return run(args)
