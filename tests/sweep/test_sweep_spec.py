"""Sweep specs: every trial config is validated at load time; bad input exits 2 before Ray/MLflow.

Also: every shipped ``sweeps/*.yaml`` parses and validates (nothing runs).
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytest.importorskip("mlflow")

import ray
from sweep_helpers import REPO, SMOKE, free_port, write_spec

from ssvae_core import cli
from ssvae_core.errors import ConfigError
from ssvae_core.sweep import space, spec, storage

SHIPPED = sorted((REPO / "sweeps").glob("*.yaml"))

# (name, body appended to the tiny base, the dotted key the message must start with)
BAD_SPECS = [
    ("unknown-coupling", "grid: {coupling.kind: [gaussian, nope]}", "coupling.kind"),
    ("unknown-estimator", "grid: {objective.estimator: [infonce, mine]}", "objective.estimator"),
    ("lr-not-positive", "grid: {train.lr: [0.01, -1]}", "train.lr"),
    ("too-many-negatives", "grid: {objective.n_negatives: [4, 100]}", "objective.n_negatives"),
    ("batch-too-big", "grid: {train.batch_size: [10, 80]}", "train.batch_size"),
    ("unknown-key", "grid: {train.learning_rate: [0.1]}", "train.learning_rate"),
    ("wrong-type", "grid: {train.epochs: [two]}", "train.epochs"),
    ("unknown-method", "grid: {method: [gaussian, mine]}", "grid.method"),
    ("empty-axis", "grid: {train.seed: []}", "grid.train.seed"),
    (
        "search-unknown-key",
        "search: {space: {train.momentum_x: {dist: uniform, low: 0.0, high: 0.5}}}",
        "train.momentum_x",
    ),
    (
        "search-bad-bounds",
        "search: {space: {train.lr: {dist: loguniform, low: 0.1, high: 0.01}}}",
        "search.space.train.lr.high",
    ),
    (
        "search-log-zero",
        "search: {space: {train.lr: {dist: loguniform, low: 0, high: 0.1}}}",
        "search.space.train.lr.low",
    ),
    (
        "search-lr-zero",
        "search: {space: {train.lr: {dist: uniform, low: 0, high: 0.1}}}",
        "train.lr",
    ),
    (
        "search-int-key-float",
        "search: {space: {train.epochs: {dist: uniform, low: 1, high: 4}}}",
        "train.epochs",
    ),
    (
        "search-no-effect",
        "grid: {coupling.kind: [bilinear]}\n"
        "search: {space: {coupling.lengthscale: {dist: loguniform, low: 0.01, high: 1}}}",
        "coupling.lengthscale",
    ),
    (  # its message read "no coupling in grid cell (...) has no 'lengthscale'"
        "coupling-key-on-a-supervised-cell",
        "grid: {method: [supervised, gaussian], coupling.lengthscale: [0.05, 0.1]}",
        "coupling.lengthscale: grid cell (method=supervised, coupling.lengthscale=0.05) "
        "trains no coupling (train.mode supervised)",
    ),
    (
        "search-over-method",
        "search: {space: {method: {dist: uniform, low: 0.1, high: 0.2}}}",
        "search.space.method",
    ),
    ("resamples-beyond-memory", "nightly: {resamples: 1000000000000}", "nightly.resamples"),
    ("bad-gpu", "resources: {cpu: 1, gpu: -0.5}", "resources.gpu"),
    ("gpu-finer-than-ray", "resources: {cpu: 1, gpu: 0.00001}", "resources.gpu"),
    ("cpu-finer-than-ray", "resources: {cpu: 1.0e-300}", "resources.cpu"),
    ("bad-scheduler", "scheduler: {kind: hyperband}", "scheduler.kind"),
    (
        "asha-on-stale-probe",
        "grid: {probe.every_epochs: [1, 3]}\nscheduler: {kind: asha}",
        "base.probe.every_epochs",
    ),
    (
        "asha-grace-beyond-the-trials",  # Ray's AssertionError once the sweep had started
        "grid: {train.epochs: [1], probe.every_epochs: [1]}\n"
        "scheduler: {kind: asha, grace_period: 5}",
        "scheduler.grace_period",
    ),
    (
        "asha-billions-of-rungs",  # Ray built them until the machine's memory ran out
        "grid: {train.epochs: [3], probe.every_epochs: [1]}\n"
        "scheduler: {kind: asha, reduction_factor: 1.0000000001}",
        "scheduler.reduction_factor",
    ),
    ("negative-data-seed", "grid: {data.seed: [0, -1]}", "data.seed"),
    (  # both cells trained lr 0.5, labelled 0.1 and 0.2
        "one-key-two-axes",
        "grid: {train.lr: [0.1, 0.2], train: [{lr: 0.5}]}",
        "grid.train",  # a section as an axis: refused as such
    ),
    (  # every cell trained the --set seed, labelled by the section axis
        "a-section-as-an-axis",
        "grid: {method: [gaussian], train: [{seed: 0}, {seed: 1}]}",
        "grid.train",
    ),
    (  # Ray refused it inside the Tuner, after the sweep had started
        "search-seed-negative",
        "search: {seed: -1, space: {train.lr: {dist: loguniform, low: 0.001, high: 0.1}}}",
        "search.seed",
    ),
    ("nightly-seed-negative", "nightly: {seed: -5}", "nightly.seed"),  # after a night's training
    (  # named `train` alone, as if the file's own section were wrong
        "a-method-setting-a-section-to-a-value",
        "methods: {bilinear: {train: 5}}\ngrid: {method: [bilinear]}",
        "methods.bilinear.train",
    ),
    (  # unused, so never checked; both cells trained the built-in gaussian
        "a-misspelt-method",
        "methods: {gausian: {train.lr: 0.02}}\ngrid: {method: [gaussian, bilinear]}",
        "methods.gausian",
    ),
    (  # seed 1 trained twice; the reports refused the table after the sweep
        "overlapping-blocks",
        "grid: [{method: [gaussian], train.seed: [0, 1]},"
        " {train.seed: [1, 2], method: [gaussian]}]",
        "grid",
    ),
    ("one-value-spelt-twice", "grid: {train.lr: [1, 1.0]}", "grid.train.lr"),  # two cells
    ("nan-twice", "grid: {coupling.lengthscale: [.nan, .nan]}", "grid.coupling.lengthscale"),
    ("over-budget", "grid: {train.seed: [0, 1, 2]}\nbudget: {max_trials: 2}", "budget.max_trials"),
    ("unknown-section", "grids: {train.seed: [0]}", "grids"),
    ("unknown-study", "grid: {train.seed: [0]}\nreport: ablation", "report"),
    ("study-without-its-axes", "grid: {train.seed: [0]}\nreport: negatives", "report"),
]


@pytest.mark.parametrize(("name", "body", "key"), BAD_SPECS, ids=[b[0] for b in BAD_SPECS])
def test_bad_spec_exits_2_naming_the_key_before_ray_or_mlflow(
    workdir: Path, capsys: pytest.CaptureFixture[str], name: str, body: str, key: str
) -> None:
    path = write_spec(workdir, name, body)
    assert cli.main(["sweep", str(path), "--storage-path", str(workdir / "runs")]) == 2
    message = capsys.readouterr().err
    assert f"error: {key}:" in message, message
    assert not ray.is_initialized()
    assert not (workdir / "mlflow.db").exists()
    assert not (workdir / "runs").exists()


def test_unreachable_mlflow_exits_3_before_ray(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing listens there: the infrastructure's status (3, as the nightly's), which a
    scheduler may retry; it was 2, bad input. The URI's password is not repeated (stderr
    goes to logs)."""
    port = free_port()
    uri = f"http://bob:s3cret@127.0.0.1:{port}"
    code = cli.main(["sweep", str(SMOKE), "--tracking-uri", uri, "--storage-path", "runs"])
    assert code == 3
    printed = capsys.readouterr()
    assert f"MLflow at http://bob:***@127.0.0.1:{port} is unreachable: " in printed.err
    assert "s3cret" not in printed.err + printed.out
    assert not ray.is_initialized()


def test_missing_file_exits_2(workdir: Path) -> None:
    assert cli.main(["sweep", str(workdir / "nope.yaml")]) == 2


def test_an_existing_sweep_is_not_reused_without_resume_nor_resumed_with_another_spec(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = write_spec(workdir, "same", "grid: {train.seed: [0]}")
    (workdir / "runs" / "same").mkdir(parents=True)
    (workdir / "runs" / "same" / "sweep.yaml").write_text(first.read_text())
    assert cli.main(["sweep", str(first), "--storage-path", "runs"]) == 2
    assert "--resume" in capsys.readouterr().err
    changed = write_spec(workdir / "runs", "same", "grid: {train.seed: [0, 1]}")
    assert cli.main(["sweep", str(changed), "--storage-path", "runs", "--resume"]) == 2
    assert "differs" in capsys.readouterr().err
    assert not ray.is_initialized()
    assert not (workdir / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("sweep.json", b"{not json", "sweep.json is damaged (Expecting property name"),
        ("sweep.json", b"[1]", "sweep.json is damaged (expected a JSON object, got list)"),
        ("sweep.json", b"\xff\xfe{", "sweep.json is damaged ("),
        ("sweep.yaml", b"grid: \xff\n", "sweep.yaml: "),
        ("sweep.json", b"[" * 200_000, "sweep.json is damaged (nested too deeply)"),  # was a
    ],  # RecursionError traceback
    ids=["not json", "a list", "not utf-8", "spec not utf-8", "nested"],
)
def test_resuming_a_sweep_whose_record_is_damaged_exits_2_before_ray(
    workdir: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes, message: str
) -> None:
    path = write_spec(workdir, "same", "grid: {train.seed: [0]}")
    (workdir / "runs" / "same").mkdir(parents=True)
    (workdir / "runs" / "same" / "sweep.yaml").write_text(path.read_text())
    (workdir / "runs" / "same" / name).write_bytes(content)
    assert cli.main(["sweep", str(path), "--storage-path", "runs", "--resume"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not ray.is_initialized()


def _kept_sweep(workdir: Path) -> tuple[Path, Path]:
    """A spec and the directory of a sweep of it that stopped, holding files as Ray leaves
    them (``tuner.pkl``, a trial's ``params.pkl``), all 0644 / 0755."""
    path = write_spec(workdir, "same", "grid: {train.seed: [0]}")
    directory = workdir / "runs" / "same"
    (directory / "grid" / "trial").mkdir(parents=True)
    (directory / "sweep.yaml").write_text(path.read_text())
    for name in ("grid/tuner.pkl", "grid/trial/params.pkl"):
        (directory / name).write_bytes(b"\x80\x04N.")  # pickle of None
    for folder in (workdir, workdir / "runs", directory, *directory.glob("grid/**")):
        folder.chmod(0o755)
    return path, directory


@pytest.mark.parametrize(
    ("where", "mode", "message"),
    [
        ("grid/tuner.pkl", 0o666, "tuner.pkl is writable by others (mode -rw-rw-rw-)"),
        ("grid/trial/params.pkl", 0o646, "params.pkl is writable by others (mode -rw-r--rw-)"),
        ("grid", 0o777, "grid is writable by others (mode drwxrwxrwx)"),
        ("..", 0o777, "runs is writable by others (mode drwxrwxrwx); Ray keeps"),
    ],
    ids=["tuner.pkl", "a trial's file", "a folder in it", "the storage path"],
)
def test_resuming_refuses_pickles_that_another_user_could_have_written(
    workdir: Path, capsys: pytest.CaptureFixture[str], where: str, mode: int, message: str
) -> None:
    """Ray's restore unpickles the sweep's state: a file someone else could write could run
    code as the user who resumes, so it is refused (exit 2) before Ray starts."""
    path, directory = _kept_sweep(workdir)
    (directory / where).chmod(mode)
    assert cli.main(["sweep", str(path), "--storage-path", "runs", "--resume"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not ray.is_initialized()


def test_resuming_checks_a_sweep_that_lost_its_sweep_yaml_too(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ray restores whatever it finds in grid/, with or without the sweep's own record."""
    path, directory = _kept_sweep(workdir)
    (directory / "sweep.yaml").unlink()
    (directory / "grid" / "tuner.pkl").chmod(0o666)
    assert cli.main(["sweep", str(path), "--storage-path", "runs", "--resume"]) == 2
    assert "tuner.pkl is writable by others" in capsys.readouterr().err
    assert not ray.is_initialized()


def test_what_resuming_trusts(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files only the user can write pass; so do a sticky folder above (``/tmp``) and a file
    writable by a private group (`ownership.private_group`: umask 002, a pod's fsGroup). A
    file of another user, one writable by another group or through an ACL, a link inside
    the sweep (what it names is not vouched for) and a sweep folder that is a link in a
    folder others can write are refused."""
    _, directory = _kept_sweep(workdir)
    storage.check_private(directory)
    (workdir / "runs").chmod(0o1777)  # sticky: others cannot rename the sweep away
    storage.check_private(directory)
    (workdir / "open.pkl").write_bytes(b"")
    for name, target in (("gone", workdir / "nothing"), ("linked.pkl", workdir / "open.pkl")):
        (directory / "grid" / name).symlink_to(target)
        with pytest.raises(ConfigError, match=rf"{name} is a link \(to {workdir}"):
            storage.check_private(directory)
        (directory / "grid" / name).unlink()
    (directory / "sweep.yaml").chmod(0o1777)  # sticky counts only for the folders above
    with pytest.raises(ConfigError, match=r"sweep\.yaml is writable by others"):
        storage.check_private(directory)
    (directory / "sweep.yaml").chmod(0o644)
    tuner = directory / "grid" / "tuner.pkl"
    tuner.chmod(0o664)
    monkeypatch.setattr(storage.ownership, "private_group", lambda info: True)
    storage.check_private(directory)
    try:  # an ACL letting uid 12345 write: the group bits are its mask (rw-)
        entries = [(0x01, 6, 0xFFFFFFFF), (0x02, 6, 12345), (0x04, 4, 0xFFFFFFFF),
                   (0x10, 6, 0xFFFFFFFF), (0x20, 4, 0xFFFFFFFF)]  # fmt: skip
        acl = (2).to_bytes(4, "little") + b"".join(
            t.to_bytes(2, "little") + p.to_bytes(2, "little") + i.to_bytes(4, "little")
            for t, p, i in entries
        )
        os.setxattr(tuner, "system.posix_acl_access", acl)
    except OSError:  # a filesystem without ACLs
        pass
    else:
        with pytest.raises(ConfigError, match=r"tuner\.pkl is writable by others"):
            storage.check_private(directory)
        os.removexattr(tuner, "system.posix_acl_access")
    monkeypatch.setattr(storage.ownership, "private_group", lambda info: False)
    with pytest.raises(ConfigError, match=r"tuner\.pkl is writable by others \(mode -rw-rw-r--\)"):
        storage.check_private(directory)
    tuner.chmod(0o644)
    storage.check_private(directory)
    moved = workdir / "scratch" / "same"  # the sweep moved, a link left in its place
    moved.parent.mkdir(mode=0o755)
    directory.rename(moved)
    directory.symlink_to(moved)
    storage.check_private(directory)
    (workdir / "runs").chmod(0o777)  # not sticky: the link could be turned elsewhere
    with pytest.raises(ConfigError, match=r"runs is writable by others"):
        storage.check_private(directory)
    (workdir / "runs").chmod(0o755)
    if os.getuid() == 0:  # root can hand a link, a file to another user
        os.lchown(directory, 12345, 12345)
        with pytest.raises(ConfigError, match=r"same is a link of uid 12345"):
            storage.check_private(directory)
        os.lchown(directory, 0, 0)
        os.chown(moved / "grid" / "tuner.pkl", 12345, 12345)
        with pytest.raises(ConfigError, match=r"tuner\.pkl belongs to uid 12345, not this user"):
            storage.check_private(directory)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_sweep_validates_and_says_how_to_run_it(path: Path) -> None:
    sweep = spec.load(path)
    first = path.read_text().splitlines()[0]
    command = "nightly" if path.stem.startswith("nightly") else "sweep"
    assert first.startswith(f"# ssvae {command} sweeps/{path.name}"), first
    assert sweep.n_trials == len(sweep.cells) * (sweep.search.num_samples if sweep.search else 1)
    assert len(space.tuner_runs(sweep)) == (len(sweep.cells) if sweep.search else 1)


def test_the_shipped_studies_are_the_ones_asked_for() -> None:
    assert {p.stem for p in SHIPPED} >= {
        "smoke", "paper-small", "paper", "couplings", "optuna-lr-lengthscale",
    }  # fmt: skip
    paper = spec.load(REPO / "sweeps" / "paper.yaml")
    assert paper.base.data.size == 256 and 0 < paper.resources.gpu < 1
    couplings = spec.load(REPO / "sweeps" / "couplings.yaml")
    assert couplings.n_trials == 7 * 4 * 3
    ns = {cell.config.objective.n_negatives for cell in couplings.cells}
    assert ns == {1, 4, 16, 29}
    optuna = spec.load(REPO / "sweeps" / "optuna-lr-lengthscale.yaml")
    assert optuna.scheduler is not None and optuna.search is not None
    assert dict(optuna.space)["train.lr"].dist == "loguniform"


def test_methods_are_grid_points_that_expand_to_overrides() -> None:
    sweep = spec.load(REPO / "sweeps" / "paper-small.yaml")
    by_label = {cell.label: cell.config for cell in sweep.cells}
    assert len(by_label) == 12 and sweep.group_axes == ["method"]
    assert by_label["method=supervised, train.seed=2"].train.mode == "supervised"
    assert by_label["method=supervised, train.seed=2"].train.seed == 2
    gaussian = by_label["method=gaussian, train.seed=0"]
    assert (gaussian.train.mode, gaussian.coupling.kind) == ("ssl", "gaussian")
    assert by_label["method=bilinear, train.seed=1"].coupling.kind == "bilinear"
    assert by_label["method=untrained, train.seed=0"].train.mode == "untrained"


def test_set_refuses_a_key_the_sweep_varies(tmp_path: Path) -> None:
    """``--set`` applies to every trial, last: on a grid axis every cell would train the same
    value under its own label (and a nightly would pair them by that label)."""
    path = write_spec(tmp_path, "set", "grid: {method: [supervised, gaussian], train.seed: [0, 1]}")
    with pytest.raises(ConfigError, match=r"^--set train.seed: the sweep varies it"):
        spec.load(path, overrides={"train": {"seed": 5}})
    assert spec.load(path, overrides={"train": {"epochs": 1}}).cells[0].config.train.epochs == 1


def test_a_file_can_define_its_own_methods(tmp_path: Path) -> None:
    body = """\
        methods:
          hot: {coupling.kind: cosine, coupling.temperature: 0.5}
          gaussian: {coupling.kind: gaussian, coupling.lengthscale: 0.2}
        grid: {method: [hot, gaussian, bilinear]}
        """
    sweep = spec.load(write_spec(tmp_path, "mine", body))
    configs = [cell.config.coupling for cell in sweep.cells]
    assert (configs[0].kind, configs[0].temperature) == ("cosine", 0.5)
    assert (configs[1].kind, configs[1].lengthscale) == ("gaussian", 0.2)
    assert configs[2].kind == "bilinear"


def test_a_built_in_method_given_in_the_file_is_updated_not_replaced(tmp_path: Path) -> None:
    """``supervised: {train.lr: 0.01}`` replaced the bundle: its cell trained a Gaussian SSL
    run, reported as the supervised baseline."""
    body = "methods: {supervised: {train.lr: 0.01}}\ngrid: {method: [supervised, untrained]}\n"
    supervised = spec.load(write_spec(tmp_path, "mine", body)).cells[0].config.train
    assert (supervised.mode, supervised.optimizer, supervised.lr) == ("supervised", "adam", 0.01)


def test_search_studies_keep_axis_values_and_coerce_samples(tmp_path: Path) -> None:
    body = """\
        grid: {coupling.kind: [gaussian, laplace]}
        search:
          num_samples: 3
          space:
            train.lr: {dist: loguniform, low: 1.0e-3, high: 0.1}
            train.epochs: {dist: int, low: 1, high: 3}
        """
    sweep = spec.load(write_spec(tmp_path, "search", body))
    studies = space.tuner_runs(sweep)
    assert [name for name, _ in studies] == ["cell-000", "cell-001"]
    assert studies[1][1]["cell"] == 1 and set(studies[1][1]) == {"cell", "train.lr", "train.epochs"}
    params = sweep.trial_params({"cell": 1, "train.lr": 0.01, "train.epochs": 2.0})
    assert params == {"coupling.kind": "laplace", "train.lr": 0.01, "train.epochs": 2.0}
    cfg = sweep.trial_config(params)
    assert (cfg.coupling.kind, cfg.train.lr, cfg.train.epochs) == ("laplace", 0.01, 2)
    assert sweep.n_trials == 6


def test_dotted_and_nested_keys_mean_the_same() -> None:
    dotted = "name: a\nbase: {preset: small, train.epochs: 3, train.lr: 0.01}\n"
    nested = "name: a\nbase: {preset: small, train: {epochs: 3, lr: 0.01}}\n"
    assert spec.parse(dotted).base == spec.parse(nested).base
    assert spec.parse(nested).base.train.epochs == 3
    with pytest.raises(ConfigError, match=r"^train\.epochs: expected int"):
        spec.parse(dotted.replace("train.epochs: 3", "train.epochs: 2.5"))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("grid: {method: [g], train.lr: [0.1, 0.2]}", "methods.g.train.lr: the grid or the"),
        ("grid: {method: [g]}\nsearch: {num_samples: 2, space: {train.lr: "
         "{dist: loguniform, low: 0.01, high: 0.1}}}", "methods.g.train.lr: the grid or the"),
        ("grid: [{method: [g]}, {train.lr: [0.1, 0.2]}]", None),  # other blocks: the method's
        ("grid: {method: [g], train.lr: [0.5]}", None),  # the method's own value
        ("grid: {method: [supervised, g], train.optimizer: [sgd, adam]}", None),  # built-in
    ],
)  # fmt: skip
def test_a_methods_setting_its_cell_also_varies_is_refused(body: str, message: str | None) -> None:
    """The grid's value replaced the method's, silently: a study of method g at lr 0.5 ran
    at 0.1 and 0.2 under g's name. ``ssvae fig1c`` refuses the same."""
    text = f"name: a\nmethods: {{g: {{coupling.kind: gaussian, train.lr: 0.5}}}}\n{body}\n"
    if message is None:
        spec.parse(text)
        return
    with pytest.raises(ConfigError, match=rf"^{re.escape(message)}"):
        spec.parse(text)


def test_the_cluster_script_runs_ssvae_sweep_with_address_auto(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loaded = importlib.util.spec_from_file_location("sweeps_run", REPO / "sweeps" / "run.py")
    assert loaded is not None and loaded.loader is not None
    script = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(script)
    calls: list[list[str]] = []

    def fake_main(argv: list[str]) -> int:
        calls.append(argv)
        return 0

    monkeypatch.setattr(script.cli, "main", fake_main)
    monkeypatch.chdir(REPO.parent)  # the spec is found in the checkout, not the cwd
    assert script.main(["sweeps/smoke.yaml", "--resume"]) == 0
    assert calls == [["sweep", str(SMOKE), "--resume", "--address", "auto"]]
    assert script.main(["sweeps/smoke.yaml", "--address", "10.0.0.1:6379"]) == 0
    assert calls[-1][-2:] == ["--address", "10.0.0.1:6379"]


def test_a_grid_starts_its_costliest_trials_first_and_tables_keep_grid_order(
    tmp_path: Path,
) -> None:
    from types import SimpleNamespace

    from ssvae_core.sweep.runner import trial_rows

    body = "grid: {method: [untrained, supervised, gaussian], train.seed: [0, 1]}"
    sweep = spec.load(write_spec(tmp_path, "order", body))
    labels = [cell.label for cell in sweep.cells]
    order = space.longest_first(sweep)
    started = [sweep.cells[c].params[0][1] for c in order]
    assert started == ["gaussian"] * 2 + ["supervised"] * 2 + ["untrained"] * 2
    assert order[:2] == [4, 5]  # equal cost: grid order
    ((_, params),) = space.tuner_runs(sweep)
    assert params["cell"] == {"grid_search": order}
    # Ray's ResultGrid lists trials in the order they started; the table is in grid order
    results = [
        SimpleNamespace(metrics={"final": True, "status": "ok"}, config={"cell": c}, error=None,
                        path=f"/x/train_trial_{c:05x}_{c:05d}_cell")
        for c in order
    ]  # fmt: skip
    rows = trial_rows(sweep, "grid", results)
    assert [f"method={r['method']}, train.seed={r['train.seed']}" for r in rows] == labels


def test_under_a_scheduler_a_grid_starts_in_grid_order(tmp_path: Path) -> None:
    body = """\
        grid: {method: [untrained, gaussian], train.seed: [0, 1]}
        scheduler: {kind: asha}
        """
    sweep = spec.load(write_spec(tmp_path, "asha-order", body))
    assert space.longest_first(sweep) == [2, 3, 0, 1]  # what it would be without ASHA
    assert space.start_order(sweep) == [0, 1, 2, 3]
    ((_, params),) = space.tuner_runs(sweep)
    assert params["cell"] == {"grid_search": [0, 1, 2, 3]}


def test_asha_reaches_a_searched_train_epochs_high_bound(tmp_path: Path) -> None:
    """ASHA took the grid's epochs (2) for the longest trial: a grace period of 3 was refused,
    and at 2 Ray stopped every trial at epoch 3 of up to 8."""
    body = """\
        grid: {train.seed: [0]}
        search: {space: {train.epochs: {dist: int, low: 2, high: 8}}, num_samples: 2}
        scheduler: {kind: asha, grace_period: 3}
        """
    base = {"train.epochs": 2, "probe.every_epochs": 1}
    sweep = spec.load(write_spec(tmp_path, "asha-searched", body, base))
    assert sweep.longest == 8 and space.scheduler(sweep)._max_t == 9


def test_a_fused_trial_costs_all_its_cells(tmp_path: Path) -> None:
    # a 3-epoch cell alone (its epochs set it apart), then three 2-epoch cells fused: 3 < 6
    body = """\
        grid:
          - {train.epochs: [3], train.seed: [0]}
          - {train.epochs: [2], train.seed: [0, 1, 2]}
        resources: {fuse: 3}
        """
    sweep = spec.load(write_spec(tmp_path, "fused-order", body))
    assert sweep.groups == ((0,), (1, 2, 3))
    assert space.longest_first(sweep) == [1, 0]
