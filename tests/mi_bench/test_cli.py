"""``ssvae mi-bench``: tables, rows and figure written; bad input exits 2 before training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ssvae_core import cli
from ssvae_core.mi_bench.cli import main


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
        (["--tasks", "cauchy"], "task: unknown name 'cauchy'"),
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


def test_tables_can_be_redrawn_from_the_rows(tmp_path: Path) -> None:
    csv, out, png = tmp_path / "rows.csv", tmp_path / "t.md", tmp_path / "t.png"
    main(["--smoke-test", "--estimators", "infonce", "--couplings", "bilinear", "--mis", "2",
          "--csv", str(csv)])  # fmt: skip
    assert main(["--from-csv", str(csv), "--out", str(out), "--figure", str(png)]) == 0
    assert "| infonce | bilinear |" in out.read_text() and png.exists()


def test_pairs_from_a_file_are_scored_with_their_own_sizes(tmp_path: Path) -> None:
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
