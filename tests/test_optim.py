"""ssvae_core.optim: PyTorch's SGD and Adam step for step, bit for bit, without importing
torch._dynamo; schedules; checkpoints written with torch.optim still load."""

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
    with pytest.raises(ValueError, match="4 parameters saved, 1 here"):
        other.load_state_dict(opt.state_dict())


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
