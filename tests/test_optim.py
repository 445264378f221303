"""ssvae_core.optim: PyTorch's SGD and Adam step for step, bit for bit, without importing
torch._dynamo; schedules; checkpoints written with torch.optim still load, damaged ones are
refused on load, naming the key."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from ssvae_core import optim
from ssvae_core.errors import ConfigError


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))


def _loss(model: nn.Module, step: int) -> torch.Tensor:
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(step))
    return model(x).pow(2).mean()


def _train(model: nn.Module, opt: Any, sched: Any, steps: range) -> None:
    for step in steps:
        opt.zero_grad(set_to_none=True)
        _loss(model, step).backward()
        opt.step()
        sched.step()


CASES: dict[str, tuple[Callable[..., Any], Callable[..., Any], dict[str, float]]] = {
    "sgd": (optim.SGD, torch.optim.SGD, {}),
    "sgd momentum": (optim.SGD, torch.optim.SGD, {"momentum": 0.9}),
    "adam": (optim.Adam, torch.optim.Adam, {}),
}


@pytest.mark.parametrize("case", CASES)
def test_the_same_parameters_as_torch_optim_bit_for_bit(case: str) -> None:
    ours_cls, theirs_cls, settings = CASES[case]
    ours, theirs = _model(), _model()
    opt = ours_cls(ours.parameters(), 0.05, **settings)
    ref = theirs_cls(theirs.parameters(), lr=0.05, **settings)
    _train(ours, opt, optim.SCHEDULES["constant"](opt, 8), range(8))
    _train(theirs, ref, torch.optim.lr_scheduler.LambdaLR(ref, lambda _: 1.0), range(8))
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(next(ours.parameters()), next(_model().parameters()))  # it moved


def test_the_cosine_schedule_is_torchs_cosine_annealing() -> None:
    """The closed form; torch steps a recursion that drifts from it by ~1e-15."""
    opt = optim.SGD(_model().parameters(), 0.05)
    ref = torch.optim.SGD(_model().parameters(), lr=0.05)
    ours, theirs = (
        optim.SCHEDULES["cosine"](opt, 10),
        torch.optim.lr_scheduler.CosineAnnealingLR(ref, 10),
    )
    rates = []
    for _ in range(10):
        ours.step()
        ref.step()  # no gradients: nothing moves, but the scheduler sees a step first
        theirs.step()
        assert opt.lr == pytest.approx(ref.param_groups[0]["lr"], rel=1e-12, abs=1e-15)
        rates.append(opt.lr)
    assert rates == sorted(rates, reverse=True) and rates[-1] == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("case", CASES)
def test_a_resumed_optimiser_continues_as_if_uninterrupted(case: str) -> None:
    ours_cls, _, settings = CASES[case]
    straight, resumed = _model(), _model()
    opt = ours_cls(straight.parameters(), 0.05, **settings)
    _train(straight, opt, optim.SCHEDULES["cosine"](opt, 10), range(10))

    first = ours_cls(resumed.parameters(), 0.05, **settings)
    sched = optim.SCHEDULES["cosine"](first, 10)
    _train(resumed, first, sched, range(4))
    saved = {"opt": first.state_dict(), "sched": sched.state_dict()}
    torch.save(saved, buffer := io.BytesIO())
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)  # what checkpoint.load does
    again = ours_cls(resumed.parameters(), 0.05, **settings)
    sched = optim.SCHEDULES["cosine"](again, 10)
    again.load_state_dict(loaded["opt"])
    sched.load_state_dict(loaded["sched"])
    _train(resumed, again, sched, range(4, 10))
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("case", CASES)
def test_a_checkpoint_of_torch_optim_loads_and_continues_the_same(case: str) -> None:
    ours_cls, theirs_cls, settings = CASES[case]
    reference, model = _model(), _model()
    ref = theirs_cls(reference.parameters(), lr=0.05, **settings)
    constant = torch.optim.lr_scheduler.LambdaLR(ref, lambda _: 1.0)
    _train(reference, ref, constant, range(3))
    model.load_state_dict(reference.state_dict())
    opt = ours_cls(model.parameters(), 0.05, **settings)
    opt.load_state_dict(ref.state_dict())
    sched = optim.SCHEDULES["constant"](opt, 6)
    sched.load_state_dict(constant.state_dict())
    assert sched.steps == 3
    _train(reference, ref, constant, range(3, 6))
    _train(model, opt, sched, range(3, 6))
    for a, b in zip(reference.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_loaded_buffers_take_the_parameters_dtype_and_the_step_stays_exact() -> None:
    p = nn.Parameter(torch.zeros(3, dtype=torch.float16))
    opt = optim.Adam([p], 0.05)
    saved = {
        "state": {0: {"step": torch.tensor(3001.0), "exp_avg": torch.ones(3),
                      "exp_avg_sq": torch.ones(3)}},
        "param_groups": [{"lr": 0.05, "params": [0]}],
    }  # fmt: skip
    opt.load_state_dict(saved)
    assert opt.state[0]["step"] == 3001  # float16 would round it to 3000
    assert opt.state[0]["exp_avg"].dtype == torch.float16


def test_a_state_for_other_parameters_is_refused() -> None:
    opt = optim.SGD(_model().parameters(), 0.05, momentum=0.9)
    other = optim.SGD([nn.Parameter(torch.zeros(2))], 0.05, momentum=0.9)
    with pytest.raises(ConfigError, match=r"optimizer\.param_groups: 4 parameters saved, 1 here"):
        other.load_state_dict(opt.state_dict())


def _saved(case: str) -> dict[str, Any]:
    """Optimiser `case`'s state after 3 steps under a cosine schedule, as a checkpoint holds
    it (through torch.save and a weights-only load): {"opt": ..., "sched": ...}."""
    ours_cls, _, settings = CASES[case]
    model = _model()
    opt = ours_cls(model.parameters(), 0.05, **settings)
    sched = optim.SCHEDULES["cosine"](opt, 10)
    _train(model, opt, sched, range(3))
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, buffer := io.BytesIO())
    buffer.seek(0)
    return dict(torch.load(buffer, weights_only=True))


def _set(name: str, value: Callable[[torch.Tensor], Any]) -> Callable[[dict[str, Any]], None]:
    """A spoil: parameter 0's buffer `name` replaced by `value` of it."""
    return lambda state: state.update({name: value(state[name])})


# Each a damaged state of parameter 0 (a [4, 3, 3, 3] weight), and what the refusal says.
# The first four are the tester's (a resumed run then failed mid-training with a KeyError,
# a RuntimeError in lerp_, a ZeroDivisionError, a NotImplementedError).
ADAM_SPOILS: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "exp_avg removed": (lambda s: s.pop("exp_avg"), r"state\.0\.exp_avg: missing"),
    "exp_avg int32": (_set("exp_avg", lambda t: t.to(torch.int32)),
                      r"state\.0\.exp_avg: expected a floating-point tensor, got torch\.int32"),
    "step -1": (_set("step", lambda t: torch.tensor(-1.0)),
                r"state\.0\.step: expected a whole number >= 0, got -1\.0"),
    "exp_avg sparse": (_set("exp_avg", lambda t: t.to_sparse()),
                       r"state\.0\.exp_avg: expected a dense tensor, got a torch\.sparse_coo"),
    "step removed": (lambda s: s.pop("step"), r"state\.0\.step: missing"),
    "exp_avg_sq removed": (lambda s: s.pop("exp_avg_sq"), r"state\.0\.exp_avg_sq: missing"),
    "step 2.5": (_set("step", lambda t: 2.5), r"state\.0\.step: expected a whole number"),
    "step inf": (_set("step", lambda t: torch.tensor(float("inf"))), r"state\.0\.step: "),
    "step a vector": (_set("step", lambda t: torch.ones(2)), r"state\.0\.step: expected a count"),
    "step a string": (_set("step", lambda t: "3"), r"state\.0\.step: expected a whole number"),
    "exp_avg_sq complex": (_set("exp_avg_sq", lambda t: t.to(torch.complex64)),
                           r"state\.0\.exp_avg_sq: expected a floating-point tensor"),
    "exp_avg on meta": (_set("exp_avg", lambda t: t.to("meta")),
                        r"state\.0\.exp_avg: expected a tensor with values, got one on the "
                        r"meta device"),
    "exp_avg flattened": (_set("exp_avg", lambda t: t.flatten()),
                          r"state\.0\.exp_avg: of shape \[108\], but its parameter's is "
                          r"\[4, 3, 3, 3\]"),
    "exp_avg a list": (_set("exp_avg", lambda t: t.tolist()),
                       r"state\.0\.exp_avg: expected a tensor, got a list"),
    "amsgrad's max_exp_avg_sq": (lambda s: s.update(max_exp_avg_sq=s["exp_avg_sq"]),
                                 r"state\.0\.max_exp_avg_sq: not kept by this rule"),
}  # fmt: skip


def _refused(opt: optim.Optimizer, saved: dict[str, Any], match: str) -> None:
    """Loading `saved` into `opt` is a ConfigError that says `match`, and takes nothing."""
    before = (opt.lr, [dict(s) for s in opt.state])
    with pytest.raises(ConfigError, match=f"^optimizer\\.{match}") as err:
        opt.load_state_dict(saved)
    assert "\n" not in str(err.value)
    assert (opt.lr, opt.state) == before


@pytest.mark.parametrize("spoil", ADAM_SPOILS)
def test_a_damaged_adam_state_is_refused_on_load_naming_the_key(spoil: str) -> None:
    """Refused before any step: loaded as it was, each failed at the next step (or trained
    on a state that is not Adam's)."""
    saved = _saved("adam")
    damage, match = ADAM_SPOILS[spoil]
    damage(saved["opt"]["state"][0])
    _refused(optim.Adam(_model().parameters(), 0.05), saved["opt"], match)


SGD_SPOILS: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "int": (_set("momentum_buffer", lambda t: t.to(torch.int64)),
            r"state\.0\.momentum_buffer: expected a floating-point tensor"),
    "sparse": (_set("momentum_buffer", lambda t: t.to_sparse()),
               r"state\.0\.momentum_buffer: expected a dense tensor"),
    "flattened": (_set("momentum_buffer", lambda t: t.flatten()),
                  r"state\.0\.momentum_buffer: of shape \[108\], but its"),
    "a number": (_set("momentum_buffer", lambda t: 0.5),
                 r"state\.0\.momentum_buffer: expected a tensor, got a float"),
}  # fmt: skip


@pytest.mark.parametrize("spoil", SGD_SPOILS)
def test_a_damaged_momentum_buffer_is_refused_on_load(spoil: str) -> None:
    saved = _saved("sgd momentum")
    damage, match = SGD_SPOILS[spoil]
    damage(saved["opt"]["state"][0])
    _refused(optim.SGD(_model().parameters(), 0.05, momentum=0.9), saved["opt"], match)


def test_a_momentum_buffer_at_momentum_0_is_refused_and_torchs_none_is_not() -> None:
    saved = _saved("sgd momentum")["opt"]
    plain = optim.SGD(_model().parameters(), 0.05)
    _refused(plain, saved, r"state\.0\.momentum_buffer: not kept by this rule \(it keeps none\)")
    saved["state"] = {i: {"momentum_buffer": None} for i in saved["state"]}  # older torch.optim
    plain.load_state_dict(saved)
    assert plain.state == [{}] * 4


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda saved: saved.update(state=[]), r"state: expected a dict, got a list"),
        (lambda saved: saved["state"].update({9: {}}), r"state: entries for no parameter here"),
        (lambda saved: saved["state"].update({0: 1.0}), r"state\.0: expected a dict of buffers"),
        (lambda saved: saved.pop("param_groups"), r"param_groups: expected one group"),
        (lambda saved: saved["param_groups"][0].update(lr="x"), r"param_groups\.lr: expected a"),
    ],
    ids=["state a list", "a tenth parameter", "an entry a number", "no groups", "lr a string"],
)
def test_a_damaged_optimizer_layout_is_refused_on_load(damage: Any, match: str) -> None:
    saved = _saved("adam")["opt"]
    damage(saved)
    _refused(optim.Adam(_model().parameters(), 0.05), saved, match)


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda s: s.update(base_lrs=[5.0]),
         r"schedule\.base_lrs: 5\.0 in the checkpoint, but this run's \(train\.lr\) is 0\.05"),
        (lambda s: s.update(base_lrs=[]), r"schedule\.base_lrs: expected one base rate"),
        (lambda s: s.update(base_lrs=[0.05, 0.05]), r"schedule\.base_lrs: expected one"),
        (lambda s: s.update(base_lrs=["0.05"]), r"schedule\.base_lrs: '0\.05' in the checkpoint"),
        (lambda s: s.update(last_epoch=-1), r"schedule\.last_epoch: expected a whole number >= 0"),
        (lambda s: s.pop("last_epoch"), r"schedule\.last_epoch: missing"),
    ],
    ids=["base 5.0", "no base", "two bases", "base a string", "last_epoch -1", "no last_epoch"],
)  # fmt: skip
def test_a_damaged_schedule_state_is_refused_on_load(damage: Any, match: str) -> None:
    """A base rate of 5.0 was taken: the resumed run trained at 5.0, the config saying 0.05."""
    saved = _saved("adam")["sched"]
    damage(saved)
    opt = optim.Adam(_model().parameters(), 0.05)
    sched = optim.SCHEDULES["cosine"](opt, 10)
    with pytest.raises(ConfigError, match=f"^{match}"):
        sched.load_state_dict(saved)
    assert (sched.steps, sched.base, opt.lr) == (0, 0.05, 0.05)  # nothing taken


def test_the_damage_is_real_unchecked_it_fails_in_the_step() -> None:
    """The control: the integer moment, put in as the old load put it in, fails mid-step."""
    saved = _saved("adam")["opt"]["state"]
    saved[0]["exp_avg"] = saved[0]["exp_avg"].to(torch.int32)
    model = _model()
    opt = optim.Adam(model.parameters(), 0.05)
    opt.state = [{**s, "step": int(s["step"])} for s in saved.values()]
    _loss(model, 0).backward()
    with pytest.raises(RuntimeError, match="expected dtype int for `end`"):  # in lerp_
        opt.step()


def test_training_with_them_never_imports_torch_dynamo() -> None:
    """The reason they exist: any torch.optim.Optimizer imports torch._dynamo (~1 s)."""
    script = (
        "import sys, torch\n"
        "from ssvae_core import optim\n"
        "p = torch.nn.Parameter(torch.ones(3))\n"
        "for name in optim.OPTIMIZERS:\n"
        "    opt = optim.build_optimizer(name, [p], 0.1)\n"
        "    sched = optim.SCHEDULES['cosine'](opt, 5)\n"
        "    p.sum().backward(); opt.step(); sched.step(); opt.zero_grad()\n"
        "print('torch._dynamo' in sys.modules)\n"
        "torch.optim.SGD([p], lr=0.1)\n"  # the control: torch.optim does import it
        "print('torch._dynamo' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]
