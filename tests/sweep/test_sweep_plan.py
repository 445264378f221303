"""``ssvae sweep --dry-run`` and the warning for grid cells that would train the same runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from sweep_helpers import write_spec

from ssvae_core import cli
from ssvae_core.sweep import plan, spec

REPO = Path(__file__).resolve().parents[2]

IGNORED = """\
    grid: {method: [untrained, gaussian], train.lr: [0.01, 0.1], train.seed: [0, 1]}
    """


def test_cells_that_differ_only_in_what_their_mode_ignores_are_found(tmp_path: Path) -> None:
    """An untrained run has no optimiser: its two learning rates train one run twice."""
    sweep = spec.load(write_spec(tmp_path, "ignored", IGNORED))
    found = plan.same_runs(sweep)
    assert [(s.first.index, s.again.index, s.keys) for s in found] == [
        (0, 2, ("train.lr",)),  # seed 0 at lr 0.01 and at lr 0.1
        (1, 3, ("train.lr",)),
    ]
    assert str(found[0]) == (
        "grid cells (method=untrained, train.lr=0.01, train.seed=0) and (method=untrained, "
        "train.lr=0.1, train.seed=0) train the same run: they differ only in train.lr, which "
        "train.mode untrained does not use"
    )


def test_one_config_spelt_two_ways_is_said_so(tmp_path: Path) -> None:
    """The warning read 'they differ only in , which ...'."""
    body = "grid: [{method: [gaussian], train.seed: [0]}, {coupling.kind: [gaussian]}]"
    [found] = plan.same_runs(spec.load(write_spec(tmp_path, "twice", body)))
    assert str(found).endswith("train the same run: their settings are the same")


def test_a_search_over_a_key_the_mode_does_not_use_is_said(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The untrained control has no optimiser: its search over lr trains one run 3 times."""

    def body(more: str = "") -> str:
        space = "{train.lr: {dist: loguniform, low: 0.001, high: 0.1}" + more + "}"
        grid = "grid: {method: [untrained, gaussian]}\n"
        return grid + f"search: {{num_samples: 3, space: {space}}}"

    path = write_spec(tmp_path, "lr", body())
    assert cli.main(["sweep", str(path), "--dry-run"]) == 0
    assert "warning: grid cell (method=untrained) searches train.lr" in capsys.readouterr().err
    sweep = spec.load(path)
    assert plan.idle_searches(sweep) == [
        "grid cell (method=untrained) searches train.lr, which train.mode untrained does not "
        "use: its 3 trials train the same run"
    ]
    seed = ", data.seed: {dist: int, low: 0, high: 9}"
    sweep = spec.load(write_spec(tmp_path, "both", body(seed)))
    [line] = plan.idle_searches(sweep)
    assert line.endswith("does not use: the values searched change nothing in its trials")


@pytest.mark.parametrize("path", sorted((REPO / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_no_shipped_sweep_trains_a_run_twice(path: Path) -> None:
    sweep = spec.load(path)
    assert plan.same_runs(sweep) == [] and plan.idle_searches(sweep) == []


def test_a_dry_run_says_what_would_run_and_runs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    path = write_spec(tmp_path, "ignored", IGNORED)
    assert cli.main(["sweep", str(path), "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert err.count("ssvae sweep: warning: grid cells (method=untrained, train.lr=0.01") == 2
    lines = out.splitlines()
    assert lines[0] == "sweep ignored: 8 trial(s), study report 'fig1c'"
    assert lines[2].split() == ["cell", "method", "train.lr", "train.seed", "mode", "epochs"]
    assert lines[3].split() == ["0", "untrained", "0.01", "0", "untrained", "-"]
    assert lines[-3].endswith("ignored (new)") and lines[-1] == "nothing was run (--dry-run)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ignored.yaml"]  # no runs/, no mlflow.db

    there = tmp_path / "runs" / "sweeps" / "ignored"  # a sweep started there
    there.mkdir(parents=True)
    (there / "sweep.yaml").write_text(path.read_text())
    assert cli.main(["sweep", str(path), "--dry-run", "--resume"]) == 0
    assert "(the sweep there continued)" in capsys.readouterr().out
    # what a run would refuse, the dry run refuses (it exited 0)
    assert cli.main(["sweep", str(path), "--dry-run"]) == 2
    assert "holds a sweep already; pass --resume" in capsys.readouterr().err
    (there / "sweep.yaml").write_text(path.read_text().replace("0.1]", "0.2]"))
    assert cli.main(["sweep", str(path), "--dry-run", "--resume"]) == 2
    assert "the spec (or its --set overrides) differs" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("body", "flags", "said"),
    [
        ("grid: {train.lr: [0.1, -1]}", [], "train.lr"),
        ("grid: {train.device: [cuda]}", [], "resources.gpu is 0"),  # this machine's check
        ("grid: {train.seed: [0]}", ["--tracking-uri", "bogus://x"], "no MLflow store for bogus"),
        ("grid: {train.seed: [0]}", ["--tracking-uri", "sqlite:///:memory:"], "keeps nothing"),
        ("grid: {train.seed: [0]}", ["--storage-path", "/dev/null"], "--storage-path"),
    ],
)
def test_a_dry_run_refuses_what_a_run_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str, flags: list[str], said: str
) -> None:
    path = write_spec(tmp_path, "bad", body)
    assert cli.main(["sweep", str(path), "--dry-run", *flags]) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err


def test_a_dry_run_here_refuses_a_trial_larger_than_this_machine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep started here runs here: a GPU share on a machine with none (``paper.yaml`` on
    a laptop) or more cores than it has is refused; with --address, RAY_ADDRESS or a `ray
    start` cluster on this machine (which ray.init joins) the cluster's nodes decide, when
    the run asks them."""
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))  # no `ray start` cluster here
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    gpu = write_spec(tmp_path, "gpu", "resources: {gpu: 0.25}\ngrid: {train.seed: [0]}")
    assert cli.main(["sweep", str(gpu), "--dry-run"]) == 2
    said = "resources.gpu: each trial asks for 0.25 GPU, and this machine has 0"
    assert said in capsys.readouterr().err
    assert cli.main(["sweep", str(gpu), "--dry-run", "--address", "10.0.0.1:6379"]) == 0
    (tmp_path / "ray").mkdir()  # `ray start` ran here: ray.init would join its cluster
    (tmp_path / "ray" / "ray_current_cluster").write_text("10.0.0.1:6379")
    assert cli.main(["sweep", str(gpu), "--dry-run"]) == 0
    (tmp_path / "ray" / "ray_current_cluster").unlink()
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert cli.main(["sweep", str(gpu), "--dry-run"]) == 0
    monkeypatch.delenv("RAY_ADDRESS")
    cpu = write_spec(tmp_path, "cpu", "resources: {cpu: 100000}\ngrid: {train.seed: [0]}")
    assert cli.main(["sweep", str(cpu), "--dry-run"]) == 2
    assert "resources.cpu: each trial asks for 100000 CPU" in capsys.readouterr().err


def test_a_sweep_folder_that_is_a_file_or_a_dangling_link_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Checked with the sweep's state, before Ray or MLflow: a run would otherwise open its
    MLflow parent run and then fail to write its folder."""
    path = write_spec(tmp_path, "s", "grid: {train.seed: [0]}")
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "file").write_text("x")
    (runs / "dangling").symlink_to(tmp_path / "nowhere")
    (runs / "to-file").symlink_to(runs / "file")
    cases = (("file", "a file"), ("dangling", "a link to nothing"), ("to-file", "a link to a file"))
    for name, what in cases:
        argv = ["sweep", str(path), "--dry-run", "--storage-path", str(runs), "--name", name]
        assert cli.main(argv) == 2
        assert f"--name: {runs / name} is {what}, not a folder" in capsys.readouterr().err
    (tmp_path / "elsewhere").mkdir()
    (runs / "linked").symlink_to(tmp_path / "elsewhere")  # a folder on another disk: fine
    argv = ["sweep", str(path), "--dry-run", "--storage-path", str(runs), "--name", "linked"]
    assert cli.main(argv) == 0


def test_a_dry_run_is_not_a_sync(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:  # argparse's
        cli.main(["sweep", str(write_spec(tmp_path, "s", "")), "--dry-run", "--sync"])
    assert exited.value.code == 2
    assert "--sync: not allowed with argument --dry-run" in capsys.readouterr().err
