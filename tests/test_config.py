"""ssvae_core.config and ssvae_core.loader: presets, strict loading, per-kind settings."""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from pathlib import Path
from typing import Any

import pytest

from ssvae_core import config, loader
from ssvae_core.couplings import COUPLINGS, coupling_params
from ssvae_core.encoder import encoder_params, stochastic_params
from ssvae_core.errors import ConfigError
from ssvae_core.optim import OPTIMIZERS, optimizer_params


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


def test_load_and_from_dict_start_from_the_same_preset() -> None:
    assert loader.load() == loader.from_dict({}) == config.PRESETS[config.DEFAULT_PRESET]


def test_roundtrip_and_flatten() -> None:
    cfg = loader.load("small", None, ["coupling.kind=bilinear", "train.lr=1e-2"])
    assert cfg.coupling.kind == "bilinear" and cfg.train.lr == 0.01
    assert loader.from_dict(config.to_dict(cfg)) == cfg
    flat = config.flatten(config.to_dict(cfg))
    assert flat["coupling.kind"] == "bilinear" and flat["data.size"] == 64
    assert len(flat) == sum(len(v) for v in config.to_dict(cfg).values())


def test_int_is_accepted_for_float_and_none_for_optional() -> None:
    cfg = loader.from_dict({"train": {"lr": 1}, "objective": {"n_negatives": None}})
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.objective.n_negatives is None


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"train": {"lrr": 0.1}}, "train.lrr: unknown key"),
        ({"nope": {}}, "nope: unknown key"),
        ({"train": {"lr": -1.0}}, "train.lr: must be in (0, 10]"),
        ({"train": {"lr": 0}}, "train.lr: must be in (0, 10]"),
        ({"train": {"lr": "fast"}}, "train.lr: expected finite float"),
        ({"train": {"lr": float("inf")}}, "train.lr: expected finite float"),
        ({"train": {"lr": float("nan")}}, "train.lr: expected finite float"),
        ({"train": {"lr": 10**400}}, "train.lr: expected finite float"),
        ({"coupling": {"lengthscale": float("inf")}}, "coupling.lengthscale: expected"),
        ({"train": {"epochs": 1.5}}, "train.epochs: expected int"),
        ({"train": {"epochs": True}}, "train.epochs: expected int"),
        ({"train": {"seed": 2**70}}, "train.seed: must be in [0, 2**63 - 1]"),
        ({"encoder": {"stochastic": "yes"}}, "encoder.stochastic: expected bool"),
        ({"coupling": {"kind": "rbf"}}, "coupling.kind: unknown name 'rbf'; choose from"),
        ({"objective": {"estimator": "mine"}}, "objective.estimator: unknown name"),
        ({"objective": {"n_negatives": 0}}, "objective.n_negatives: must be >= 1"),
        ({"objective": {"n_negatives": 899}}, "objective.n_negatives: 899 negatives"),
        ({"train": {"batch_size": 900}}, "train.batch_size: 900 pairs do not fit"),
        ({"data": {"diameter": 0}}, "data.diameter"),
        ({"data": {"size": 4}}, "data.size: too small"),
        ({"data": {"seed": -1}}, "data.seed: must be in"),
        ({"train": {"mode": "semi"}}, "train.mode: unknown name"),
        ({"train": "fast"}, "train: expected a mapping"),
        ({"train": {"batch_size": 1}}, "train.batch_size: must be >= 2, got 1"),
        ({"train": {"momentum": 1.0}}, "train.momentum: must be in [0, 1), got 1.0"),
        ({"train": {"lr_schedule": "linear"}}, "train.lr_schedule: unknown name 'linear'"),
        ({"train": {"device": "tpu"}}, "train.device: unknown name 'tpu'"),
        ({"train": {"epochs": -1}}, "train.epochs: must be >= 0, got -1"),
        ({"probe": {"train_fraction": 1.0}}, "probe.train_fraction: must be in (0, 1)"),
        ({"probe": {"every_epochs": 0}}, "probe.every_epochs: must be >= 1, got 0"),
        (
            {"data": {"n_frames": 3}, "train": {"batch_size": 2}, "probe": {"train_fraction": 0.5}},
            "probe.train_fraction: leaves 1 train / 2 test frames; need >= 2 each",
        ),
        ({"encoder": {"kind": "mlp", "hidden": 0}}, "encoder.hidden: must be >= 1, got 0"),
        ({"coupling": {"lengthscale": 0}}, "coupling.lengthscale: must be in (0, 1000], got 0"),
        ({"coupling": {"kind": "student_t", "dof": 0}}, "coupling.dof: must be in (0, 1e+06]"),
        ({"coupling": {"kind": "cosine", "temperature": 0}}, "coupling.temperature: must be in"),
        ({"coupling": {"kind": "separable_mlp", "hidden": 0}}, "coupling.hidden: must be >= 1"),
        ({"coupling": {"kind": "separable_mlp", "embed_dim": 0}}, "coupling.embed_dim: must be"),
        (
            {"encoder": {"stochastic": True, "sigma": 1e4}},
            "encoder.sigma: must be in [1e-06, 1000], got 10000.0",
        ),
        (  # ran deterministic, labelled stochastic, sigma 0.0 in its metrics
            {"encoder": {"stochastic": True, "sigma": 1e-300}},
            "encoder.sigma: must be in [1e-06, 1000], got 1e-300",
        ),
    ],
)
def test_bad_values_name_the_key(values: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        loader.from_dict(values)
    assert str(err.value).startswith(key), str(err.value)


def test_unknown_coupling_lists_every_valid_name() -> None:
    with pytest.raises(ConfigError) as err:
        loader.load("small", None, ["coupling.kind=rbf"])
    for name in COUPLINGS:
        assert name in str(err.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"coupling": {"kind": "gaussian", "temperature": 0.5}}, "coupling.temperature: coupling"),
        ({"coupling": {"kind": "bilinear", "lengthscale": 0.1}}, "coupling.lengthscale: coupling"),
        ({"coupling": {"kind": "cosine", "per_dim": True}}, "coupling.per_dim: coupling 'cosine'"),
        ({"encoder": {"hidden": 32}}, "encoder.hidden: a deterministic 'com' encoder takes no"),
        ({"encoder": {"sigma": 0.1}}, "encoder.sigma: a deterministic 'com' encoder takes no"),
        ({"train": {"optimizer": "adam", "momentum": 0.9}}, "train.momentum: adam takes no"),
    ],
)
def test_a_setting_the_chosen_kind_does_not_take_is_refused(values: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        loader.from_dict(values)
    assert str(err.value).startswith(message), str(err.value)


def test_each_kind_takes_its_own_settings_with_their_one_default() -> None:
    gaussian = loader.from_dict({"coupling": {"kind": "gaussian", "lengthscale": 0.3}}).coupling
    assert gaussian.params() == {"lengthscale": 0.3}
    defaults = coupling_params("gaussian")
    assert gaussian.used() == {"kind": "gaussian", **defaults, "lengthscale": 0.3}
    assert config.CouplingConfig(kind="bilinear").used() == {"kind": "bilinear"}
    assert config.CouplingConfig(kind="cosine").used()["temperature"] == 0.1  # Cosine's default
    mlp = loader.from_dict({"encoder": {"kind": "mlp", "hidden": 8}}).encoder
    assert mlp.used() == {"kind": "mlp", "stochastic": False, "hidden": 8}
    noisy = loader.from_dict({"encoder": {"stochastic": True, "sigma": 0.1}}).encoder
    assert noisy.used() == {"kind": "com", "stochastic": True, "sigma": 0.1, "learn_sigma": False}
    sgd = loader.from_dict({"train": {"momentum": 0.9}}).train
    assert sgd.settings() == {"momentum": 0.9}


def test_every_declared_setting_has_a_config_key() -> None:
    """A new coupling, encoder or optimiser parameter needs its key here, typed as Optional."""
    sections = {
        config.CouplingConfig: [coupling_params(k) for k in COUPLINGS],
        config.EncoderConfig: [encoder_params(k) for k in ("com", "mlp")] + [stochastic_params()],
        config.TrainConfig: [optimizer_params(k) for k in OPTIMIZERS],
    }
    for section, declared in sections.items():
        hints = typing.get_type_hints(section)
        fields = {f.name: f for f in dataclasses.fields(section)}
        for params in declared:
            for name in params:
                assert name in fields, (section.__name__, name)
                assert fields[name].default is None and type(None) in typing.get_args(hints[name])


def test_used_lists_what_the_mode_uses() -> None:
    ssl = config.used(loader.from_dict({}))
    assert ssl["coupling.lengthscale"] == 0.05 and ssl["train.momentum"] == 0.0
    supervised = config.used(loader.from_dict(config.METHODS["supervised"]))
    assert not any(k.startswith(("coupling.", "objective.")) for k in supervised)
    assert "train.momentum" not in supervised  # Adam has none
    untrained = config.used(loader.from_dict(config.METHODS["untrained"]))
    assert {k for k in untrained if k.startswith("train.")} == {
        "train.mode", "train.seed", "train.device",
    }  # fmt: skip


def test_override_syntax() -> None:
    assert loader.parse_override("a.b.c=[1, 2]") == {"a": {"b": {"c": [1, 2]}}}
    with pytest.raises(ConfigError, match="expected key=value"):
        loader.parse_override("train.lr")


@pytest.mark.parametrize(
    ("file", "overrides", "message"),
    [
        ("train: lr=0.1\n", ["train.epochs=1"], "train: expected a mapping, got 'lr=0.1'"),
        ("coupling: gaussian\n", ["coupling.kind=bilinear"], "coupling: expected a mapping"),
        (None, ["train=5", "train.epochs=1"], "train: expected a mapping, got 5"),
        (None, ["train.epochs=1", "train=5"], "train: expected a mapping, got 5"),
    ],
)
def test_a_section_that_is_not_a_mapping_is_refused_not_replaced(
    file: str | None, overrides: list[str], message: str, tmp_path: Path
) -> None:
    """A later mapping replaced a section given as a value, silently (the file's ``train``
    was dropped and the run went on with the preset's lr)."""
    path = None
    if file is not None:
        path = tmp_path / "c.yaml"
        path.write_text(file)
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        loader.load("small", path, overrides)
    assert loader.merge({"train": {"lr": 1}}, {"train": {"lr": 2}}) == {"train": {"lr": 2}}


def test_a_config_file_is_read_bounded_never_whole(tmp_path: Path) -> None:
    """A file over the limit, or one that never ends, is refused after limit + 1 bytes."""
    from ssvae_core import safe_yaml

    folder = tmp_path
    (folder / "at.yaml").write_bytes(b"#" * safe_yaml.MAX_YAML_BYTES)
    (folder / "over.yaml").write_bytes(b"#" * (safe_yaml.MAX_YAML_BYTES + 1))
    assert safe_yaml.read_text(folder / "at.yaml") == "#" * safe_yaml.MAX_YAML_BYTES
    for path in (folder / "over.yaml", Path("/dev/zero")):
        with pytest.raises(ConfigError, match=rf"^{path}: larger than 1000000 bytes"):
            safe_yaml.read_text(path, "config file")
    with pytest.raises(ConfigError, match="larger than 10 bytes; not a CSV"):
        safe_yaml.read_bytes(folder / "at.yaml", "CSV", limit=10)


def test_a_named_pipe_without_a_writer_is_refused_and_one_with_a_writer_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refused_not_waited: Any
) -> None:
    """``open`` on a named pipe waits for a writer: one nobody writes to is refused within
    `PIPE_WAIT_S`, not waited on for ever. One whose writer comes later, ``--config <(cmd)``
    (a pipe with its writer) and an empty pipe (``<(true)``, read as an empty file is) are
    read to their end."""
    import os
    import threading
    import time

    from ssvae_core import safe_yaml

    monkeypatch.setattr(safe_yaml, "PIPE_WAIT_S", 1.0)
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    message = refused_not_waited(fifo, lambda: safe_yaml.read_text(fifo, "config file"))
    assert message == f"{fifo}: a pipe nothing was written to within 1 s; expected a config file"

    def write_late() -> None:  # opens its end after the reader opened its own
        time.sleep(0.3)
        with open(fifo, "wb") as end:
            end.write(b"seed: 4\n")

    writer = threading.Thread(target=write_late, daemon=True)
    writer.start()
    assert safe_yaml.read_yaml_file(fifo, "config file") == {"seed": 4}
    writer.join(timeout=10)

    read, write = os.pipe()
    os.write(write, b"train: {lr: 0.5}\n")

    def finish() -> None:  # the writer is still open when the reader opens: it must wait
        os.write(write, b"seed: 3\n")
        os.close(write)

    later = threading.Timer(0.2, finish)
    later.start()
    try:
        got = safe_yaml.read_yaml_file(f"/proc/self/fd/{read}", "config file")
    finally:
        later.join()
        os.close(read)
    assert got == {"train": {"lr": 0.5}, "seed": 3}
    read, write = os.pipe()
    os.close(write)  # <(true): the writer wrote nothing and closed
    try:
        assert safe_yaml.read_bytes(f"/proc/self/fd/{read}") == b""
    finally:
        os.close(read)


def test_a_pipe_whose_writer_goes_silent_without_closing_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--config <(printf 'train: {}'; sleep 1000)``: the first bytes came, and the read
    then waited for the writer's end, for ever. A read still waiting after 10 s is released
    (the writer closed) and fails the test rather than hang the suite."""
    import os
    import threading

    from ssvae_core import safe_yaml

    monkeypatch.setattr(safe_yaml, "PIPE_WAIT_S", 0.5)
    read, write = os.pipe()
    os.write(write, b"train: {epochs: 1}\n")
    answer: list[BaseException] = []

    def attempt() -> None:
        try:
            safe_yaml.read_yaml_file(f"/proc/self/fd/{read}", "config file")
        except ConfigError as err:
            answer.append(err)

    reader = threading.Thread(target=attempt, daemon=True)
    reader.start()
    reader.join(timeout=10)
    os.close(write)  # releases a reader that waits for the end
    reader.join(timeout=10)
    os.close(read)
    assert answer, "the read waited for the writer to close"
    assert "writer went silent for 0.5 s without closing it" in str(answer[0])


@pytest.mark.parametrize(
    "text", ["train: {mode: 2020-02-30}\n", "seed: 2020-01-01 25:61:00\n",
             "lr: 2020-01-01T00:00:00+99:00\n"],
)  # fmt: skip
def test_a_date_that_does_not_exist_is_a_yaml_error_naming_the_file(text: str) -> None:
    """YAML's timestamps are built by datetime, whose ValueError was a traceback."""
    from ssvae_core import safe_yaml

    with pytest.raises(ConfigError, match=r"^c\.yaml: not valid YAML: .*(range|offset|must)"):
        safe_yaml.read_yaml(text, "c.yaml")


def test_a_key_twice_in_one_mapping_is_refused_not_replaced() -> None:
    """YAML 1.1 keeps the last of two equal keys, silently: a second ``grid:`` in a sweep
    file would replace the first. A merge key (``<<``) may still be overridden."""
    from ssvae_core import safe_yaml

    with pytest.raises(ConfigError, match=r"(?s)^s\.yaml: not valid YAML: .*'grid' is there twice"):
        safe_yaml.read_yaml("grid: {train.seed: [0]}\ngrid: {train.lr: [0.1]}\n", "s.yaml")
    with pytest.raises(ConfigError, match="'lr' is there twice"):
        safe_yaml.read_yaml("train: {lr: 0.1, lr: 0.2}\n")
    merged = safe_yaml.read_yaml("a: &x {b: 1, c: 2}\nd:\n  <<: *x\n  b: 3\n")
    assert merged["d"] == {"b": 3, "c": 2}


@pytest.mark.parametrize(
    ("text", "value"),
    [("10", 10), ("1_000", 1000), ("-3", -3), ("1e-3", 0.001), ("-.5", -0.5), ("1.", 1.0),
     ("-.inf", -math.inf), ("010", "010"), ("1:00", "1:00"), ("1:30.0", "1:30.0"),
     ("0x10", "0x10"), ("0o7", "0o7"), ("9" * 100, int("9" * 100)), ("9" * 5000, "9" * 5000)],
)  # fmt: skip
def test_numbers_are_decimal_and_the_rest_stays_text(text: str, value: object) -> None:
    """YAML 1.1 reads 010 as 8, 1:00 as 60, 1:30.0 as 90.0 and 0x10 as 16, silently; a
    number-typed key then refuses the string (``train.epochs: expected int, got '010'``)."""
    from ssvae_core import safe_yaml

    got = safe_yaml.read_yaml(text)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(
    ("text", "value"),
    [("!!int 010", None), ("!!int 1:00", None), ("!!float 1:30", None), ("!!int 0x10", None),
     ("!!int 12", 12), ("!!float 3", 3.0), ("!!float 1e-3", 0.001), ("!!float .inf", math.inf)],
)  # fmt: skip
def test_an_explicit_number_tag_is_decimal_too(text: str, value: object) -> None:
    """``--set 'train.epochs=!!int 010'`` trained 8 epochs, ``!!float 1:30`` read 90.0: an
    explicit tag took YAML 1.1's octal and base 60 past the decimal rule."""
    from ssvae_core import safe_yaml

    if value is None:
        with pytest.raises(ConfigError, match=r"is not a decimal (int|float)"):
            safe_yaml.read_yaml(text)
    else:
        got = safe_yaml.read_yaml(text)
        assert got == value and type(got) is type(value)


def test_a_key_with_thousands_of_dots_is_refused_not_a_recursion_error(tmp_path: Path) -> None:
    """Merging went one level per name between dots: a RecursionError traceback."""
    key = "train" + ".a" * 3000
    with pytest.raises(ConfigError, match=r"more than 16 names between dots"):
        loader.load("small", None, [f"{key}=1"])
    path = tmp_path / "c.yaml"
    path.write_text(f"? {key}\n: 1\n")  # an explicit key: YAML's plain ones stop at 1024
    with pytest.raises(ConfigError, match=r"more than 16 names between dots"):
        loader.load("small", path)
    nested = "train:\n" + "".join(f"{'  ' * (i + 1)}{'.'.join(['a'] * 16)}:\n" for i in range(70))
    path.write_text(nested + "  " * 71 + "b: 1\n")  # 16 names a key, 70 mappings deep
    with pytest.raises(ConfigError, match=r"more than 16 names between dots"):
        loader.load("small", path)
    loader.load("small", None, ["train.lr=0.1"])  # four names or fewer: every real key
