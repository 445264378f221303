"""sweep/grid.py and the spec's cells: products, unions of products, counted before built."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sweep_helpers import write_spec

from ssvae_core.errors import ConfigError
from ssvae_core.sweep import grid, spec, storage

UNION = """\
grid:
  - {method: [gaussian, bilinear], objective.n_negatives: [4, 9], train.seed: [0, 1]}
  - {method: [untrained], train.seed: [0, 1]}
"""


def test_a_list_of_products_is_their_union_in_order(tmp_path: Path) -> None:
    sweep = spec.load(write_spec(tmp_path, "union", UNION))
    assert len(sweep.cells) == 2 * 2 * 2 + 2
    assert [key for key, _ in sweep.axes] == ["method", "objective.n_negatives", "train.seed"]
    assert sweep.group_axes == ["method", "objective.n_negatives"]
    control = sweep.cells[-1]
    assert control.params == (("method", "untrained"), ("train.seed", 1))
    assert control.row(sweep.axes) == {"method": "untrained", "objective.n_negatives": grid.ABSENT,
                                       "train.seed": 1}  # fmt: skip
    assert control.config.train.mode == "untrained" and control.config.train.seed == 1
    assert sweep.cells[3].config.objective.n_negatives == 9


def test_a_grid_is_counted_before_a_cell_is_built(tmp_path: Path) -> None:
    lrs = ", ".join(str(0.001 * (i + 1)) for i in range(100))
    body = f"grid: {{train.lr: [{lrs}], train.seed: [{', '.join(map(str, range(100)))}]}}\n"
    body += "budget: {max_trials: 100}\n"  # 10^4 cells
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"budget\.max_trials: the sweep has 10000 trials"):
        spec.load(write_spec(tmp_path, "big", body))
    assert time.perf_counter() - started < 1.0  # no config was built
    huge = "grid: {train.seed: [" + ", ".join(map(str, range(20_001))) + "]}\n"
    with pytest.raises(ConfigError, match="grid: 20001 cells, more than 10000"):
        spec.load(write_spec(tmp_path, "huge", huge))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("grid: []\n", "grid: expected a mapping"),
        ("grid: [{method: [gaussian]}, 3]\n", "grid[1]: expected a mapping"),
        ("grid: [{train.seed: []}]\n", "grid[0].train.seed: expected a non-empty list"),
        ("grid: [{method: [nope]}]\n", "grid[0].method: unknown name 'nope'"),
        # 'unknown name 1; choose from 1, bilinear, ...': the file's name became text '1'
        ("grid: {method: [1]}\n", "grid.method: a method's name is text, got 1; quote it"),
        ("methods: {1: {}}\ngrid: {method: ['1']}\n", "methods: a method's name is text, got 1"),
        ("grid: {train.seed: [1, 1]}\n", "grid.train.seed: repeated values: 1"),
        ("name: ..\n", "name: expected 1-100 letters"),
        ("name: a/b\n", "name: expected 1-100 letters"),
        ("experiment: ''\n", "experiment: expected a non-empty MLflow experiment name"),
        (
            "report: negatives\ngrid: [{coupling.kind: [gaussian], objective.n_negatives: [4]},"
            " {coupling.kind: [bilinear]}]\n",
            "report: study 'negatives' needs grid axes",
        ),
    ],
)
def test_a_bad_grid_or_name_is_refused_naming_the_key(
    tmp_path: Path, body: str, message: str
) -> None:
    path = write_spec(tmp_path, "bad", body)
    if body.startswith("name:"):  # the body's name, not write_spec's: a key twice is refused
        path.write_text(path.read_text().replace("name: bad\n", "", 1))
    with pytest.raises(ConfigError) as err:
        spec.load(path)
    assert str(err.value).startswith(message), str(err.value)


def test_a_file_whose_name_is_no_sweep_name_says_to_set_one(tmp_path: Path) -> None:
    path = tmp_path / "my sweep.yaml"
    path.write_text("grid: {train.seed: [0]}\n")
    with pytest.raises(ConfigError, match=r"got 'my sweep' \(the file's name\); set name: in"):
        spec.load(path)
    path.write_text("name: mine\ngrid: {train.seed: [0]}\n")
    assert spec.load(path).name == "mine"


@pytest.mark.parametrize("name", ["../../escape", "/abs/path", "..", ".hidden", "a/b"])
def test_a_sweep_directory_stays_inside_the_storage_path(tmp_path: Path, name: str) -> None:
    sweep = spec.load(write_spec(tmp_path, "ok", "grid: {train.seed: [0]}\n"))
    with pytest.raises(ConfigError, match="--name: expected 1-100 letters"):
        storage.sweep_dir(sweep, tmp_path / "runs", name)
    assert storage.sweep_dir(sweep, tmp_path / "runs", "night-1") == tmp_path / "runs" / "night-1"


def test_overrides_apply_to_every_trial_last(tmp_path: Path) -> None:
    path = write_spec(tmp_path, "o", "grid: {method: [gaussian, supervised], train.seed: [0]}\n")
    sweep = spec.load(path, overrides={"train.epochs": 1, "train": {"lr": 0.5}})
    assert {c.config.train.epochs for c in sweep.cells} == {1}
    assert {c.config.train.lr for c in sweep.cells} == {0.5}  # over supervised's own 0.03
    with pytest.raises(ConfigError, match=r"train\.epochs: must be >= 0"):
        spec.load(path, overrides={"train.epochs": -1})


@pytest.mark.parametrize(
    ("body", "overrides", "message"),
    [
        ("methods: {gaussian: {trian.lr: 0.1}}\n", {}, "methods.gaussian.trian: unknown key"),
        ("methods: {gaussian: {train.lr: .nan}}\n", {}, "methods.gaussian.train.lr: expected"),
        ("", {"nightly.history": 3}, "--set nightly: nightly is a section of the sweep file"),
        ("", {"nightly2.history": 3}, "--set nightly2: unknown key; valid keys: data"),
        ("", {"train.lr": float("nan")}, "--set train.lr: expected finite float, got nan"),
    ],
)
def test_a_methods_bundle_or_set_is_named_not_the_first_grid_cell_built_with_it(
    tmp_path: Path, body: str, overrides: dict, message: str
) -> None:
    """They were named '(in grid cell method=gaussian)', sending the user to the grid."""
    path = write_spec(tmp_path, "m", body + "grid: {method: [gaussian, bilinear]}\n")
    with pytest.raises(ConfigError) as err:
        spec.load(path, overrides=overrides)
    assert str(err.value).startswith(message) and "grid cell" not in str(err.value)
