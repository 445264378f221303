from __future__ import annotations

import pytest

from ssvae_core import config
from ssvae_core.couplings import COUPLINGS


def test_presets_match_the_paper() -> None:
    paper, small = config.PRESETS["paper"], config.PRESETS["small"]
    assert (paper.data.n_frames, paper.data.size, paper.data.n_balls, paper.data.diameter) == (
        900,
        256,
        3,
        32,
    )
    assert (paper.train.batch_size, paper.train.lr, paper.train.epochs) == (30, 0.005, 30)
    assert paper.train.optimizer == "sgd"
    assert (small.data.size, small.data.diameter, small.data.n_frames) == (64, 8, 900)


def test_roundtrip_and_flatten() -> None:
    cfg = config.load("small", None, ["coupling.kind=bilinear", "train.lr=1e-2"])
    assert cfg.coupling.kind == "bilinear" and cfg.train.lr == 0.01
    assert config.from_dict(config.to_dict(cfg)) == cfg
    flat = config.flatten(cfg)
    assert flat["coupling.kind"] == "bilinear" and flat["data.size"] == 64
    assert len(flat) == sum(len(v) for v in config.to_dict(cfg).values())


def test_int_is_accepted_for_float_and_none_for_optional() -> None:
    cfg = config.from_dict({"train": {"lr": 1}, "objective": {"n_negatives": None}})
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.objective.n_negatives is None


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"train": {"lrr": 0.1}}, "train.lrr: unknown key"),
        ({"nope": {}}, "nope: unknown key"),
        ({"train": {"lr": -1.0}}, "train.lr: must be > 0"),
        ({"train": {"lr": 0}}, "train.lr: must be > 0"),
        ({"train": {"lr": "fast"}}, "train.lr: expected float"),
        ({"train": {"epochs": 1.5}}, "train.epochs: expected int"),
        ({"train": {"epochs": True}}, "train.epochs: expected int"),
        ({"encoder": {"stochastic": "yes"}}, "encoder.stochastic: expected bool"),
        ({"coupling": {"kind": "rbf"}}, "coupling.kind: unknown name 'rbf'; choose from"),
        ({"objective": {"estimator": "mine"}}, "objective.estimator: unknown name"),
        ({"objective": {"n_negatives": 0}}, "objective.n_negatives: must be >= 1"),
        ({"objective": {"n_negatives": 899}}, "objective.n_negatives: 899 negatives"),
        ({"train": {"batch_size": 900}}, "train.batch_size: 900 pairs do not fit"),
        ({"data": {"diameter": 0}}, "data.diameter"),
        ({"data": {"seed": -1}}, "data.seed: must be >= 0"),
        ({"train": {"mode": "semi"}}, "train.mode: unknown name"),
        ({"train": "fast"}, "train: expected a mapping"),
    ],
)
def test_bad_values_name_the_key(values: dict, key: str) -> None:
    with pytest.raises(config.ConfigError) as err:
        config.from_dict(values)
    assert str(err.value).startswith(key), str(err.value)


def test_unknown_coupling_lists_every_valid_name() -> None:
    with pytest.raises(config.ConfigError) as err:
        config.load("small", None, ["coupling.kind=rbf"])
    for name in COUPLINGS:
        assert name in str(err.value)


def test_coupling_params_are_only_those_the_kind_accepts() -> None:
    gaussian = config.CouplingConfig(kind="gaussian", lengthscale=0.3).params()
    assert gaussian["lengthscale"] == 0.3 and "temperature" not in gaussian
    assert config.CouplingConfig(kind="bilinear").params() == {}
    assert "temperature" in config.CouplingConfig(kind="cosine").params()


def test_override_syntax() -> None:
    assert config.parse_override("a.b.c=[1, 2]") == {"a": {"b": {"c": [1, 2]}}}
    with pytest.raises(config.ConfigError, match="expected key=value"):
        config.parse_override("train.lr")
