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
so checkpoints written with ``torch.optim`` load too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

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

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        (group,) = saved["param_groups"]
        if len(group["params"]) != len(self.params):
            raise ValueError(f"{len(group['params'])} parameters saved, {len(self.params)} here")
        self.lr = float(group["lr"])
        self.state = [
            self._loaded({k: _own(v, p, k != "step") for k, v in saved["state"].get(i, {}).items()})
            for i, p in enumerate(self.params)
        ]

    def _loaded(self, state: dict[str, Any]) -> dict[str, Any]:
        return dict(state)


def _own(value: Any, p: Tensor, cast: bool) -> Any:
    """A saved tensor as this optimiser's own copy (not shared with whoever handed it in), on
    `p`'s device and, if `cast` and floating, in `p`'s dtype (as torch.optim does for all but
    the step count, kept exact in its own dtype); anything else as it is. A moment (`cast`)
    must have `p`'s shape: a ValueError otherwise (`checkpoint.restoring` names the file)."""
    if not isinstance(value, Tensor):
        return value
    if cast and value.shape != p.shape:  # a moment is per entry of its parameter
        raise ValueError(f"saved state of shape {list(value.shape)} for a {list(p.shape)} weight")
    dtype = p.dtype if cast and value.is_floating_point() else value.dtype
    return value.detach().to(device=p.device, dtype=dtype, copy=True)


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

    def _loaded(self, state: dict[str, Any]) -> dict[str, Any]:
        buf = state.get("momentum_buffer")  # torch.optim writes None at momentum 0
        return {} if buf is None else {"momentum_buffer": buf}


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

    def _loaded(self, state: dict[str, Any]) -> dict[str, Any]:
        return {**state, "step": int(float(state["step"]))} if state else {}


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

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.steps, (base,) = int(saved["last_epoch"]), saved["base_lrs"]
        self.base = float(base)
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
