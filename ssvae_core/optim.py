"""Optimisers and learning-rate schedules by name (the ``train.optimizer`` and
``train.lr_schedule`` keys). The paper trains with plain SGD at lr 0.005 (section 4)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LRScheduler

Params = Iterable[torch.nn.Parameter]

OPTIMIZERS: dict[str, Callable[[Params, float, float], Optimizer]] = {
    "sgd": lambda params, lr, momentum: torch.optim.SGD(params, lr=lr, momentum=momentum),
    "adam": lambda params, lr, momentum: torch.optim.Adam(params, lr=lr),
}

SCHEDULES: dict[str, Callable[[Optimizer, int], LRScheduler]] = {
    "constant": lambda opt, total_steps: LambdaLR(opt, lambda _: 1.0),
    "cosine": lambda opt, total_steps: CosineAnnealingLR(opt, T_max=max(1, total_steps)),
}
