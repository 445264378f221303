"""``ssvae mi-bench``: tables, rows and figure written; bad input exits 2 before training."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ssvae_core import cli


def main(argv: list[str]) -> int:
    """``ssvae mi-bench ARGV`` (also what ``python -m ssvae_core.mi_bench`` runs)."""
    return cli.main(["mi-bench", *argv])


def test_command_writes_tables_rows_and_figure(tmp_path: Path) -> None:
    out, csv, png = tmp_path / "t.md", tmp_path / "t.csv", tmp_path / "t.png"
    argv = ["--smoke-test", "--tasks", "gaussian,student_t-asinh", "--estimators", "infonce",
            "--couplings", "bilinear", "--mis", "2", "--out", str(out), "--csv", str(csv),
            "--figure", str(png)]  # fmt: skip
    assert main(argv) == 0
    assert "### student_t-asinh" in out.read_text()
    assert len(pd.read_csv(csv)) == 2 * 2  # (bilinear + the true log-ratio) x 2 tasks
    assert png.stat().st_size > 0


def test_the_ssvae_command_runs_it_and_names_itself(tmp_path: Path) -> None:
    out = tmp_path / "t.md"
    argv = ["mi-bench", "--smoke-test", "--estimators", "dv", "--couplings", "bilinear",
            "--mis", "2", "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    assert out.read_text().startswith("`ssvae mi-bench --smoke-test --estimators dv")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tasks", "cauchy"], "--tasks: unknown name 'cauchy'"),
        (["--estimators", "mine"], "unknown name 'mine'"),
        (["--mis", "0.0", "--tasks", "student_t"], "at least"),
        (["--tasks", "none"], "nothing to score"),
        (["--tasks", "none", "--files", "missing.npz"], "missing.npz"),
    ],
)
def test_bad_input_exits_2_naming_it(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--smoke-test", *argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "0"], "--steps: must be >= 1, got 0"),
        (["--seeds", "-1"], "--seeds: must be in [1, 1000], got -1"),
        (["--seeds", "99999999999999999999"], "--seeds: must be in [1, 1000], got 9999"),
        (["--smoke-test", "--steps", "3"], "--steps: not used with --smoke-test"),
        (["--from-csv", "{tmp}/header.csv", "--estimators", "dv"], "--estimators: not used with"),
        (["--mis", "2,inf"], "--mis: expected finite numbers, got 'inf'"),
        (["--mis", "nan"], "--mis: expected finite numbers, got 'nan'"),
        (["--mis", "two"], "--mis: expected numbers of nats, got 'two'"),
        (["--mis", "0.1", "--tasks", "student_t"], "--mis: 0.1 for task student_t: this task's"),
        (["--out", "{tmp}"], "--out: {tmp} is a directory"),
        (["--csv", "{tmp}/f/rows.csv"], "--csv: {tmp}/f is a file, not a directory"),
        (["--figure", "{tmp}/bias.xyz"], "--figure: {tmp}/bias.xyz is not an image file name"),
        (
            ["--from-csv", "{tmp}/missing.csv"],
            "--from-csv: {tmp}/missing.csv: no such CSV of mi-bench rows",
        ),
        (["--from-csv", "{tmp}/f"], "--from-csv: {tmp}/f: not a readable CSV (No columns"),
        (["--from-csv", "{tmp}"], "--from-csv: {tmp}: is a directory; expected a CSV"),
        (["--from-csv", "/dev/zero"], "--from-csv: /dev/zero: larger than 100000000 bytes"),
        (["--from-csv", "{tmp}/cols.csv"], "cols.csv: lacks the columns task, estimator, coupling"),
        (["--from-csv", "{tmp}/inf.csv"], "inf.csv: column true_mi holds 'inf', not a finite"),
        (["--from-csv", "{tmp}/big.csv"], "big.csv: column seed holds '99999"),  # OverflowError
        (["--from-csv", "{tmp}/header.csv"], "--from-csv: {tmp}/header.csv: holds no rows"),
        (["--from-csv", "{tmp}/task.csv"], "--from-csv: {tmp}/task.csv: task: unknown name"),
        (["--from-csv", "{tmp}/seed.csv"], "seed.csv: column seed holds '1.5', not an integer"),
        (
            ["--from-csv", "{tmp}/mi.csv"],
            "mi.csv: column true_mi holds an empty cell, not a finite number",
        ),
        (["--couplings", "bogus"], "--couplings: unknown name 'bogus'; choose from"),
        (["--mis", "400"], "--mis: 400 for task gaussian: 400 nats over 20 dimensions is beyond"),
        (["--files", "{tmp}/a.npy"], "a.npy: one array (.npy?), not an .npz of x, y and mi"),
        (["--files", "{tmp}/f"], "f: not an .npz (a zip of .npy arrays: np.savez writes one)"),
        # np.load took any other file for a pickle, and the message said to allow_pickle
        (["--files", "{tmp}/hello.npz"], "hello.npz: not an .npz (a zip of .npy arrays"),
        (["--files", "{tmp}/pipe"], "pipe: not a readable .npz of arrays (not a regular file)"),
        (["--files", "{tmp}/mi-text.npz"], "mi-text.npz: mi must be one finite number >= 0"),
        (
            ["--files", "{tmp}/x-text.npz"],
            "x must be a 2-D numeric array of at least one column, got shape (400, 4) of",
        ),
        (["--files", "{tmp}/x-no-columns.npz"], "got shape (400, 0) of float64"),
        (
            ["--files", "{tmp}/x-declares-7-tib.npz"],
            "x-declares-7-tib.npz: its arrays declare more than the 268,435,456 bytes one may "
            "hold: x declares shape (1000000000000, 1) of float64 (8,000,000,000,000 bytes)",
        ),
        (
            ["--files", "{tmp}/sizes.npz", "{tmp}/d/sizes.npz"],
            "--files: two files named sizes: a file's task is file:NAME",
        ),
        (["--mis", "2,4,2"], "--mis: 2.0 given twice: each once"),
        (["--estimators", "dv,infonce,dv"], "--estimators: dv given twice"),
        (["--from-csv", "{tmp}/blank.csv"], "blank.csv: row 2 has no estimator"),
        (["--files", "{tmp}/x-huge.npz"], "x-huge.npz: x holds NaN or inf, or values beyond"),
        (["--files", "{tmp}/mi-complex.npz"], "mi-complex.npz: mi must be one finite number"),
        (["--mis", "370"], "--mis: 370 for task gaussian: 370 nats over 20 dimensions is beyond"),
        (
            ["--files", "{tmp}/sizes.npz", "--couplings", "bilinear,gaussian"],
            "--couplings: gaussian compares x and y directly, and file:sizes has x of 4 and y of 3",
        ),
        (["--out", "{tmp}/pipe"], "--out: {tmp}/pipe is a named pipe"),
        (
            ["--from-csv", "{tmp}/header.csv", "--out", "{tmp}/header.csv"],
            "--out: {tmp}/header.csv is also the --from-csv file",
        ),
        (["--out", "{tmp}/t", "--csv", "{tmp}/t"], "--csv: {tmp}/t is also the --out file"),
        # "" ran every estimator (or coupling): the whole default benchmark, hours
        (["--estimators", ""], "--estimators: unknown name ''; choose from dv, infonce"),
        (["--couplings", ""], "--couplings: unknown name ''; choose from bilinear"),
        (["--estimators", "infonce,"], "--estimators: unknown name ''"),
        (
            ["--files", "{tmp}/encrypted.npz"],  # zipfile raised RuntimeError: a traceback
            "encrypted.npz: not a readable .npz of arrays (File 'x.npy' is encrypted",
        ),
        (
            ["--out", "{tmp}/t.partial.md", "--csv", "{tmp}/t.md"],
            "--csv: its rows go to {tmp}/t.partial.md as the runs finish, which is also the "
            "--out file",
        ),
        (["--csv", "{tmp}/p.csv"], "--csv: {tmp}/p.partial.csv is a named pipe"),
    ],
)
def test_bad_input_is_refused_before_any_training(
    argv: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Outputs are checked before a run that takes hours, not when it ends; no traceback."""
    from ssvae_core.mi_bench import critics

    def no_training(*_args: object) -> None:
        raise AssertionError("trained before refusing")

    monkeypatch.setattr(critics, "staircase", no_training)
    (tmp_path / "f").write_text("")
    (tmp_path / "hello.npz").write_text("hello")
    header = "task,estimator,coupling,true_mi,seed,estimate\n"
    (tmp_path / "cols.csv").write_text("a,b\n1,2\n")
    (tmp_path / "seed.csv").write_text(header + "gaussian,infonce,bilinear,2,1.5,1.9\n")
    (tmp_path / "inf.csv").write_text(header + "gaussian,infonce,bilinear,inf,0,1.9\n")
    (tmp_path / "big.csv").write_text(header + f"gaussian,infonce,bilinear,2,{'9' * 400},1.9\n")
    (tmp_path / "header.csv").write_text(header)
    optimal = "gaussian,infonce,bilinear,2,0,1.9\ncauchy,infonce,(true log-ratio),2,0,1.9\n"
    (tmp_path / "task.csv").write_text(header + optimal)
    (tmp_path / "mi.csv").write_text(header + "gaussian,infonce,bilinear,,0,1.9\n")
    os.mkfifo(tmp_path / "pipe")  # open() waits for the other end: a hang before the check
    os.mkfifo(tmp_path / "p.partial.csv")  # where the rows of --csv p.csv go as they finish
    np.save(tmp_path / "a.npy", np.zeros((3, 3)))
    rows = np.random.default_rng(0).normal(size=(400, 4))
    for name, arrays in {
        "mi-text": {"x": rows, "y": rows, "mi": np.array("2")},
        "x-text": {"x": np.full((400, 4), "a"), "y": rows, "mi": np.array(2.0)},
        "x-huge": {"x": rows * 1e300, "y": rows, "mi": np.array(2.0)},  # inf in float32
        "mi-complex": {"x": rows, "y": rows, "mi": np.array(1 + 2j)},
        "sizes": {"x": rows, "y": rows[:, :3], "mi": np.array(0.0)},
        "d/sizes": {"x": rows, "y": rows[:, :3], "mi": np.array(0.0)},
        "x-no-columns": {"x": rows[:, :0], "y": rows, "mi": np.array(0.0)},
    }.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        np.savez(tmp_path / f"{name}.npz", **arrays)
    _npz_declaring(tmp_path / "x-declares-7-tib.npz", (10**12, 1), rows)
    np.savez(tmp_path / "encrypted.npz", x=rows, y=rows, mi=np.array(1.0))
    _flag_encrypted(tmp_path / "encrypted.npz")
    (tmp_path / "blank.csv").write_text(header + "gaussian,infonce,bilinear,2,0,1.9\n"
                                        "gaussian,,bilinear,2,0,1.9\n")  # fmt: skip
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--files" in argv:
        argv = ["--tasks", "none", *argv]
    assert main(argv) == 2
    assert message.replace("{tmp}", str(tmp_path)) in capsys.readouterr().err


def _npz_declaring(path: Path, shape: tuple[int, ...], rows: np.ndarray) -> None:
    """An .npz whose x header declares `shape` (float64) over 64 bytes of data."""
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": shape}
    )
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", header.getvalue() + bytes(64))
        for key, array in (("y", rows), ("mi", np.array(1.0))):
            buffer = io.BytesIO()
            np.save(buffer, array)
            archive.writestr(f"{key}.npy", buffer.getvalue())


def _flag_encrypted(path: Path) -> None:
    """Set the encryption bit (general purpose flag bit 0) of every member of zip `path`, in
    its local and its central headers."""
    import zipfile

    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
    central = data.index(b"PK\x01\x02")  # the central directory, after every member's data
    for info in members:
        data[info.header_offset + 6] |= 1  # local header: signature, version, then the flags
    for _ in members:
        data[central + 8] |= 1  # central header: signature, two versions, then the flags
        central = data.find(b"PK\x01\x02", central + 4)
    path.write_bytes(bytes(data))


ROW = "gaussian,infonce,bilinear"  # task, estimator, coupling


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        pytest.param(
            f"{ROW},2,1e300,1.9",
            "column seed holds '1e+300', not an integer in [0, 2**63 - 1]",
            id="seed-1e300",
        ),
        pytest.param(f"{ROW},2,inf,1.9", "column seed holds 'inf', not an integer", id="seed-inf"),
        pytest.param(
            f"{ROW},2,9223372036854775808,1.9",
            "column seed holds '9223372036854775808', not an integer",
            id="seed-2**63",
        ),
        pytest.param(f"{ROW},2,-1,1.9", "column seed holds '-1', not an integer", id="seed-neg"),
        pytest.param(f"{ROW},2,True,1.9", "column seed holds True, not an integer", id="seed-bool"),
        pytest.param(
            f"{ROW},2,0,1.9\n{ROW},2,1,1.5\n{ROW},2.0,0.0,1.9",
            "rows 1 and 3 are one run (task gaussian, estimator infonce, coupling bilinear, "
            "true_mi 2.0, seed 0); each run in one row",
            id="run-twice",
        ),
        pytest.param(
            f"{ROW},2,0,True\n{ROW},2,1,True",
            "column estimate holds True, not a number",
            id="estimate-bool",
        ),
        pytest.param(
            f"{ROW},2,0,True\n{ROW},2,1,",  # True and NaN: an object column, not a bool one
            "column estimate holds True, not a number",
            id="estimate-bool-or-empty",
        ),
        pytest.param(
            f"{ROW},True,0,1.9",
            "column true_mi holds True, not a finite number >= 0",
            id="true_mi-bool",
        ),
        pytest.param(
            f"{ROW},-2,0,1.9",
            "column true_mi holds '-2', not a finite number >= 0",
            id="true_mi-negative",
        ),
    ],
)
def test_rows_that_would_be_misread_are_refused_naming_file_and_column(
    rows: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--from-csv drew 1e300 as seed -2**63, a row given twice as one more seed (1.60 ± 0.14),
    an estimate of True as 1.00, and a negative true MI; each is one line and exit 2."""
    csv = tmp_path / "rows.csv"
    csv.write_text(f"task,estimator,coupling,true_mi,seed,estimate\n{rows}\n")
    assert main(["--from-csv", str(csv)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ssvae mi-bench: error: --from-csv: {csv}: {message}")
    assert err.count("\n") == 1  # one line, no traceback


def test_rows_at_the_edges_of_the_checks_are_read(tmp_path: Path) -> None:
    """The largest seed, a true MI of 0 and a run's seeds in any order still draw tables."""
    from ssvae_core.mi_bench.cli import read_rows

    csv = tmp_path / "rows.csv"
    csv.write_text("task,estimator,coupling,true_mi,seed,estimate\n"
                   f"{ROW},0,9223372036854775807,0.1\n{ROW},2,1,1.9\n{ROW},2,0,2.1\n")  # fmt: skip
    rows = read_rows(str(csv))
    assert rows["seed"].tolist() == [2**63 - 1, 1, 0] and rows["true_mi"].tolist() == [0, 2, 2]


def test_redrawn_rows_may_hold_an_estimate_that_diverged(tmp_path: Path) -> None:
    rows = tmp_path / "rows.csv"
    rows.write_text(
        "task,estimator,coupling,true_mi,seed,estimate\n"
        "gaussian,infonce,bilinear,2,0,1.9\ngaussian,infonce,bilinear,2,1,\n"
    )
    assert main(["--from-csv", str(rows), "--out", str(tmp_path / "t.md")]) == 0
    assert "| infonce | bilinear | 1.90 (1 of 2 NaN/inf) |" in (tmp_path / "t.md").read_text()


def test_tables_can_be_redrawn_from_the_rows(tmp_path: Path) -> None:
    csv, out, png = tmp_path / "rows.csv", tmp_path / "t.md", tmp_path / "t.png"
    main(["--smoke-test", "--estimators", "infonce", "--couplings", "bilinear", "--mis", "2",
          "--csv", str(csv)])  # fmt: skip
    assert main(["--from-csv", str(csv), "--out", str(out), "--figure", str(png)]) == 0
    assert "| infonce | bilinear |" in out.read_text() and png.exists()


def test_pairs_from_a_file_are_scored_with_their_own_sizes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(640, 3))
    y = np.concatenate([x[:, :2] + 0.1 * rng.normal(size=(640, 2)), rng.normal(size=(640, 3))], 1)
    np.savez(tmp_path / "pairs.npz", x=x, y=y, mi=np.float64(4.0))
    csv = tmp_path / "rows.csv"
    argv = ["--smoke-test", "--tasks", "none", "--files", str(tmp_path / "pairs.npz"),
            "--estimators", "infonce", "--couplings", "bilinear,concat_mlp",
            "--csv", str(csv)]  # fmt: skip
    assert main(argv) == 0
    rows = pd.read_csv(csv)
    assert list(rows["task"]) == ["file:pairs", "file:pairs"]  # no optimal critic is known
    assert list(rows["true_mi"]) == [4.0, 4.0] and rows["estimate"].notna().all()
    progress = [line for line in capsys.readouterr().err.splitlines() if "task=" in line]
    assert [line.split("] ")[1].split()[0] for line in progress] == ["1/2", "2/2"]  # was x/3


def test_an_output_that_cannot_be_written_leaves_the_others_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A full disk at the end of hours of training: one line, the other outputs written."""
    rows, csv = tmp_path / "rows.csv", tmp_path / "again.csv"
    rows.write_text("task,estimator,coupling,true_mi,seed,estimate\n"
                    "gaussian,infonce,bilinear,2,0,1.9\n")  # fmt: skip
    assert main(["--from-csv", str(rows), "--out", "/dev/full", "--csv", str(csv)]) == 1
    err = capsys.readouterr().err
    assert (
        err
        == "ssvae mi-bench: --out: could not write /dev/full: [Errno 28] No space left on device\n"
    )
    assert pd.read_csv(csv)["estimate"].tolist()[0] == 1.9


def test_rows_are_written_as_they_finish_and_kept_on_ctrl_c(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    ctrl_c_at_call: Callable[[object, str, int], None],
) -> None:
    """A full run takes hours: its finished rows are kept in r.partial.csv beside --csv r.csv,
    and --from-csv redraws them."""
    from ssvae_core.mi_bench import critics

    real = critics.train_estimator
    ctrl_c_at_call(critics, "train_estimator", 3)
    csv = tmp_path / "rows" / "r.csv"
    partial = tmp_path / "rows" / "r.partial.csv"
    argv = ["--smoke-test", "--estimators", "infonce", "--couplings", "bilinear,gaussian",
            "--mis", "2,4", "--csv", str(csv)]  # fmt: skip
    assert main(argv) == 130
    assert f"the 2 rows done are in {partial} (--from-csv" in capsys.readouterr().err
    rows = pd.read_csv(partial)
    assert list(rows["coupling"]) == ["bilinear", "gaussian"] and rows["estimate"].notna().all()
    assert not csv.exists()  # only a finished run writes it
    monkeypatch.setattr(critics, "train_estimator", real)
    assert main(["--from-csv", str(partial)]) == 0


def test_ctrl_c_leaves_the_previous_runs_rows_whole(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    ctrl_c_at_call: Callable[[object, str, int], None],
) -> None:
    """--csv was truncated at the new run's first row: Ctrl-C after it lost the previous
    table. Now the file is the old one until the new one is complete, then the new one whole;
    the rows kept as they finished go once it is written."""
    from ssvae_core.mi_bench import critics

    csv, partial = tmp_path / "r.csv", tmp_path / "r.partial.csv"
    previous = "task,estimator,coupling,true_mi,seed,estimate\ngaussian,dv,bilinear,6,0,5.1\n"
    csv.write_text(previous)
    real = critics.train_estimator
    ctrl_c_at_call(critics, "train_estimator", 2)
    argv = ["--smoke-test", "--estimators", "infonce", "--couplings", "bilinear",
            "--mis", "2,4", "--csv", str(csv)]  # fmt: skip
    assert main(argv) == 130
    assert csv.read_text() == previous
    assert f"{csv} is as it was" in capsys.readouterr().err
    assert list(pd.read_csv(partial)["true_mi"]) == [2.0]  # the run that finished
    monkeypatch.setattr(critics, "train_estimator", real)
    assert main(argv) == 2  # the rows done are not thrown away by the next run
    assert f"--csv: {partial} holds the rows of an interrupted run" in capsys.readouterr().err
    partial.unlink()
    assert main(argv) == 0
    assert len(pd.read_csv(csv)) == 4 and not partial.exists()
