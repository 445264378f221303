"""Optimisers and learning-rate schedules by name (the ``train.optimizer`` and
``train.lr_schedule`` keys). The paper trains with plain SGD at lr 0.005 (section 4).

Each optimiser declares its own settings with their defaults in its signature
(`optimizer_params`): ``momentum`` is SGD's, so ``train.momentum`` with Adam is refused.

They are PyTorch's update rules, written out (`SGD` is ``torch.optim.SGD``'s, `Adam`
``torch.optim.Adam``'s single-tensor path, the one it takes on the CPU: the same numbers, bit
for bit, ``tests/test_optim.py``), not ``torch.optim`` itself: building any
``torch.optim.Optimizer`` imports ``torch._dynamo``, about 1 s of every process that trains
(`bench/levers.py`, `start_up`). The cosine schedule is the closed form; PyTorch's
``CosineAnnealingLR`` steps a recursion that agrees with it to about 1e-15. Their
``state_dict`` has ``torch.optim``'s layout (``state`` by parameter index, ``param_groups``),
so checkpoints written with ``torch.optim`` load too. A loaded state is checked before any
step (a checkpoint is a file, never trusted): each rule's buffers present for every parameter
it has stepped, dense, floating, of the parameter's shape; step counts whole and >= 0; the
schedule's base rate the config's. Anything else is a `ConfigError` naming the key
(``optimizer.state.3.exp_avg: ...``), which `checkpoint.restoring` prefixes with the file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ssvae_core.errors import ConfigError, check, key_shown, shown
from ssvae_core.registry import declared_params, lookup

Params = Iterable[torch.nn.Parameter]


class Optimizer:
    """A step rule over `params` at learning rate `lr` (a schedule sets `lr` between steps);
    subclasses give `update` of one parameter and its ``state``."""

    def __init__(self, params: Params, lr: float) -> None:
        self.params, self.lr = list(params), lr
        self.state: list[dict[str, Any]] = [{} for _ in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        for p, state in zip(self.params, self.state, strict=True):
            if p.grad is not None:
                self.update(p, p.grad, state)

    def update(self, p: Tensor, grad: Tensor, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """The rule's constants besides lr (``param_groups`` entries)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        group = {"lr": self.lr, **self.settings(), "params": list(range(len(self.params)))}
        state = {i: dict(s) for i, s in enumerate(self.state) if s}
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, saved: Any, key: str = "optimizer") -> None:
        """Take `saved` (``torch.optim``'s layout, as `state_dict` writes it), checked first:
        a `ConfigError` naming the dotted `key` of what does not fit, and nothing taken."""
        check(isinstance(saved, dict), key, f"expected an optimizer state, got {_kind(saved)}")
        groups, entries = saved.get("param_groups"), saved.get("state")
        check(
            isinstance(groups, (list, tuple)) and len(groups) == 1 and isinstance(groups[0], dict),
            f"{key}.param_groups",
            f"expected one group of parameters, got {_kind(groups)}",
        )
        (group,) = groups
        params = group.get("params")
        check(isinstance(params, (list, tuple)), f"{key}.param_groups.params", "expected a list")
        if len(params) != len(self.params):
            raise ConfigError(
                f"{key}.param_groups: {len(params)} parameters saved, {len(self.params)} here"
            )
        lr = group.get("lr")
        check(_real(lr), f"{key}.param_groups.lr", f"expected a number, got {shown(lr, 40)}")
        check(isinstance(entries, dict), f"{key}.state", f"expected a dict, got {_kind(entries)}")
        strays = [i for i in entries if not (type(i) is int and 0 <= i < len(self.params))]
        check(not strays, f"{key}.state", f"entries for no parameter here: {shown(strays, 60)}")
        state = [
            self._loaded(_entry(entries.get(i, {}), f"{key}.state.{i}"), p, f"{key}.state.{i}")
            for i, p in enumerate(self.params)
        ]
        self.lr, self.state = float(lr), state

    def _loaded(self, saved: dict[str, Any], p: Tensor, key: str) -> dict[str, Any]:
        """`p`'s state from its `saved` entry (None values dropped): the buffers this rule
        keeps, checked and as its own copies; a `ConfigError` naming ``key.NAME`` otherwise."""
        _only(saved, (), key)
        return {}


def _kind(value: Any) -> str:
    return "None" if value is None else f"a {type(value).__name__}"


def _real(value: Any) -> bool:
    """A finite int or float (not a bool, not a tensor)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return isinstance(value, int) or math.isfinite(value)


def _entry(saved: Any, key: str) -> dict[str, Any]:
    """One parameter's saved state as a dict without its None values (``torch.optim`` wrote
    ``momentum_buffer: None`` at momentum 0: not yet a buffer)."""
    check(isinstance(saved, dict), key, f"expected a dict of buffers, got {_kind(saved)}")
    return {name: value for name, value in saved.items() if value is not None}


def _only(saved: dict[str, Any], kept: tuple[str, ...], key: str) -> None:
    """`saved` holds no buffer but `kept` (another rule's, amsgrad's ``max_exp_avg_sq`` say,
    would be trained past silently)."""
    strays = [name for name in saved if name not in kept]
    if strays:
        what = ", ".join(kept) if kept else "none"
        name = key_shown(strays[0], 40)
        raise ConfigError(f"{key}.{name}: not kept by this rule (it keeps {what})")


def _step_count(value: Any, key: str) -> int:
    """A saved step count (an int, or ``torch.optim``'s float tensor of one value) as an int.
    Whole and >= 0: at -1 Adam's next step would divide by 1 - beta^0 = 0, and 2.5 would be
    truncated into another count than the one saved."""
    if isinstance(value, Tensor):
        check(
            value.numel() == 1 and value.layout == torch.strided and not value.is_meta
            and not value.is_complex() and value.dtype != torch.bool,
            key,
            f"expected a count, got a {value.layout} {value.dtype} tensor of shape "
            f"{list(value.shape)}",
        )  # fmt: skip
        value = value.item()
    whole = _real(value) and (isinstance(value, int) or value.is_integer()) and value >= 0
    check(whole, key, f"expected a whole number >= 0, got {shown(value, 40)}")
    return int(value)


def _moment(value: Any, p: Tensor, key: str) -> Tensor:
    """A saved buffer of `p` (a moment, a momentum buffer) as this optimiser's own copy (not
    shared with whoever handed it in), on `p`'s device and in `p`'s dtype (as ``torch.optim``
    casts it). It must be a dense floating tensor of `p`'s shape: an integer one would fail
    in the step (``lerp_``), a sparse one too (NotImplementedError), mid-training."""
    check(isinstance(value, Tensor), key, f"expected a tensor, got {_kind(value)}")
    check(value.layout == torch.strided, key, f"expected a dense tensor, got a {value.layout} one")
    check(not value.is_meta, key, "expected a tensor with values, got one on the meta device")
    check(value.is_floating_point(), key, f"expected a floating-point tensor, got {value.dtype}")
    check(
        value.shape == p.shape,  # a buffer is per entry of its parameter
        key,
        f"of shape {list(value.shape)}, but its parameter's is {list(p.shape)}",
    )
    return value.detach().to(device=p.device, dtype=p.dtype, copy=True)


class SGD(Optimizer):
    """``torch.optim.SGD`` without dampening, Nesterov or weight decay:
    b <- momentum b + g (b = g at the first step), p <- p - lr b; with momentum 0, p <- p - lr g.
    """

    def __init__(self, params: Params, lr: float, momentum: float = 0.0) -> None:
        super().__init__(params, lr)
        self.momentum = momentum

    def update(self, p: Tensor, grad: Tensor, state: dict[str, Any]) -> None:
        if self.momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = torch.clone(grad).detach()
            else:
                buf.mul_(self.momentum).add_(grad)
            grad = buf
        p.add_(grad, alpha=-self.lr)

    def settings(self) -> dict[str, Any]:
        return {"momentum": self.momentum}

    def _loaded(self, saved: dict[str, Any], p: Tensor, key: str) -> dict[str, Any]:
        _only(saved, ("momentum_buffer",) if self.momentum != 0 else (), key)
        if "momentum_buffer" not in saved:  # not stepped yet: b = g at its first step
            return {}
        return {"momentum_buffer": _moment(saved["momentum_buffer"], p, f"{key}.momentum_buffer")}


class Adam(Optimizer):
    """``torch.optim.Adam`` (Kingma & Ba, Algorithm 1) with betas (0.9, 0.999), eps 1e-8:
    m <- lerp(m, g, 1 - b1), v <- b2 v + (1 - b2) g^2,
    p <- p - lr / (1 - b1^t) m / (sqrt(v) / sqrt(1 - b2^t) + eps)."""

    betas, eps = (0.9, 0.999), 1e-8

    def update(self, p: Tensor, grad: Tensor, state: dict[str, Any]) -> None:
        if not state:
            state |= {"step": 0, "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
        beta1, beta2 = self.betas
        state["step"] += 1
        t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
        m.lerp_(grad, 1 - beta1)
        v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = (v.sqrt() / (1 - beta2**t) ** 0.5).add_(self.eps)
        p.addcdiv_(m, denom, value=-self.lr / (1 - beta1**t))

    def settings(self) -> dict[str, Any]:
        return {"betas": self.betas, "eps": self.eps}

    def state_dict(self) -> dict[str, Any]:
        saved = super().state_dict()
        for state in saved["state"].values():  # torch.optim's layout: the step as a tensor
            state["step"] = torch.tensor(float(state["step"]))
        return saved

    def _loaded(self, saved: dict[str, Any], p: Tensor, key: str) -> dict[str, Any]:
        kept = ("step", "exp_avg", "exp_avg_sq")
        _only(saved, kept, key)
        if not saved:  # not stepped yet
            return {}
        for name in kept:  # all or none: a part would fail (or restart) mid-training
            check(name in saved, f"{key}.{name}", f"missing (Adam keeps {', '.join(kept)})")
        return {  # the step exact as an int (a float16 parameter would round 3001 to 3000)
            "step": _step_count(saved["step"], f"{key}.step"),
            "exp_avg": _moment(saved["exp_avg"], p, f"{key}.exp_avg"),
            "exp_avg_sq": _moment(saved["exp_avg_sq"], p, f"{key}.exp_avg_sq"),
        }


class Schedule:
    """The learning rate ``base * factor(t)`` after step t, set on the optimiser at each
    `step`. Its ``state_dict`` keeps ``torch.optim.lr_scheduler``'s ``last_epoch`` (the steps
    taken) and ``base_lrs``."""

    def __init__(self, optimizer: Optimizer, factor: Callable[[int], float]) -> None:
        self.optimizer, self.factor = optimizer, factor
        self.base, self.steps = optimizer.lr, 0

    def step(self) -> None:
        self.steps += 1
        self.optimizer.lr = self.base * self.factor(self.steps)

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.steps, "base_lrs": [self.base]}

    def load_state_dict(self, saved: Any, key: str = "schedule") -> None:
        """Take the steps taken from `saved`; the base rate stays the config's. A `ConfigError`
        naming the dotted `key` of what does not fit, and nothing taken."""
        check(isinstance(saved, dict), key, f"expected a schedule state, got {_kind(saved)}")
        check("last_epoch" in saved, f"{key}.last_epoch", "missing")
        steps = _step_count(saved["last_epoch"], f"{key}.last_epoch")
        bases = saved.get("base_lrs")
        check(isinstance(bases, (list, tuple)) and len(bases) == 1, f"{key}.base_lrs",
              f"expected one base rate, got {shown(bases, 60)}")  # fmt: skip
        # The base rate is the config's: train.lr is in the fingerprint `checkpoint.load`
        # compared, and a file this code wrote holds that very float (`state_dict`), so a valid
        # resume is bit for bit. Another value is damage. Taken, the run trained at a rate the
        # config does not say (and exited 0); ignored, the file would pass for the run its
        # fingerprint names though part of it is not. Refused: exit 2 before any step. The rate
        # set below is recomputed from the base and the steps as `step` computed the saved one,
        # the same float (the saved optimizer's ``lr`` is not trusted either).
        check(
            _real(bases[0]) and bases[0] == self.base,
            f"{key}.base_lrs",
            f"{shown(bases[0], 40)} in the checkpoint, but this run's (train.lr) is {self.base}",
        )
        self.steps = steps
        self.optimizer.lr = self.base * self.factor(self.steps)


def _cosine(optimizer: Optimizer, total_steps: int) -> Schedule:
    """From the base rate to 0 over `total_steps` (SGDR without restarts, Loshchilov & Hutter
    eq. 5, eta_min = 0: ``torch.optim.lr_scheduler.CosineAnnealingLR``'s closed form)."""
    steps = max(1, total_steps)
    return Schedule(optimizer, lambda t: (1 + math.cos(math.pi * t / steps)) / 2)


OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {"sgd": SGD, "adam": Adam}

SCHEDULES: dict[str, Callable[[Optimizer, int], Schedule]] = {
    "constant": lambda opt, total_steps: Schedule(opt, lambda t: 1.0),
    "cosine": _cosine,
}


def optimizer_params(name: str) -> dict[str, Any]:
    """The settings optimiser `name` declares (besides lr) and their defaults."""
    return declared_params(lookup(OPTIMIZERS, name, "optimizer"), skip=("lr",))


def build_optimizer(name: str, params: Params, lr: float, **settings: Any) -> Optimizer:
    """Optimiser `name` over `params` at learning rate `lr`, with its declared `settings`."""
    return lookup(OPTIMIZERS, name, "optimizer")(params, lr, **settings)
