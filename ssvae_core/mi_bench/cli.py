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
import contextlib
import io
import itertools
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from ssvae_core.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    ConfigError,
    check,
    check_name,
    path_arg,
    repeated,
    shown,
)
from ssvae_core.files import write_text
from ssvae_core.mi_bench import DEFAULT_BATCH, DEFAULT_LR, DEFAULT_MIS, DEFAULT_STEPS
from ssvae_core.safe_yaml import read_bytes

MAX_ROWS_BYTES = 100_000_000  # docs/estimators-suite.csv, 480 rows, is 26 kB
MAX_SEEDS = 1000  # the runs are a product of tasks, estimators, couplings and seeds
# options that --from-csv (it trains nothing) and --smoke-test (20 steps, 1 seed) would ignore
NOT_WITH = {
    "from_csv": (
        "tasks",
        "files",
        "steps",
        "seeds",
        "estimators",
        "couplings",
        "mis",
        "smoke_test",
    ),
    "smoke_test": ("steps", "seeds"),
}
DESCRIPTION = "Score the MI estimators on pairs of known mutual information."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``ssvae mi-bench`` (see the module doc); nothing heavy is imported."""
    tasks = "gaussian, gaussian-halfcube, student_t, student_t-asinh"
    parser.add_argument("--tasks", default="gaussian", help=f"of {tasks}, or none")
    parser.add_argument(
        "--files", type=path_arg, nargs="+", default=[], metavar="NPZ", help="pairs to score"
    )
    parser.add_argument(
        "--steps", type=int, default=DEFAULT_STEPS, help="Adam steps per run (default: %(default)s)"
    )
    parser.add_argument("--seeds", type=int, default=2, help="number of seeds (0..K-1)")
    parser.add_argument("--estimators", help="comma-separated (default: every estimator)")
    parser.add_argument("--couplings", help="comma-separated (default: every coupling)")
    mis = ",".join(f"{mi:g}" for mi in DEFAULT_MIS)
    parser.add_argument(
        "--mis", default=mis, help="true MIs of the tasks, nats (default: %(default)s)"
    )
    parser.add_argument("--out", type=path_arg, help="also write the markdown tables here")
    parser.add_argument("--csv", type=path_arg, help="also write every run (one row each) here")
    parser.add_argument("--figure", type=path_arg, help="also plot every estimate's bias here")
    parser.add_argument("--smoke-test", action="store_true", help="tiny run: 20 steps, 1 seed")
    parser.add_argument(
        "--from-csv",
        type=path_arg,
        metavar="CSV",
        help="train nothing: redraw the tables and figure from the rows of a --csv",
    )


def check_ignored(args: argparse.Namespace) -> None:
    """A `ConfigError` for an option that --from-csv or --smoke-test would ignore, given."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    defaults = vars(parser.parse_args([]))
    for mode, ignored in NOT_WITH.items():
        if getattr(args, mode) in (None, False):
            continue
        for dest in ignored:
            if getattr(args, dest) != defaults[dest]:
                flag, by = (f"--{name.replace('_', '-')}" for name in (dest, mode))
                raise ConfigError(f"{flag}: not used with {by}; leave one of them out")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark for parsed `args`; -> the exit status (2: bad input, before training)."""
    import torch

    from ssvae_core.couplings import COUPLINGS
    from ssvae_core.mi_bench import critics, problems, tables
    from ssvae_core.mi_bench.tasks import TASKS
    from ssvae_core.objectives import ESTIMATORS

    try:
        partial = partial_path(args.csv) if args.from_csv is None else None  # rows as they go
        check_outputs(args.out, args.csv, args.figure, partial)
        if partial is not None and partial.is_file() and partial.stat().st_size:
            raise ConfigError(  # a new run would start it again, the rows done lost
                f"--csv: {partial} holds the rows of an interrupted run: draw their tables "
                f"with --from-csv {partial}, or remove it"
            )
        check_distinct(args, partial)
        check_ignored(args)
        if args.from_csv is not None:
            rows = read_rows(args.from_csv)
            try:
                results = tables.with_optimal_recomputed(rows)
            except ValueError as err:  # a task the rows name that this version lacks, say
                raise ConfigError(f"--from-csv: {args.from_csv}: {err}") from None
    except ValueError as err:  # ConfigError too
        print(f"ssvae mi-bench: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.from_csv is not None:
        header = f"Tables redrawn from `{args.from_csv}`; the {critics.OPTIMAL} rows recomputed."
        return write_outputs(results, header, args.out, args.csv, args.figure)
    steps, n_seeds = (20, 1) if args.smoke_test else (args.steps, args.seeds)
    try:
        check(args.steps >= 1, "--steps", f"must be >= 1, got {args.steps}")
        check(
            1 <= args.seeds <= MAX_SEEDS,
            "--seeds",
            f"must be in [1, {MAX_SEEDS}], got {args.seeds}",
        )
        tasks = [] if args.tasks == "none" else args.tasks.split(",")
        estimators = names_or_all(args.estimators, ESTIMATORS)  # "" is a list of one '',
        couplings = names_or_all(args.couplings, COUPLINGS)  # refused: not every name
        mis = parse_mis(args.mis)
        for flag, names, registry in (
            ("--tasks", tasks, TASKS),
            ("--estimators", estimators, ESTIMATORS),
            ("--couplings", couplings, COUPLINGS),
        ):
            for name in names:
                check_name(name, flag, registry)
        for flag, given in (("--tasks", tasks), ("--estimators", estimators),
                            ("--couplings", couplings), ("--mis", mis)):  # fmt: skip
            check_once(given, flag)
        files = [problems.from_npz(path) for path in args.files]
        twice = repeated(case.name.removeprefix("file:") for case in files)
        named = f"two files named {', '.join(twice)}"
        why = "a file's task is file:NAME, its name without .npz, and the tables group by it"
        check(not twice, "--files", f"{named}: {why}; rename one")
        cases = synthetic_cases(tasks, mis) + files
        if not cases:
            raise ConfigError("--tasks: no task and no --files: nothing to score")
        check_sizes(cases, couplings)
        started = time.perf_counter()
        critics_per_case = [len(couplings) + case.knows_log_ratio for case in cases]  # + optimal
        total = sum(critics_per_case) * len(estimators) * n_seeds
        done = itertools.count(1)

        rows = RowFile(partial, critics.COLUMNS)

        def progress(row: Mapping[str, object]) -> None:
            rows.add(row)
            fields = " ".join(f"{k}={v}" for k, v in row.items())
            elapsed = time.perf_counter() - started
            print(f"[{elapsed:6.0f}s] {next(done)}/{total} {fields}", file=sys.stderr, flush=True)

        try:
            results = critics.staircase(
                cases, estimators, couplings, steps, range(n_seeds), True, progress
            )
        except KeyboardInterrupt:
            if rows.path is not None and rows.count:
                print(f"\nssvae mi-bench: the {rows.count} rows done are in {rows.path} "
                      f"(--from-csv draws their tables); {args.csv} is as it was: only a "
                      "finished run replaces it", file=sys.stderr)  # fmt: skip
            raise
    except ValueError as err:  # ConfigError too: an unknown name, a bad file, an MI too low
        print(f"ssvae mi-bench: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    seconds = time.perf_counter() - started
    command = " ".join(["ssvae mi-bench", *getattr(args, "argv", [])])
    lr = f"{DEFAULT_LR:.0e}".replace("e-0", "e-")  # 5e-4, as the docs' tables say
    header = (
        f"`{command}` on {datetime.now().astimezone():%Y-%m-%d %H:%M %Z}: "
        f"{steps} Adam steps (batch {DEFAULT_BATCH}, lr {lr}) per cell and seed, "
        f"seeds 0..{n_seeds - 1}, "
        f"mean ± std; wall time {seconds:.0f} s with {torch.get_num_threads()} torch thread(s)."
    )
    return write_outputs(results, header, args.out, args.csv, args.figure, rows.path)


def partial_path(csv: str | None) -> Path | None:
    """Where the rows of ``--csv DIR/NAME.csv`` go as the runs finish: ``DIR/NAME.partial.csv``
    (beside the file a link names, where `files.replacing` writes). None without ``--csv``, and
    for a device (``--csv /dev/null``), which is written only at the end."""
    if csv is None:
        return None
    real = Path(os.path.realpath(csv))
    try:
        if real.exists() and not real.is_file():
            return None
    except OSError as err:  # in a folder this user may not enter
        raise ConfigError(f"--csv: {csv}: {err.strerror}") from None
    return real.with_name(f"{real.stem}.partial{real.suffix}")


class RowFile:
    """The rows of ``--csv`` written one at a time as the runs finish (a full run takes hours:
    Ctrl-C or a crash keeps what is done, and ``--from-csv`` draws its tables), in the form the
    finished run's ``to_csv`` gives. They go to `partial_path`, not to the ``--csv`` file, which
    `write_outputs` replaces whole at the end and only then removes this one: an interrupted run
    leaves a previous run's file as it was, never half of a new one. A row that cannot be written
    is reported when the run ends, by `write_outputs`."""

    def __init__(self, path: Path | None, columns: Sequence[str]) -> None:
        self.path, self.columns, self.count = path, list(columns), 0

    def add(self, row: Mapping[str, object]) -> None:
        import pandas as pd

        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            frame = pd.DataFrame([row], columns=self.columns)
            frame.to_csv(self.path, mode="w" if self.count == 0 else "a", header=not self.count,
                         index=False)  # fmt: skip
            self.count += 1
        except OSError:
            pass


def check_outputs(
    out: str | None, csv: str | None, figure: str | None, partial: Path | None = None
) -> None:
    """Each output, and the `partial_path` of ``--csv``'s rows, can be written, checked before
    any training (a run takes hours)."""
    from ssvae_core.preflight import image_path, output_file

    for path, key in ((out, "--out"), (csv, "--csv"), (partial, "--csv")):
        if path is not None:
            output_file(path, key)
    if figure is not None:
        image_path(figure, "--figure")


def check_distinct(args: argparse.Namespace, partial: Path | None = None) -> None:
    """No output names an input (``--from-csv``, ``--files``) or another output: ``--out
    rows.csv --from-csv rows.csv`` overwrote the rows with the tables. Nor does `partial`, where
    a run that trains writes the rows of ``--csv`` as they finish."""
    seen: dict[str, str] = {}
    named = [("--from-csv", args.from_csv), *(("--files", f) for f in args.files)]
    named += [("--out", args.out), ("--csv", args.csv), ("--figure", args.figure)]
    for key, path in named:
        if path is None:
            continue
        real = os.path.realpath(path)
        if key in ("--out", "--csv", "--figure") and real in seen:
            raise ConfigError(f"{key}: {path} is also the {seen[real]} file")
        seen.setdefault(real, key)
    other = None if partial is None else seen.get(os.path.realpath(partial))
    if other is not None:
        raise ConfigError(
            f"--csv: its rows go to {partial} as the runs finish, which is also the {other} "
            "file; name another --csv"
        )


def check_sizes(cases: Sequence[Any], couplings: Sequence[str]) -> None:
    """Each coupling can compare each problem's x and y: one that needs them of one size
    (`couplings.same_size`) is refused here, not after the runs before it trained."""
    from ssvae_core.couplings import same_size

    for case in cases:
        dx, dy = case.dims
        for name in couplings:
            if dx != dy and same_size(name):
                raise ConfigError(
                    f"--couplings: {name} compares x and y directly, and {case.name} has x of "
                    f"{dx} and y of {dy} columns; leave {name} out for it"
                )


def check_once(values: Sequence[Any], flag: str) -> None:
    """Each value of `flag` once: a repeat ran the same case again, and its rows counted as
    more seeds (a smaller std). Files are named by their stem (``file:NAME``)."""
    twice = repeated(values)
    check(not twice, flag, f"{', '.join(twice)} given twice: each once")


def names_or_all(text: str | None, registry: Mapping[str, object]) -> list[str]:
    """A comma-separated option's names; not given, every name of `registry`. Given empty
    (``--estimators ""``, a shell variable unset, say) it is the name '', which the name check
    refuses: it ran the whole default benchmark, hours."""
    return list(registry) if text is None else text.split(",")


def parse_mis(text: str) -> list[float]:
    """``--mis``: comma-separated finite numbers of nats."""
    mis = []
    for part in text.split(","):
        try:
            mis.append(float(part))
        except ValueError:
            raise ConfigError(f"--mis: expected numbers of nats, got {shown(part)}") from None
        check(math.isfinite(mis[-1]), "--mis", f"expected finite numbers, got {shown(part)}")
    return mis


def synthetic_cases(tasks: list[str], mis: list[float]) -> list[Any]:
    """Each task at each MI; an MI below a task's floor names ``--mis``."""
    from ssvae_core.mi_bench import problems

    cases = []
    for task, mi in itertools.product(tasks, mis):
        try:
            cases.append(problems.synthetic(task, mi))
        except ConfigError:
            raise  # an unknown task
        except ValueError as err:
            raise ConfigError(f"--mis: {mi:g} for task {task}: {err}") from None
    return cases


def read_rows(path: str) -> Any:
    """``--from-csv``: the rows a ``--csv`` wrote (`critics.COLUMNS`), or a `ConfigError`."""
    import numpy as np
    import pandas as pd

    from ssvae_core.mi_bench.critics import COLUMNS

    try:
        data = read_bytes(path, "CSV of mi-bench rows", MAX_ROWS_BYTES)
        rows = pd.read_csv(io.BytesIO(data))
    except ConfigError as err:
        raise ConfigError(f"--from-csv: {err}") from None
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ConfigError(f"--from-csv: {path}: not a readable CSV ({err})") from None
    missing = [column for column in COLUMNS if column not in rows.columns]
    check(not missing, "--from-csv", f"{path}: lacks the columns {', '.join(missing)} of rows")
    check(len(rows) > 0, "--from-csv", f"{path}: holds no rows")
    for column in ("task", "estimator", "coupling"):  # the tables group by them
        blank = rows[column].isna() | (rows[column].astype(str).str.strip() == "")
        row = int(blank.to_numpy().argmax()) + 1  # the table's row, after its header
        check(not blank.any(), "--from-csv", f"{path}: row {row} has no {column}")
    what = {
        "true_mi": "a finite number >= 0 (nats)",
        "seed": "an integer in [0, 2**63 - 1]",
        "estimate": "a number",
    }
    for column in what:  # pandas takes True for 1: an estimate of True was drawn as 1.00
        bools = rows[column].map(lambda value: isinstance(value, (bool, np.bool_)))
        held = shown(bool(rows[column][bools].iloc[0])) if bools.any() else ""
        message = f"{path}: column {column} holds {held}, not {what[column]}"
        check(not bools.any(), "--from-csv", message)
    from ssvae_core.metrics import as_numbers

    numbers = {c: as_numbers(rows[c]) for c in ("true_mi", "seed", "estimate")}
    seed = numbers["seed"]  # int64, uint64 or float64: each compares exactly with 2**63
    wrong = {
        "true_mi": ~np.isfinite(numbers["true_mi"]) | (numbers["true_mi"] < 0),
        "seed": ~((seed == seed.round()) & (seed >= 0) & (seed < 2**63)),  # not NaN, not inf
        "estimate": numbers["estimate"].isna() & rows["estimate"].notna(),  # NaN: it diverged
    }
    for column, bad in wrong.items():
        first = rows[column][bad].iloc[0] if bad.any() else ""
        held = "an empty cell" if pd.isna(first) else shown(str(first), 50)
        message = f"{path}: column {column} holds {held}, not {what[column]}"
        check(not bad.any(), "--from-csv", message)
    numbers["seed"] = seed.astype(np.int64)
    read = rows.assign(**numbers)
    check_runs_once(read, path)
    return read


def check_runs_once(rows: Any, path: str) -> None:
    """Each run (task, estimator, coupling, true_mi, seed) in one row of `rows`: a row given
    twice was counted as one more seed (a mean and std of runs that never happened)."""
    keys = ["task", "estimator", "coupling", "true_mi", "seed"]
    again = rows.duplicated(keys)
    if not again.any():
        return
    second = int(again.to_numpy().argmax())
    run = rows[keys].iloc[second]
    first = int((rows[keys] == run).all(axis=1).to_numpy().argmax())
    named = ", ".join(f"{key} {value}" for key, value in zip(keys, run, strict=True))
    raise ConfigError(
        f"--from-csv: {path}: rows {first + 1} and {second + 1} are one run ({named}); "
        "each run in one row, or it counts as one more seed"
    )


def write_outputs(
    results: Any,
    header: str,
    out: str | None,
    csv: str | None,
    figure: str | None,
    partial: Path | None = None,
) -> int:
    """Write the rows, the tables and the bias figure where asked, then print the tables; once
    the rows are in `csv`, remove the `partial` file that held them as the runs finished (kept
    where `csv` could not be written). -> the exit status: 1 when an output could not be written
    (the tables were printed)."""
    from ssvae_core.mi_bench.tables import markdown_table, markdown_tables

    many = results["task"].nunique() > 1
    tables = markdown_tables(results) if many else markdown_table(results)
    document = f"{header}\n\n{tables}\n"

    def bias_figure(path: str) -> None:
        from ssvae_core.mi_bench.figures import estimator_bias  # matplotlib: only when asked

        estimator_bias(results, path)

    def rows_file(path: str) -> None:
        write_text(path, results.to_csv(index=False))
        if partial is not None:
            with contextlib.suppress(OSError):  # left behind, it only repeats the rows
                partial.unlink(missing_ok=True)

    writers: list[tuple[str, str | None, Callable[[str], object]]] = [
        ("--csv", csv, rows_file),  # rows first
        ("--out", out, lambda path: write_text(path, document)),
        ("--figure", figure, bias_figure),
    ]
    failed = 0
    for key, path, write in writers:
        if path is None:
            continue
        try:
            write(path)
        except OSError as err:  # a full disk, say: the other outputs are still written
            print(f"ssvae mi-bench: {key}: could not write {path}: {err}", file=sys.stderr)
            failed += 1
    print(document)  # after the files: a stdout that fails (a full disk) loses none of them
    return EXIT_FAILED if failed else EXIT_OK
