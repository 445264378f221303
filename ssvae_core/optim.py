"""Optimisers and learning-rate schedules by name (the ``train.optimizer`` and
``train.lr_schedule`` keys). The paper trains with plain SGD at lr 0.005 (section 4).

Each optimiser declares its own settings with their defaults in its signature
(`optimizer_params`): ``momentum`` is SGD's, so ``train.momentum`` with Adam is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LRScheduler

from ssvae_core.registry import declared_params, lookup

Params = Iterable[torch.nn.Parameter]


def _sgd(params: Params, lr: float, momentum: float = 0.0) -> Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum)


def _adam(params: Params, lr: float) -> Optimizer:
    return torch.optim.Adam(params, lr=lr)


OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {"sgd": _sgd, "adam": _adam}

SCHEDULES: dict[str, Callable[[Optimizer, int], LRScheduler]] = {
    "constant": lambda opt, total_steps: LambdaLR(opt, lambda _: 1.0),
    "cosine": lambda opt, total_steps: CosineAnnealingLR(opt, T_max=max(1, total_steps)),
}


def optimizer_params(name: str) -> dict[str, Any]:
    """The settings optimiser `name` declares (besides lr) and their defaults."""
    return declared_params(lookup(OPTIMIZERS, name, "optimizer"), skip=("lr",))


def build_optimizer(name: str, params: Params, lr: float, **settings: Any) -> Optimizer:
    """Optimiser `name` over `params` at learning rate `lr`, with its declared `settings`."""
    return lookup(OPTIMIZERS, name, "optimizer")(params, lr, **settings)
