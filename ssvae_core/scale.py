"""`PositiveScale`: a positive scalar or vector stored as its logarithm, learned or fixed.

Shared by the couplings (a lengthscale L, a temperature tau) and the stochastic encoder
(its sigma), so that gradient steps can never make the value zero or negative.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class PositiveScale(nn.Module):
    """A positive value stored as log(value): an `nn.Parameter` if learned, else a buffer.

    value: [] (shape ()) or [size]
    """

    def __init__(self, initial: float, learn: bool, size: int | None = None) -> None:
        super().__init__()
        shape = () if size is None else (size,)
        log_value = torch.full(shape, math.log(initial))
        if learn:
            self.log_value = nn.Parameter(log_value)
        else:
            self.register_buffer("log_value", log_value)

    @property
    def value(self) -> Tensor:
        return self.log_value.exp()
