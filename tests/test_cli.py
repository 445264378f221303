from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ssvae_core import balls, cli, errors, fig1c, loader

TINY = [
    "--set",
    "data.n_frames=60",
    "--set",
    "data.size=32",
    "--set",
    "data.diameter=6",
    "--set",
    "train.batch_size=10",
    "--set",
    "train.device=cpu",
]


@pytest.fixture
def no_compute(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad input must be refused before any video is simulated."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("simulate() called before the config was validated")

    monkeypatch.setattr(balls, "simulate", refuse)
    monkeypatch.setattr(fig1c, "simulate", refuse)  # imported by name there


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "train.lrr=0.1"], "train.lrr: unknown key"),
        (["--set", "coupling.kind=rbf"], "coupling.kind: unknown name 'rbf'; choose from bilinear"),
        (["--set", "train.lr=0"], "train.lr: must be in (0, 10]"),
        (["--set", "train.lr=-1e-3"], "train.lr: must be in (0, 10]"),
        (["--set", "objective.n_negatives=5000"], "objective.n_negatives: 5000 negatives"),
        (["--set", "train.batch_size=1000"], "train.batch_size: 1000 pairs do not fit"),
        (["--set", "objective.estimator=mine"], "objective.estimator: unknown name 'mine'"),
        (["--preset", "huge"], "preset: unknown name 'huge'"),
        (["--config", "/nonexistent.yaml"], "/nonexistent.yaml: no such config file"),
        (["--set", "lr"], "lr: expected key=value"),
        (["--set", "train=&t {lr: 0.1, x: *t}"], "train.x: holds itself (a YAML alias"),
        (["--set", "train.epochs=010"], "train.epochs: expected int, got '010'"),  # not 8
        (["--set", "train.epochs=1:00"], "train.epochs: expected int, got '1:00'"),  # not 60
        (["--set", "train.epochs=" + "1" * 5000], "train.epochs: expected int, got '1111"),
        (["--set", "train.lr=" + "[" * 2000 + "]" * 2000], "--set train.lr: nested too deeply"),
        (["--set", "train.lr=0.1\x01"], "--set train.lr: not valid YAML: unacceptable character"),
        (["--set", "train." + "x" * 100_000 + "=1"], "'train.xxxx"),  # cut, see below
        (["--set", "train.a\nb=1"], "'train.a\\nb': unknown key"),  # one line, not two
        (["--set", ".train.epochs=1"], ".train.epochs: an empty name between dots"),  # was ": "
        (["--set", "train.epochs.=1"], "train.epochs.: an empty name between dots"),
        (["--set", "train.mode=ssl\t"], "train.mode: not valid YAML: line 1, column 4: found"),
    ],
)
@pytest.mark.usefixtures("no_compute")
def test_bad_input_exits_2_naming_the_key(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["train", *argv]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert message in err, err
    assert len(err) < 2_000 and err.count("\n") == 1  # a typed key is cut, never echoed whole


def test_config_file_errors_name_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_compute: None
) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  lr: 1e-3\n  epochs: many\n")
    assert cli.main(["train", "--config", str(path)]) == 2
    assert "train.epochs: expected int, got 'many'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train: 5\ntrain.lr: 0.1\n", "train: expected a mapping, got 5"),
        ("data: {size: 32}\ndata.size.x: 1\n", "data.size: expected a mapping, got 32"),
        ("train: {epochs: 2}\ntrain.lr: 0.1\nmodel: &m {a: *m}\n", "model.a: holds itself"),
        ("train.lr: 0.1\ntrain: {lr: 0.2}\n", "train.lr: set twice in one mapping"),
        ("train: {lr: 0.2}\ntrain.lr: 0.1\n", "train.lr: set twice in one mapping"),
        ("train: {lr: 0.1\x07}\n", "not valid YAML: unacceptable character #x0007"),
    ],
)
def test_a_config_file_a_dotted_key_cannot_read_is_refused_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_compute: None, text: str, message: str
) -> None:
    """Once tracebacks (TypeError, RecursionError, ReaderError) from `loader.nest` and
    `safe_yaml.read_yaml`."""
    path = tmp_path / "run.yaml"
    path.write_text(text)
    assert cli.main(["train", "--config", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_train_json_is_the_last_line_and_out_has_the_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = ["train", *TINY, "--set", "train.epochs=1", "--json", "--quiet", "--out", str(out)]
    assert cli.main(argv) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    metrics = json.loads(last)
    assert {"probe_error_px", "mi_estimate", "status", "seconds"} <= set(metrics)
    assert metrics["status"] == "ok" and metrics["probe_error_px"] > 0
    names = {p.name for p in out.iterdir()}
    assert {"config.yaml", "metrics.json", "history.csv", "fig1b.png", "fig1de.png"} <= names
    assert json.loads((out / "metrics.json").read_text())["status"] == "ok"
    history = (out / "history.csv").read_text().splitlines()  # a row per epoch, 0 and 1
    assert history[0].split(",")[0] == "epoch" and [r.split(",")[0] for r in history[1:]] == [
        "0", "1"]  # fmt: skip


def test_train_into_an_earlier_runs_out_leaves_none_of_its_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A supervised run (no coupling: no Fig. 1D/E) into the folder of a Gaussian one kept
    that run's fig1de.png beside its own config; a write that failed kept the old figures
    beside the new metrics, and exited 1 as if the run had failed."""
    from ssvae_core import figures

    out = tmp_path / "run"
    argv = ["train", *TINY, "--set", "train.epochs=1", "--quiet", "--out", str(out)]
    assert cli.main(argv) == 0
    assert cli.main([*argv, "--set", "train.mode=supervised"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "config.yaml", "fig1b.png", "history.csv", "metrics.json"]  # fmt: skip

    def full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    shared = tmp_path / "shared.json"  # a link is written through, not removed
    shared.write_text("old")
    (out / "metrics.json").unlink()
    (out / "metrics.json").symlink_to(shared)
    assert cli.main(argv) == 0
    assert (out / "metrics.json").is_symlink() and '"probe_error_px"' in shared.read_text()

    monkeypatch.setattr(figures, "fig1b", full)
    assert cli.main(argv) == 3  # the machine's problem, not the run's
    assert "No space left on device" in capsys.readouterr().err
    assert "fig1b.png" not in {p.name for p in out.iterdir()}


def test_train_imports_only_what_it_uses(tmp_path: Path) -> None:
    """Without --out, `ssvae train` writes nothing and imports neither pandas nor matplotlib;
    with --out (the control), it does. Never torch._dynamo (`ssvae_core.optim`). Fresh
    processes: the test run's own imports would hide them."""

    def imported(*extra: str) -> str:
        argv = ["train", *TINY, "--set", "train.epochs=1", "--quiet", *extra]
        script = (
            "import sys\n"
            "from ssvae_core import cli\n"
            f"assert cli.main({argv!r}) == 0\n"
            "watched = {'pandas', 'matplotlib', 'torch._dynamo'}\n"
            "print('IMPORTED:', *sorted(watched & set(sys.modules)))\n"
        )
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]

    assert imported() == "IMPORTED:"
    assert imported("--out", str(tmp_path / "run")) == "IMPORTED: matplotlib pandas"


def test_diverged_run_exits_1_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "train",
        *TINY,
        "--set",
        "train.lr=10",
        "--set",
        "coupling.kind=gaussian",
        "--set",
        "train.epochs=1",
        "--json",
        "--quiet",
    ]
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert "diverged" in captured.err and "train.lr" in captured.err
    assert json.loads(captured.out.strip().splitlines()[-1])["probe_error_px"] is None


def test_data_preview_writes_a_png(tmp_path: Path) -> None:
    path = tmp_path / "preview.png"
    assert cli.main(["data", *TINY, "--preview", str(path)]) == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_data_needs_only_the_data_section_and_says_what_else_changes_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A video shorter than the preset's batch is a video (only training needs the batch to
    fit); a training key is still checked, and said to change nothing."""
    assert cli.main(["data", "--set", "data.n_frames=10", "--set", "coupling.kind=bilinear"]) == 0
    captured = capsys.readouterr()
    assert "video: (10, 64, 64, 3) uint8" in captured.out
    assert "warning: coupling.kind: set, it changes nothing in the video" in captured.err
    assert cli.main(["data", "--set", "data.n_frames=10", "--set", "train.lr=-1"]) == 2
    assert "train.lr: must be in (0, 10], got -1.0" in capsys.readouterr().err
    assert cli.main(["data", "--set", "data.n_frames=1"]) == 2
    assert "data.n_frames: must be >= 2" in capsys.readouterr().err
    assert cli.main(["data", "--set", "data.n_frames=10", "--set", "coupling.dof=null"]) == 0
    assert "warning" not in capsys.readouterr().err  # a null is no setting (a run's dump)


def test_data_previews_a_video_of_two_frames(tmp_path: Path) -> None:
    """The preview drew frames 0 to 3 whatever the video's length: an IndexError after
    simulating."""
    png = tmp_path / "two.png"
    assert cli.main(["data", "--set", "data.n_frames=2", "--preview", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_out_refuses_to_write_over_its_own_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_compute: None
) -> None:
    """--out DIR wrote DIR/config.yaml over the commented file --config read."""
    mine = tmp_path / "config.yaml"
    mine.write_text("# my notes\ntrain: {epochs: 1}\n")
    assert cli.main(["train", *TINY, "--config", str(mine), "--out", str(tmp_path)]) == 2
    assert f"--out: {mine} is also the --config file" in capsys.readouterr().err
    assert mine.read_text().startswith("# my notes")


def test_data_beyond_the_machine_is_refused_before_simulating(
    no_compute: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["data", "--set", "data.n_frames=100000000"]) == 2
    assert "data.n_frames: the video needs about" in capsys.readouterr().err


def test_a_stderr_that_cannot_be_written_does_not_stop_training(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``2> log`` on a disk that fills: the progress bar's next line raised ENOSPC and the run
    died at that epoch, its result lost (and with --checkpoint-dir the checkpoint blamed)."""
    import errno
    import io

    class Full(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sys, "stderr", Full())
    assert cli.main(["train", *TINY, "--set", "train.epochs=2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["probe_error_px"] > 0


def test_sigterm_is_one_line_exit_143_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    """``timeout``, ``kill``, systemd's stop: the process ended silently (143 from the signal
    itself), its temporary checkpoint file left beside state.pt when it landed mid-write."""
    import signal
    import time

    ck = tmp_path / "ck"
    argv = [sys.executable, "-m", "ssvae_core.cli", "train", *TINY, "--set", "train.epochs=500",
            "--quiet", "--checkpoint-dir", str(ck)]  # fmt: skip
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (ck / "state.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert err.strip() == "ssvae train: terminated (SIGTERM)"
    assert [p.name for p in ck.iterdir()] == ["state.pt"]


def test_a_full_disk_under_stdout_is_one_line_and_loses_no_file(tmp_path: Path) -> None:
    """``> /dev/full``: mi-bench printed its tables before writing its files, and died in a
    traceback with none written."""
    csv, md = tmp_path / "rows.csv", tmp_path / "tables.md"
    args = ["--smoke-test", "--tasks", "gaussian", "--estimators", "infonce", "--couplings",
            "bilinear", "--mis", "2", "--csv", str(csv), "--out", str(md)]  # fmt: skip
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "ssvae_core.mi_bench", *args], stdout=full,
            stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 3, done.stderr[-2000:]
    assert done.stderr.endswith(
        "ssvae: error: could not write the output: No space left on device\n"
    )
    assert "Traceback" not in done.stderr
    assert csv.read_text().startswith("task,") and "| estimator" in md.read_text()


@pytest.mark.parametrize("entry", [["ssvae_core.cli", "data"], ["ssvae_core.mi_bench"]])
def test_figures_ignore_a_bad_mplbackend(entry: list[str], tmp_path: Path) -> None:
    """Figures are files: an MPLBACKEND matplotlib does not know (it fails ``import
    matplotlib`` itself) must not break them, in ``ssvae`` or ``python -m ssvae_core.mi_bench``."""
    png = tmp_path / "figure.png"
    args = [*TINY, "--preview", str(png)] if entry[-1] == "data" else [
        "--smoke-test", "--tasks", "gaussian", "--estimators", "infonce",
        "--couplings", "bilinear", "--mis", "2", "--figure", str(png)]  # fmt: skip
    env = {**os.environ, "MPLBACKEND": "no-such-backend"}
    done = subprocess.run(
        [sys.executable, "-m", *entry, *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fig1c_runs_every_method_and_seed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "fig1c",
        *TINY,
        "--set",
        "train.epochs=1",
        "--methods",
        "gaussian",
        "untrained",
        "--seeds",
        "0",
        "1",
        "--out",
        str(tmp_path),
    ]
    assert cli.main(argv) == 0
    table = (tmp_path / "fig1c.csv").read_text().splitlines()
    assert len(table) == 1 + 4
    assert (tmp_path / "fig1c.png").exists()
    captured = capsys.readouterr()
    assert "gaussian" in captured.out
    assert "fig1c: 100%" in captured.err and "2/2 [" in captured.err  # 2 seeds x 1 epoch
    assert "untrained seed 1:" in captured.err
    assert "warning" not in captured.err  # gaussian trains with every key TINY sets


def test_fig1c_says_which_settings_no_method_trains_with(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The untrained control has no optimiser and no batches: its lr changes nothing."""
    argv = ["fig1c", *TINY, "--set", "train.lr=0.5", "--methods", "untrained", "--seeds", "0"]
    assert cli.main(argv) == 0
    said = "ssvae fig1c: warning: train.batch_size, train.lr: set, and no method of --methods"
    assert said in capsys.readouterr().err


def test_fig1c_rejects_an_unknown_method(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["fig1c", "--methods", "linear"]) == 2
    assert "--methods: unknown name 'linear'; choose from" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--set", "train.seed=5"], "train.seed: ssvae fig1c sets it, once per --seeds value"),
        (["--set", "train.optimizer=sgd"], "train.optimizer: method 'supervised' sets it ('adam')"),
        (["--methods", "gaussian", "--set", "coupling.kind=bilinear"],
         "coupling.kind: method 'gaussian' sets it ('gaussian'); leave coupling.kind out of "
         "--config/--set, or gaussian out of --methods"),
        (["--config", "{config}"], "train.lr: method 'supervised' sets it (0.03)"),  # read
        (["--seeds", "0", "1", "0"], "--seeds: 0 given twice: each run once"),
        (["--methods", "gaussian", "untrained", "gaussian"], "--methods: gaussian given twice"),
        (["--seeds", "-1"], "--seeds: must be >= 0, got -1"),
    ],
)  # fmt: skip
@pytest.mark.usefixtures("no_compute")
def test_fig1c_refuses_a_key_its_methods_or_seeds_would_replace(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("train: {lr: 0.01}\n")
    argv = [arg.format(config=config) for arg in argv]
    assert cli.main(["fig1c", *TINY, *argv]) == 2
    assert message in capsys.readouterr().err


def test_fig1c_takes_a_methods_own_value_and_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("train: {epochs: 3}\n")
    given = loader.given(config, ["train.optimizer=adam", "train.lr=0.03"])
    runs = fig1c.method_configs("small", ["supervised", "gaussian"], [0, 4], given)
    assert [(m, s) for m, s, _ in runs] == [("supervised", 0), ("supervised", 4),
                                           ("gaussian", 0), ("gaussian", 4)]  # fmt: skip
    assert {cfg.train.epochs for _, _, cfg in runs} == {3}  # from the file
    assert [cfg.train.seed for _, _, cfg in runs] == [0, 4, 0, 4]


def test_fig1c_exits_1_naming_the_runs_that_failed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["fig1c", *TINY, "--set", "train.epochs=1", "--set", "train.lr=10",
            "--methods", "gaussian", "untrained", "--seeds", "0"]  # fmt: skip
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert "1 of 2 runs failed: gaussian seed 0 (diverged)" in captured.err
    assert "untrained" in captured.out  # the table is still printed


def test_fig1c_keeps_the_runs_done_when_interrupted(
    tmp_path: Path, ctrl_c_at_call: Callable[[object, str, int], None]
) -> None:
    ctrl_c_at_call(fig1c, "fit", 2)
    argv = ["fig1c", *TINY, "--set", "train.epochs=1", "--methods", "untrained", "gaussian",
            "--seeds", "0", "--out", str(tmp_path), "--quiet"]  # fmt: skip
    assert cli.main(argv) == 130
    table = (tmp_path / "fig1c.csv").read_text().splitlines()
    assert len(table) == 2 and table[1].startswith("untrained,0,")


def test_ctrl_c_is_one_line_and_exit_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(balls, "simulate", interrupted)  # Ctrl-C while the video is simulated
    assert cli.main(["train", *TINY]) == 130
    assert capsys.readouterr().err == "\nssvae train: interrupted\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--out", ""],
        ["train", "--checkpoint-dir", ""],
        ["train", "--config", ""],
        ["fig1c", "--out", ""],
        ["data", "--preview", ""],
        ["sweep", ""],
        ["report", "sweeps/smoke.yaml", "--storage-path", ""],
        ["nightly", "sweeps/smoke.yaml", "--out", ""],
        ["nightly", ""],
        ["mi-bench", "--from-csv", ""],
        ["mi-bench", "--csv", ""],
    ],
)
def test_an_empty_path_is_refused_at_parsing(
    argv: list[str], capsys: pytest.CaptureFixture[str], no_compute: None
) -> None:
    """``--out ''`` was taken as no --out (nothing written, exit 0), and ``fig1c --out ''``
    wrote into the working directory."""
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    flag = (
        argv[-2]
        if argv[-2].startswith("--")
        else {"nightly": "SPEC | history SPEC_NAME"}.get(argv[0], "FILE")
    )
    assert f"argument {flag}: expected a path, got an empty one" in capsys.readouterr().err


LONG = "a" * 256  # one byte over a name's limit: every exists() on it raised 'File name too long'


@pytest.mark.parametrize(
    ("argv", "flag", "problem"),
    [
        (["train", "--out", LONG], "--out", "a name in the path is 256 bytes long, 255 at most"),
        (["train", "--config", f"x/{LONG}.yaml"], "--config", "is 261 bytes long, 255 at most"),
        (["data", "--preview", f"{LONG}.png"], "--preview", "is 260 bytes long"),
        (["report", f"{LONG}.yaml"], "FILE", "is 261 bytes long"),
        (["mi-bench", "--figure", f"{LONG}.png"], "--figure", "is 260 bytes long"),
        (["mi-bench", "--files", "é" * 128], "--files", "is 256 bytes long"),  # bytes, not chars
        (["nightly", "history", "x", "--out", "a/" * 2048], "--out", "4096 bytes long, under"),
    ],
)
def test_a_path_no_file_system_takes_is_refused_at_parsing(
    argv: list[str], flag: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: " in err and problem in err and "Traceback" not in err
    assert errors.path_problem("a" * 255) is None and errors.path_problem("a/" * 100) is None


def test_a_named_pipe_where_a_run_writes_is_refused_not_waited_on(tmp_path: Path) -> None:
    """Opening the pipe left at ``out/metrics.json`` waited for a reader for ever, after the
    training, and the metrics were never printed; now it is refused before the training (and
    `ssvae_core.files` refuses to open one, whoever writes)."""
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "metrics.json")
    argv = ["train", *TINY, "--set", "train.epochs=1", "--quiet", "--json", "--out", str(out)]
    done = subprocess.run([sys.executable, "-m", "ssvae_core.cli", *argv], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"--out: {out / 'metrics.json'} is a named pipe" in done.stderr
    assert done.stdout == "" and not (out / "config.yaml").exists()  # nothing trained


def test_a_reader_that_leaves_early_ends_the_command_quietly(tmp_path: Path) -> None:
    """``ssvae ... | head -1``: the write into the closed pipe was a BrokenPipeError stack;
    now exit 141 and nothing more, as a process SIGPIPE ends (`cat`, `grep`)."""
    spec = Path(__file__).resolve().parents[1] / "sweeps" / "couplings.yaml"
    ssvae = Path(sys.executable).parent / "ssvae"
    reader_gone = subprocess.Popen(
        [str(ssvae), "sweep", str(spec), "--dry-run"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert reader_gone.stdout is not None and reader_gone.stderr is not None
    reader_gone.stdout.close()  # before the command writes a line
    said = reader_gone.stderr.read().decode()
    assert reader_gone.wait(timeout=120) == errors.EXIT_PIPE == 141
    assert said == ""


@pytest.mark.parametrize("folder", ["--out", "--checkpoint-dir"])
@pytest.mark.parametrize("problem", ["a link to nothing", "read-only", "a directory"])
@pytest.mark.usefixtures("no_compute")
def test_a_file_train_would_write_is_checked_before_it_trains(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    folder: str,
    problem: str,
) -> None:
    """A link to nothing was written through, its folders made wherever it pointed; a
    read-only state.pt or a directory named history.csv was found after the training."""
    directory = tmp_path / "run"
    directory.mkdir()
    path = directory / ("history.csv" if folder == "--out" else "state.pt")
    if problem == "a link to nothing":
        path.symlink_to(tmp_path / "elsewhere" / "x")
        said = "is a symbolic link to nothing"
    elif problem == "read-only":
        path.write_text("")
        real_access = os.access  # this test runs as root, whom os.access never refuses
        monkeypatch.setattr(os, "access", lambda p, mode: p != path and real_access(p, mode))
        said = "is read-only"
    else:
        path.mkdir()
        said = "is a directory"
    assert cli.main(["train", *TINY, folder, str(directory)]) == errors.EXIT_BAD_INPUT
    assert f"{folder}: {path} {said}" in capsys.readouterr().err
    assert not (tmp_path / "elsewhere").exists()


def test_a_checkpoint_the_disk_cannot_take_is_one_line_and_exit_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A full disk under --checkpoint-dir was torch's RuntimeError chained to an OSError."""
    from ssvae_core import checkpoint

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save", full)
    argv = ["train", *TINY, "--set", "train.epochs=2", "--quiet"]
    assert cli.main([*argv, "--checkpoint-dir", str(tmp_path / "ck")]) == errors.EXIT_INFRA
    err = capsys.readouterr().err
    assert "could not write a checkpoint in" in err and "No space left on device" in err
    assert "Traceback" not in err


def test_a_second_config_file_is_refused_not_silently_applied_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text("train: {lr: 0.02}\n")
    argv = ["train", "--config", str(tmp_path / "a.yaml"), "--config", str(tmp_path / "b.yaml")]
    with pytest.raises(SystemExit) as exited:  # argparse's exit 2, before anything is read
        cli.main(argv)
    assert exited.value.code == 2
    assert "--config: given twice" in capsys.readouterr().err


UNTRAINED = ["--set", "train.mode=untrained", "--set", "train.lr=9"]
SUPERVISED = ["--set", "train.mode=supervised", "--set", "objective.estimator=nwj"]


@pytest.mark.parametrize(
    ("argv", "unused"),
    [  # an untrained run has no optimiser, epochs or batches; a supervised one no objective
        (UNTRAINED, "untrained does not train with train.batch_size, train.epochs, train.lr"),
        (SUPERVISED, "supervised does not train with objective.estimator"),
    ],
)
def test_a_setting_the_run_does_not_use_is_named_once(
    capsys: pytest.CaptureFixture[str], argv: list[str], unused: str
) -> None:
    assert cli.main(["train", *TINY, "--set", "train.epochs=1", "--quiet", *argv]) == 0
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and f"ssvae train: warning: train.mode {unused}: set" in err


def test_settings_the_run_uses_draw_no_warning(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli.main(["train", *TINY, "--set", "train.epochs=0", "--quiet"]) == 0  # TINY: all used
    assert "warning" not in capsys.readouterr().err
    # a run's own config.yaml (its nulls are no settings: they warned of encoder.sigma, ...)
    assert cli.main(["train", *TINY, "--set", "train.epochs=0", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert cli.main(["train", "--config", str(tmp_path / "config.yaml"), "--quiet"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_a_resumed_run_says_so_and_its_bar_counts_the_restored_epochs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The bar ended at 2/4 after a resume, and at 0/4 on a finished checkpoint, silently."""
    argv = ["train", *TINY, "--checkpoint-dir", str(tmp_path / "ck")]
    assert cli.main([*argv, "--set", "train.epochs=2"]) == 0
    assert "resumed" not in capsys.readouterr().err
    assert cli.main([*argv, "--set", "train.epochs=3"]) == 0
    err = capsys.readouterr().err
    assert f"ssvae train: resumed from {tmp_path / 'ck'} after epoch 2" in err
    assert "\rssvae train: resumed from" in err  # the bar cleared first, not glued to it
    assert "3/3" in err.split("\r")[-1]  # the bar's last state
    assert cli.main([*argv, "--set", "train.epochs=3"]) == 0
    err = capsys.readouterr().err
    assert "holds every epoch: none trained" in err and "3/3" in err.split("\r")[-1]


def test_a_diverged_run_is_said_once(tmp_path: Path) -> None:
    """A logged warning said it a second time above the CLI's line (a real process: pytest
    captures logging itself)."""
    argv = ["train", *TINY, "--set", "train.lr=10", "--set", "train.epochs=1", "--quiet"]
    done = subprocess.run([sys.executable, "-m", "ssvae_core.cli", *argv], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1 and done.stderr.count("diverged") == 1, done.stderr


def test_a_resumed_run_that_diverges_at_once_says_it_resumed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It said the checkpoint held every epoch, then that the run diverged."""
    from ssvae_core import train

    argv = ["train", *TINY, "--checkpoint-dir", str(tmp_path / "ck")]
    assert cli.main([*argv, "--set", "train.epochs=2"]) == 0
    capsys.readouterr()

    def diverges(self: object, epoch: int) -> None:
        raise train.Diverged(f"loss is nan at epoch {epoch}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train.Run, "train_epoch", diverges)
        assert cli.main([*argv, "--set", "train.epochs=3"]) == 1
    err = capsys.readouterr().err
    assert f"resumed from {tmp_path / 'ck'} after epoch 2" in err and "holds every" not in err


@pytest.mark.parametrize("name", ["fig1c.csv", "fig1c.png"])
@pytest.mark.usefixtures("no_compute")
def test_fig1c_checks_its_files_before_it_trains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    """A folder at out/fig1c.png was a stack after every run had trained."""
    (tmp_path / "out" / name).mkdir(parents=True)
    argv = ["fig1c", *TINY, "--seeds", "0", "--out", str(tmp_path / "out")]
    assert cli.main(argv) == errors.EXIT_BAD_INPUT
    assert f"--out: {tmp_path / 'out' / name} is a directory" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--config", "noacc/c.yaml"],
        ["sweep", "noacc/smoke.yaml", "--dry-run"],
        ["report", "noacc/smoke.yaml"],
        ["mi-bench", "--tasks", "none", "--files", "noacc/x.npz"],
        ["mi-bench", "--smoke-test", "--csv", "noacc/x.csv"],
        ["sweep", "smoke.yaml", "--dry-run", "--storage-path", "noacc/x"],
        ["report", "smoke.yaml", "--storage-path", "noacc/x"],
        ["report", "smoke.yaml", "--storage-path", ".", "--name", "noacc"],  # 'no such sweep'
    ],
)
def test_a_path_in_a_folder_this_user_may_not_enter_is_exit_2_naming_it(
    tmp_path: Path, argv: list[str]
) -> None:
    """Another user's folder on a shared machine: each was a PermissionError traceback.
    As root, the test drops the capabilities that let root in anyway."""
    import shutil

    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root without setpriv: every folder may be entered")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
    locked = tmp_path / "noacc"
    locked.mkdir()
    (locked / "c.yaml").write_text("train: {}\n")
    spec = Path(__file__).parent.parent / "sweeps" / "smoke.yaml"
    for folder in (locked, tmp_path):
        shutil.copy(spec, folder / "smoke.yaml")
    locked.chmod(0)
    try:
        command = [*prefix, sys.executable, "-m", "ssvae_core.cli", *argv]
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    finally:
        locked.chmod(0o700)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "noacc" in done.stderr and "Permission denied" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [("TQDM_NCOLS", "abc"), ("TQDM_BAR_FORMAT", "{bar"), ("TQDM_BAR_FORMAT", "{nope}")],
)
def test_a_tqdm_variable_tqdm_cannot_use_is_exit_2_naming_it(name: str, value: str) -> None:
    """Each was a traceback: TQDM_NCOLS=abc at tqdm's import (even with --quiet), a broken
    bar format at the first bar. A fresh process: tqdm reads them when it is imported."""
    env = {**os.environ, name: value}
    argv = [sys.executable, "-m", "ssvae_core.cli", "train", *TINY, "--set", "train.epochs=1"]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"${name}=" in done.stderr and "Traceback" not in done.stderr
