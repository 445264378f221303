"""The studies' reports (sweep/reports/): each turns a trials table into its figures and a
markdown summary. None of this needs Ray."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sweep_helpers import REPO, write_spec

from ssvae_core import cli
from ssvae_core.sweep import reports, spec
from ssvae_core.sweep.reports import common, critics, fig1c, lengthscale, negatives, stochastic


def _spec(name: str) -> spec.SweepSpec:
    return spec.load(REPO / "sweeps" / f"{name}.yaml")


def _context(name: str) -> reports.ReportContext:
    return _spec(name).report_context()


def _trials(axes: dict[str, list[object]], metrics: dict[str, list[float]]) -> pd.DataFrame:
    """A trials table: the Cartesian product of `axes` (last fastest) with these metrics."""
    index = pd.MultiIndex.from_product(list(axes.values()), names=list(axes))
    table = index.to_frame(index=False)
    return table.assign(status="ok", **metrics)


def _table(markdown: str) -> list[list[str]]:
    """The body rows of a markdown table, as lists of cells."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")][1:]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


def _rows(markdown: str) -> dict[str, list[str]]:
    """Markdown table rows keyed by their (unique) first cell."""
    return {row[0]: row[1:] for row in _table(markdown)}


def test_fig1c_pairs_every_method_with_the_untrained_encoder_of_its_seed(tmp_path: Path) -> None:
    errors = {
        "gaussian": [1.0, 4.0, 0.5],
        "bilinear": [9.0, 1.0, 8.0],
        "untrained": [6.0, 2.0, 7.0],
    }
    trials = _trials(
        {"method": list(errors), "train.seed": [0, 1, 2]},
        {"probe_error_px": [v for values in errors.values() for v in values]},
    )
    result = fig1c.report(trials, _context("paper-small"), tmp_path)
    rows = _rows(result.markdown)
    # gaussian: gains 5, -2, 6.5 px -> beats untrained on 2 of 3 seeds, mean gain 3.17 px
    assert rows["gaussian"][:4] == ["1", "4", "0.5", "1"]
    assert rows["gaussian"][4:7] == ["2/3", "3.17", "6"]  # median of 6, 0.5, 14
    assert rows["bilinear"][4:6] == ["1/3", "-1"]
    assert rows["untrained"][4:] == ["-", "-", "-"]
    assert all(p.stat().st_size > 0 for p in result.figures)


def test_critics_reports_the_rank_correlation_per_estimator(tmp_path: Path) -> None:
    axes = {"coupling.kind": ["bilinear", "gaussian", "concat_mlp"],
            "objective.estimator": ["infonce", "nwj"], "train.seed": [0, 1]}  # fmt: skip
    n = 3 * 2 * 2
    mi = np.arange(n, dtype=float)
    # infonce: higher MI, higher error (the claim); nwj: higher MI, lower error
    error = np.where(np.arange(n) % 4 < 2, mi + 1.0, 100.0 - mi)
    trials = _trials(axes, {"mi_estimate": mi, "probe_error_px": error})
    result = critics.report(trials, _context("critics"), tmp_path)
    correlations = result.markdown.split("\n\n")[1]
    rows = _rows(correlations)
    assert rows["infonce"][:2] == ["6", "1"] and rows["nwj"][:2] == ["6", "-1"]
    table = result.markdown.split("\n\n")[0].splitlines()
    assert len(table) == 2 + 6  # header, rule, one row per coupling x estimator
    assert result.figures[0].stat().st_size > 0


def test_negatives_draws_the_ceiling_and_tabulates_per_n(tmp_path: Path) -> None:
    axes = {"coupling.kind": ["gaussian", "bilinear"], "objective.n_negatives": [1, 29, 128],
            "train.seed": [0, 1]}  # fmt: skip
    trials = _trials(axes, {"probe_error_px": np.linspace(1, 12, 12), "mi_estimate": 0.5})
    result = negatives.report(trials, _context("negatives"), tmp_path)
    rows = _rows(result.markdown)
    assert set(rows) == {"1", "29", "128"}
    assert float(rows["29"][0]) == pytest.approx(math.log(30), rel=1e-3)
    assert result.figures[0].name == "negatives.png"


def test_lengthscale_compares_final_l_with_the_true_step(tmp_path: Path) -> None:
    axes = {"coupling.learn_lengthscale": [True, False],
            "coupling.lengthscale": [0.005, 0.5], "train.seed": [0, 1]}  # fmt: skip
    final = [0.01, 0.01, 0.02, 0.02, 0.005, 0.005, 0.5, 0.5]
    trials = _trials(axes, {"probe_error_px": 1.0, "mi_estimate": 1.0, "lengthscale": final})
    result = lengthscale.report(trials, _context("lengthscale"), tmp_path)
    assert result.markdown.startswith("True per-frame step")
    rows = _table(result.markdown)
    assert [r[0] for r in rows] == ["fixed", "fixed", "learned", "learned"]
    assert rows[2][1:4:2] == ["0.005", "0.01"]  # learned from 0.005: final L
    assert result.figures[0].stat().st_size > 0


def test_stochastic_pairs_the_elbo_with_the_deterministic_encoder(tmp_path: Path) -> None:
    axes = {"method": ["deterministic", "sigma-0.1"], "train.seed": [0, 1]}
    trials = _trials(
        axes,
        {"probe_error_px": [1.0, 1.0, 2.0, 2.0], "elbo": [3.0, 3.2, 2.0, 2.6],
         "elbo_gap": [0.0, 0.0, 0.4, 0.6], "elbo_at_mean": 3.0,
         "sigma": [math.nan] * 2 + [0.1] * 2},
    )  # fmt: skip
    rows = _rows(stochastic.report(trials, _context("stochastic"), tmp_path).markdown)
    assert rows["deterministic"][-1] == "0" and rows["deterministic"][3] == "0"
    assert rows["sigma-0.1"][-1] == "-0.8"  # (2.0 - 3.0 + 2.6 - 3.2) / 2
    assert rows["sigma-0.1"][3] == "0.5"


def _finished_negatives(tmp_path: Path) -> tuple[Path, list[str]]:
    """A finished ``negatives`` sweep's trials table under `tmp_path`; -> its folder and the
    ``ssvae report`` arguments that redraw it."""
    directory = tmp_path / "negatives"
    directory.mkdir()
    axes = {"coupling.kind": ["gaussian"], "objective.n_negatives": [1, 4], "train.seed": [0]}
    _trials(axes, {"probe_error_px": [2.0, 1.0], "mi_estimate": [0.5, 1.0]}).assign(
        seconds=1.0
    ).to_csv(directory / "trials.csv", index=False)
    return directory, ["report", str(REPO / "sweeps" / "negatives.yaml"), "--storage-path",
                       str(tmp_path)]  # fmt: skip


def test_report_command_redraws_a_finished_sweep(tmp_path: Path) -> None:
    directory, argv = _finished_negatives(tmp_path)
    assert cli.main(argv) == 0
    assert (directory / "negatives.png").exists() and (directory / "fig1c.png").exists()
    assert "| 4 |" in (directory / "summary.md").read_text()
    assert cli.main([*argv[:2], "--storage-path", str(tmp_path / "none")]) == 2


@pytest.mark.parametrize(
    "name", ["paper-small", "critics", "negatives", "lengthscale", "stochastic"]
)
def test_a_sweep_whose_trials_all_failed_still_gets_its_tables(name: str, tmp_path: Path) -> None:
    sweep = _spec(name)
    rows = [dict(cell.params) for cell in sweep.cells]
    trials = pd.DataFrame(rows).assign(
        status="error", probe_error_px=math.nan, mi_estimate=math.nan, lengthscale=math.nan,
        sigma=math.nan, elbo=math.nan, elbo_gap=math.nan, elbo_at_mean=math.nan, seconds=1.0,
    )  # fmt: skip
    paths = reports.write(sweep.report, trials, sweep.report_context(), tmp_path)
    assert (tmp_path / "fig1c.png") in paths and (tmp_path / "summary.md") in paths
    summary = (tmp_path / "summary.md").read_text()
    assert f"**No trial finished ok** ({len(trials)} trials: {len(trials)} error)" in summary
    assert "|  |" not in summary and "\n||\n" not in summary  # no table without a column
    metrics = ["probe_error_px", "mi_estimate", "lengthscale", "sigma", "elbo", "elbo_gap"]
    trials.loc[0, ["status", *metrics, "elbo_at_mean"]] = ["ok", *[1.0] * len(metrics), 1.0]
    reports.write(sweep.report, trials, sweep.report_context(), tmp_path)
    assert "No trial finished ok" not in (tmp_path / "summary.md").read_text()


def test_pairs_use_every_seed_axis_and_sort_the_seeds(tmp_path: Path) -> None:
    """Rows arrive in Ray's completion order; a data.seed axis must not merge two videos."""
    rows = [("gaussian", 2, 0, 1.0), ("untrained", 0, 0, 6.0), ("gaussian", 0, 0, 2.0),
            ("untrained", 2, 0, 7.0), ("gaussian", 0, 1, 100.0), ("untrained", 0, 1, 3.0),
            ("untrained", 2, 1, 5.0), ("gaussian", 2, 1, 50.0)]  # fmt: skip
    trials = pd.DataFrame(rows, columns=["method", "train.seed", "data.seed", "probe_error_px"])
    errors = common.by_seed(trials.assign(status="ok"), ["method"])
    assert list(errors.columns) == ["0/0", "0/1", "2/0", "2/1"]
    assert list(errors.index) == ["gaussian", "untrained"]  # order of appearance
    assert errors.loc["gaussian"].tolist() == [2.0, 100.0, 1.0, 50.0]
    with pytest.raises(ValueError, match="several trials"):
        common.by_seed(trials.drop(columns="data.seed").assign(status="ok"), ["method"])


def test_in_batch_negatives_count_as_n_equal_b_minus_1(tmp_path: Path) -> None:
    axes = {"coupling.kind": ["gaussian"], "objective.n_negatives": [4.0, math.nan],
            "train.seed": [0]}  # fmt: skip
    trials = _trials(axes, {"probe_error_px": [2.0, 1.0], "mi_estimate": [1.0, 2.0]})
    rows = _rows(negatives.report(trials, _context("negatives"), tmp_path).markdown)
    assert set(rows) == {"4", "29"}  # batch 30: in-batch is N = 29, not dropped


def test_report_command_fails_loudly_on_a_table_it_cannot_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A column the study draws missing, or two trials of one grid cell: exit 2 naming it,
    before anything is drawn or removed."""
    directory = tmp_path / "stochastic"
    directory.mkdir()
    table = {"method": ["deterministic"], "train.seed": [0], "status": ["ok"],
             "probe_error_px": [1.0], "seconds": [1.0]}  # fmt: skip
    pd.DataFrame(table).to_csv(directory / "trials.csv", index=False)  # no elbo column
    (directory / "summary.md").write_text("stale")
    argv = ["report", str(REPO / "sweeps" / "stochastic.yaml"), "--storage-path", str(tmp_path)]
    assert cli.main(argv) == 2
    assert "trials.csv: no column elbo, elbo_gap, which the 'stochastic' report draws" in (
        capsys.readouterr().err
    )
    assert (directory / "summary.md").read_text() == "stale"
    twice = pd.DataFrame({**table, "elbo": [1.0], "elbo_gap": [0.0]})
    pd.concat([twice, twice]).to_csv(directory / "trials.csv", index=False)
    assert cli.main(argv) == 2  # a grid sweep runs each cell once: refused before drawing
    assert "row 2: a second trial of one grid cell (method=deterministic, train.seed=0)" in (
        capsys.readouterr().err
    )
    assert (directory / "summary.md").read_text() == "stale"


@pytest.mark.parametrize("name", sorted(reports.REPORTS))
def test_each_report_draws_from_the_columns_it_declares_and_needs_each(
    name: str, tmp_path: Path
) -> None:
    """`reports.columns` is what ``ssvae report`` checks: a table of the grid's axes and those
    columns alone draws, and one without any of them cannot."""
    sweep = next(_spec(s.stem) for s in sorted((REPO / "sweeps").glob("*.yaml"))
                 if _spec(s.stem).report == name)  # fmt: skip
    rows = [dict(cell.params) for cell in sweep.cells]
    values = np.arange(1.0, len(rows) + 1)  # not constant: a rank correlation is defined
    trials = pd.DataFrame(rows).assign(**dict.fromkeys(reports.columns(name), values))
    trials["status"] = "ok"
    paths = reports.write(name, trials, sweep.report_context(), tmp_path, strict=True)
    drawn = sorted(p.name for p in paths if p.suffix == ".png")  # declared: none left stale
    assert drawn == sorted(["fig1c.png", *reports.REPORTS[name].figures])
    for column in reports.columns(name):
        with pytest.raises(KeyError, match=column):
            reports.write(name, trials.drop(columns=column), sweep.report_context(), tmp_path,
                          strict=True)  # fmt: skip


def test_report_refuses_a_table_the_sweep_did_not_write_and_leaves_no_stale_figure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``x`` among True/False made every row 'learned' (the text 'False' is true); a table
    longer than the sweep hung for minutes; a redraw kept the last draw's paired figure."""
    directory = tmp_path / "lengthscale"
    directory.mkdir()
    sweep = _spec("lengthscale")
    trials = pd.DataFrame([dict(cell.params) for cell in sweep.cells]).assign(
        status="ok", probe_error_px=1.0, lengthscale=0.1, mi_estimate=1.0
    )
    argv = ["report", str(REPO / "sweeps" / "lengthscale.yaml"), "--storage-path", str(tmp_path)]
    edited = trials.astype(object)
    edited.loc[0, "coupling.learn_lengthscale"] = "x"
    edited.to_csv(directory / "trials.csv", index=False)
    assert cli.main(argv) == 2
    said = "row 1: coupling.learn_lengthscale holds 'x', not a value of the grid (True, False)"
    assert said in capsys.readouterr().err
    pd.concat([trials] * 2).to_csv(directory / "trials.csv", index=False)
    assert cli.main(argv) == 2
    assert "60 rows, more than the sweep's 30 trials" in capsys.readouterr().err
    trials.to_csv(directory / "trials.csv", index=False)
    assert cli.main(argv) == 0
    assert "| learned |" in (directory / "summary.md").read_text()
    assert "| fixed |" in (directory / "summary.md").read_text()

    paper = tmp_path / "paper-small"
    paper.mkdir()
    (paper / "fig1c-paired.png").write_bytes(b"stale")
    medians_only = pd.DataFrame(
        {"method": ["gaussian", "bilinear"], "status": "ok", "probe_error_px": [1.0, 2.0]}
    )  # no seed: nothing to pair
    reports.write("fig1c", medians_only, _context("paper-small"), paper, strict=True)
    assert not (paper / "fig1c-paired.png").exists()


def test_report_command_refuses_another_sweeps_table_and_an_out_it_cannot_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit 2 naming the table or ``--out``, before any figure (``--out`` under a file was a
    traceback; a table without the grid's axes, the study's KeyError with exit 1)."""
    directory = tmp_path / "stochastic"
    directory.mkdir()
    (tmp_path / "f").write_text("")
    table = {"x": [1], "status": ["ok"], "probe_error_px": [1.0]}
    pd.DataFrame(table).to_csv(directory / "trials.csv", index=False)
    argv = ["report", str(REPO / "sweeps" / "stochastic.yaml"), "--storage-path", str(tmp_path)]
    assert cli.main(argv) == 2
    assert "not the trials table of" in capsys.readouterr().err
    table = {"method": ["deterministic"], "train.seed": [0], "status": ["ok"],
             "probe_error_px": [1.0], "elbo": [1.0], "elbo_gap": [0.0]}  # fmt: skip
    pd.DataFrame(table).to_csv(directory / "trials.csv", index=False)
    assert cli.main([*argv, "--out", str(tmp_path / "f" / "out")]) == 2
    assert f"--out: cannot write to {tmp_path / 'f' / 'out'}" in capsys.readouterr().err


def test_report_refuses_text_on_an_axis_of_numbers_naming_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``abc`` as N was pandas' 'Unable to parse string' (exit 1), naming neither."""
    directory = tmp_path / "negatives"
    directory.mkdir()
    axes = {"coupling.kind": ["gaussian"], "objective.n_negatives": [1, 4], "train.seed": [0]}
    trials = _trials(axes, {"probe_error_px": [2.0, 1.0], "mi_estimate": [0.5, 1.0]})
    trials = trials.assign(seconds=1.0).astype(object)
    trials.loc[1, "objective.n_negatives"] = "abc"
    trials.to_csv(directory / "trials.csv", index=False)
    argv = ["report", str(REPO / "sweeps" / "negatives.yaml"), "--storage-path", str(tmp_path)]
    assert cli.main(argv) == 2
    assert "row 2: objective.n_negatives holds 'abc', not a number" in capsys.readouterr().err


@pytest.mark.parametrize("blocked", ["summary.md", "fig1c.png"])
def test_a_report_that_cannot_write_a_file_says_which_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], blocked: str
) -> None:
    """A folder where the summary or a figure goes was an IsADirectoryError stack."""
    directory, argv = _finished_negatives(tmp_path)
    (directory / blocked).mkdir()
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("ssvae report: error: could not write") and blocked in err
    assert len(err.splitlines()) == 1


def _finished(root: Path, name: str, spec_text: str, age: float) -> Path:
    import os

    directory = root / name
    directory.mkdir(parents=True)
    (directory / "sweep.yaml").write_text(spec_text)
    rows = [f"{m},{s},ok,{1.0 + s}" for m in ("gaussian", "untrained") for s in (0, 1, 2)]
    table = directory / "trials.csv"
    table.write_text("method,train.seed,status,probe_error_px\n" + "\n".join(rows) + "\n")
    os.utime(table, (age, age))
    return directory


def test_report_finds_the_newest_sweep_of_its_spec_and_lists_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = REPO / "sweeps" / "paper-small.yaml"
    text = path.read_text()
    _finished(tmp_path, "paper-small-20261201-010000", text, 1_000)
    newest = _finished(tmp_path, "paper-small-20261202-010000", text, 2_000)
    _finished(tmp_path, "other", "name: other\n", 3_000)  # another spec: never picked
    assert cli.main(["report", str(path), "--storage-path", str(tmp_path)]) == 0
    assert (newest / "summary.md").exists()
    argv = ["report", str(path), "--storage-path", str(tmp_path), "--name", "paper-small"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "--name: no finished sweep 'paper-small'" in err
    assert "paper-small-20261201-010000, paper-small-20261202-010000)" in err
    nowhere = tmp_path / "nowhere"  # without --name it is where to look that is wrong
    assert cli.main(["report", str(path), "--storage-path", str(nowhere)]) == 2
    assert f"--storage-path: no finished sweep of 'paper-small' in {nowhere}" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "trials.csv: not a trials table"),
        ("\x00\x01 not csv \xff", "trials.csv: not a trials table"),
        (
            "train.seed,method,status,probe_error_px\n",
            "trials.csv: no trials in it (a header only)",
        ),
    ],
    ids=["empty", "binary", "header only"],
)
def test_report_on_a_table_that_is_not_one_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    directory = tmp_path / "paper-small"
    directory.mkdir()
    (directory / "trials.csv").write_bytes(content.encode("latin-1"))
    argv = ["report", str(REPO / "sweeps" / "paper-small.yaml"), "--storage-path", str(tmp_path)]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (directory / "fig1c.png").exists()


def test_fig1c_finds_the_control_beside_axes_it_does_not_have(tmp_path: Path) -> None:
    """In a union grid the control's cell is 'untrained/-' (it has no N)."""
    rows = [("gaussian", 8, s, v) for s, v in enumerate([1.0, 2.0, 0.5])]
    rows += [("untrained", "-", s, v) for s, v in enumerate([6.0, 2.0, 7.0])]
    columns = ["method", "objective.n_negatives", "train.seed", "probe_error_px"]
    trials = pd.DataFrame(rows, columns=columns).assign(status="ok")
    context = reports.ReportContext("n", ["method", "objective.n_negatives"], _spec("smoke").base)
    rows_md = _rows(fig1c.report(trials, context, tmp_path).markdown)
    assert rows_md["gaussian/8"][4:6] == ["2/3", "3.83"]  # gains 5, 0, 6.5
    assert rows_md["untrained/-"][4] == "-"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("probe_error_px", 1, "abc"), "row 2: probe_error_px holds 'abc', not a number"),
        (("probe_error_px", None, "True"), "row 1: probe_error_px holds True, not a number"),
        (("mi_estimate", 4, "x"), "row 5: mi_estimate holds 'x', not a number"),
        (("train.seed", 0, "0.5"), "row 1: train.seed holds 0.5, not an integer seed"),
        (("train.seed", 2, "x"), "row 3: train.seed holds 'x', not an integer seed"),
        (("train.seed", 1, "inf"), "row 2: train.seed holds inf, not an integer seed"),
        (("coupling.kind", 0, "weird"), "row 1: coupling.kind holds 'weird', not a value of the"),
        (("train.seed", 2, "7"), "row 3: train.seed holds 7, not a value of the grid (0, 1, 2)"),
        (("probe_error_px", 1, "-5"), "row 2: probe_error_px holds -5.0, not a finite error >= 0"),
        (("probe_error_px", 1, "inf"), "row 2: probe_error_px holds inf, not a finite error"),
        (("probe_error_px", 1, "9" * 400), "row 2: probe_error_px holds inf, not a finite"),
        (("train.seed", 1, "9" * 400), "row 2: train.seed holds 9999"),  # was an OverflowError
        (("status", 3, ""), "row 4: status holds nan, not one of ok, diverged, stopped, error"),
        (("coupling.kind", 0, "gaussian"), "row 4: a second trial of one grid cell (coupling.kind"),
        (("probe_error_px", 1, "0"), None),
        (("objective.estimator", 2, ""), "row 3: objective.estimator holds nan, not a value of"),
    ],
)
def test_report_refuses_a_value_it_would_misread_naming_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: tuple, message: str | None
) -> None:
    """``abc`` as an MI was dropped from a mean (exit 0), as a probe error a repr'd
    traceback; ``True`` was drawn as 1; seed 0.5 became a column of its own."""
    directory = tmp_path / "critics"
    directory.mkdir()
    axes = {"coupling.kind": ["bilinear", "gaussian"], "objective.estimator": ["infonce"],
            "train.seed": [0, 1, 2]}  # fmt: skip
    trials = _trials(axes, {"probe_error_px": [1.0] * 6, "mi_estimate": [0.5] * 6}).astype(object)
    column, row, value = change
    if row is None:
        trials[column] = value == "True"
    else:
        trials.loc[row, column] = value
    trials.to_csv(directory / "trials.csv", index=False)
    argv = ["report", str(REPO / "sweeps" / "critics.yaml"), "--storage-path", str(tmp_path)]
    status = cli.main(argv)
    err = capsys.readouterr().err
    if message is None:
        assert status == 0, err
    else:
        assert status == 2 and f"trials.csv: {message}" in err, err
        assert not (directory / "summary.md").exists()


def test_report_refuses_a_method_its_grid_does_not_have(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = _finished(tmp_path, "paper-small", "", 0)
    table = directory / "trials.csv"
    table.write_text(table.read_text().replace("untrained,2,", "weird,2,"))
    argv = ["report", str(REPO / "sweeps" / "paper-small.yaml"), "--storage-path", str(tmp_path)]
    assert cli.main([*argv, "--name", "paper-small"]) == 2
    assert "row 6: method holds 'weird', not a value of the grid (supervised" in (
        capsys.readouterr().err
    )


def test_report_reads_the_dash_a_sweep_writes_for_another_blocks_axis(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The runner writes '-' for an axis only other blocks have; `ssvae report` refused it
    on the method and seed axes ('method holds '-', not a method of the grid')."""
    spec_file = tmp_path / "two.yaml"
    spec_file.write_text(
        "name: two\n"
        "grid: [{method: [gaussian, bilinear], train.seed: [0, 1]}, {method: [untrained]}]\n"
    )
    rows = [("gaussian", 0), ("gaussian", 1), ("bilinear", 0), ("bilinear", 1), ("untrained", "-")]
    table = pd.DataFrame(rows, columns=["method", "train.seed"]).assign(
        status="ok", probe_error_px=[1.0, 1.1, 2.0, 2.1, 5.0], seconds=1.0
    )
    (tmp_path / "two").mkdir()
    table.to_csv(tmp_path / "two" / "trials.csv", index=False)
    argv = ["report", str(spec_file), "--storage-path", str(tmp_path)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    table.loc[4, "method"] = "-"  # a method no cell has: still refused
    table.to_csv(tmp_path / "two" / "trials.csv", index=False)
    assert cli.main(argv) == 2


def test_a_report_of_constant_values_prints_no_library_warning(tmp_path: Path) -> None:
    """scipy's ConstantInputWarning (a rank correlation of equal values) reached the
    terminal with its source line; the table shows the NaN as -."""
    import warnings

    sweep = _spec("critics")
    trials = pd.DataFrame([dict(cell.params) for cell in sweep.cells]).assign(
        status="ok", probe_error_px=1.0, mi_estimate=0.5
    )
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        reports.write("critics", trials, sweep.report_context(), tmp_path, strict=True)
    assert [str(w.message) for w in seen if issubclass(w.category, RuntimeWarning)] == []


def test_report_reads_back_what_the_sweep_wrote_a_method_named_na_a_seed_past_2_53(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pandas read a method named NA as an empty cell, and a seed of 2**53 + 1 compared as
    the float it rounds to: both refused on the sweep's own table."""
    body = ("methods: {'NA': {train.mode: untrained}}\n"
            "grid: {method: [gaussian, 'NA'], train.seed: [9007199254740993, 0]}\n")  # fmt: skip
    path = write_spec(tmp_path, "odd", body)
    sweep = spec.load(path)
    (tmp_path / "runs" / "odd").mkdir(parents=True)
    rows = [dict(cell.params) for cell in sweep.cells]
    pd.DataFrame(rows).assign(status="ok", probe_error_px=1.0).to_csv(
        tmp_path / "runs" / "odd" / "trials.csv", index=False
    )
    argv = ["report", str(path), "--storage-path", str(tmp_path / "runs")]
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert "| NA |" in (tmp_path / "runs" / "odd" / "summary.md").read_text()


def test_report_of_a_searched_sweep_keeps_the_selection_in_its_summary(tmp_path: Path) -> None:
    """``ssvae report`` rewrote summary.md without the section a searched sweep ends with,
    the selected configurations scored on a second video: the study's estimate was lost."""
    path = write_spec(tmp_path, "opt", """
        grid: {coupling.kind: [gaussian]}
        search: {num_samples: 2, space: {train.lr: {dist: loguniform, low: 0.001, high: 0.1}}}
    """)  # fmt: skip
    directory = tmp_path / "runs" / "opt"
    directory.mkdir(parents=True)
    pd.DataFrame({
        "trial_id": ["a", "b"], "coupling.kind": ["gaussian"] * 2, "train.lr": [0.01, 0.05],
        "status": ["ok", "ok"], "probe_error_px": [0.8, 0.6], "seconds": [1.0, 1.0],
    }).to_csv(directory / "trials.csv", index=False)  # fmt: skip
    pd.DataFrame({
        "cell": ["gaussian"], "trial_id": ["b"], "validation_px": [0.6], "test_px": [0.75],
        "bias_px": [-0.15], "test_data_seed": [1000003],
    }).to_csv(directory / "selected.csv", index=False)  # fmt: skip
    argv = ["report", str(path), "--storage-path", str(tmp_path / "runs")]
    assert cli.main(argv) == 0
    summary = (directory / "summary.md").read_text()
    assert "## Selected by the search, scored on a second video" in summary
    assert _rows(summary.split("## Selected by the search")[1])["gaussian"][:2] == ["0.6", "0.75"]
    assert cli.main([*argv, "--out", str(tmp_path / "again")]) == 0  # and where --out says
    assert "| gaussian | 0.6 | 0.75 |" in (tmp_path / "again" / "summary.md").read_text()
