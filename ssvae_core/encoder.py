"""Encoders g(x): the paper's conv + centre-of-mass network (Fig. 2) and an MLP for vectors.

A deterministic encoder is Q(z|x) = δ(z − g(x)) (eq. 21), for which the ELBO is tight (eq. 22);
`StochasticEncoder` wraps any of them as Q(z|x) = N(g(x), σ² I) with reparameterised samples,
which the theory of sections 3.1–3.6 covers just as well.

Coordinates: the centre-of-mass encoder returns positions in [-1, 1] (pixel column c has centre
x = (c + 0.5) / W · 2 − 1, rows likewise), so one ball diameter of motion is 2·diameter/size in
z whatever the resolution (0.25 at both presets).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ssvae_core.batchnorm import BatchNorm2d, relu_input
from ssvae_core.conv3x3 import Conv2d
from ssvae_core.registry import declared_params, lookup
from ssvae_core.scale import PositiveScale


def pixel_coordinates(n: int, device: torch.device | None = None) -> Tensor:
    """Centres of `n` pixels along one axis in [-1, 1]. Shape: [n]."""
    return (torch.arange(n, device=device, dtype=torch.float32) + 0.5) * (2.0 / n) - 1.0


def centre_of_mass(maps: Tensor) -> Tensor:
    """Centre of mass of each map (Fig. 2: sum each axis, normalise to 1, average the axis).

    maps: [B, K, H, W], non-negative. Returns z: [B, 2K] ordered (x_1, y_1, ..., x_K, y_K).
    """
    batch, k, height, width = maps.shape
    xs = pixel_coordinates(width, maps.device)
    ys = pixel_coordinates(height, maps.device)
    col_mass = maps.sum(dim=2)  # [B, K, W]: summed over rows
    row_mass = maps.sum(dim=3)  # [B, K, H]: summed over columns
    total = col_mass.sum(dim=2).clamp_min(1e-12)  # [B, K]
    x = (col_mass @ xs) / total  # [B, K]
    y = (row_mass @ ys) / total
    return torch.stack((x, y), dim=2).reshape(batch, 2 * k)


class CentreOfMassEncoder(nn.Module):
    """Fig. 2: conv 3×3 (3→6) + BN + ReLU, conv 3×3 (6→K) + BN + sigmoid, centre of mass.

    Input frames: [B, 3, H, W] float in [0, 1]. Output z: [B, 2K] (K = 3 maps -> 6 numbers).
    """

    def __init__(self, in_channels: int = 3, hidden: int = 6, n_maps: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            Conv2d(in_channels, hidden, kernel_size=3, padding=1),
            BatchNorm2d(hidden),
            nn.ReLU(),
            Conv2d(hidden, n_maps, kernel_size=3, padding=1),
            BatchNorm2d(n_maps),
            nn.Sigmoid(),
        )
        self.out_dim = 2 * n_maps

    def maps(self, frames: Tensor) -> Tensor:
        """The K sigmoid feature maps. [B, 3, H, W] -> [B, K, H, W].

        `features` in order, except that the first batch norm applies the ReLU after it in
        the same pass over memory (`BatchNorm2d.forward_relu`), and that the second
        convolution's backward reads that ReLU's output from the batch norm's input rather
        than keep it (`conv3x3.conv2d`'s ``input_from``, where the C kernels run both). The
        same numbers either way."""
        conv1, norm1, _relu, conv2, norm2, sigmoid = self.features
        assert isinstance(norm1, BatchNorm2d) and isinstance(conv2, Conv2d)
        hidden = norm1.forward_relu(conv1(frames))
        out = conv2(hidden, relu_input(hidden))
        del hidden  # dropped: where input_from was taken, nothing else holds it
        return sigmoid(norm2(out))

    def forward(self, frames: Tensor) -> Tensor:
        """[B, 3, H, W] -> z [B, 2K]."""
        return centre_of_mass(self.maps(frames))


class MLPEncoder(nn.Module):
    """A small MLP for vector data (or flattened frames). [B, *in_shape] -> z [B, out_dim]."""

    def __init__(self, in_dim: int, out_dim: int = 6, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, out_dim),
        )
        self.out_dim = out_dim

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class StochasticEncoder(nn.Module):
    """Q(z|x) = N(g(x), σ² I): z = g(x) + σ ε with ε ~ N(0, I) (reparameterisation).

    In eval mode (and for the probe) it returns the mean g(x). σ is fixed or learned (log σ).
    """

    def __init__(self, mean: nn.Module, sigma: float = 0.03, learn_sigma: bool = False) -> None:
        super().__init__()
        self.mean = mean
        self.out_dim: int = mean.out_dim  # type: ignore[assignment]
        self.scale = PositiveScale(sigma, learn_sigma)

    @property
    def sigma(self) -> Tensor:
        return self.scale.value

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x -> z [B, D]; a sample in training mode, the mean in eval mode."""
        mu = self.mean(x)
        return self.sample(mu, generator) if self.training else mu

    def sample(self, mu: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """z = mu + σ ε for means mu [B, D], ε drawn from `generator` (on the CPU)."""
        noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype).to(mu.device)
        return mu + self.sigma * noise


def _com(frame_shape: tuple[int, int, int], out_dim: int) -> nn.Module:
    """Fig. 2 for frames of `frame_shape` = (C, H, W): out_dim / 2 maps, one per ball."""
    return CentreOfMassEncoder(frame_shape[0], n_maps=out_dim // 2)


def _mlp(frame_shape: tuple[int, int, int], out_dim: int, hidden: int = 64) -> nn.Module:
    """An MLP on the flattened frames."""
    channels, height, width = frame_shape
    return MLPEncoder(channels * height * width, out_dim, hidden)


# name -> builder(frame_shape, out_dim, **its declared parameters) (`encoder_params`)
ENCODERS: dict[str, Callable[..., nn.Module]] = {
    "com": _com,  # Fig. 2
    "mlp": _mlp,
}


def encoder_params(kind: str) -> dict[str, object]:
    """The parameters encoder `kind` declares and their defaults (``com``: none)."""
    return declared_params(lookup(ENCODERS, kind, "encoder"))


def stochastic_params() -> dict[str, object]:
    """The parameters of Q(z|x) = N(g(x), σ² I) (`StochasticEncoder`) and their defaults."""
    return declared_params(StochasticEncoder, skip=("mean",))


def build_encoder(
    kind: str,
    frame_shape: tuple[int, int, int],
    *,
    out_dim: int = 6,
    stochastic: bool = False,
    **params: Any,
) -> nn.Module:
    """An encoder by registry name for inputs of `frame_shape` = (C, H, W); z is [B, out_dim].

    params: the kind's own (`encoder_params`), and with `stochastic` also sigma / learn_sigma
    (`stochastic_params`); anything else is a ValueError naming it.
    """
    builder = lookup(ENCODERS, kind, "encoder")
    own = {k: v for k, v in params.items() if k in encoder_params(kind)}
    noise = {k: v for k, v in params.items() if k in stochastic_params() and stochastic}
    unknown = sorted(set(params) - set(own) - set(noise))
    if unknown:
        raise ValueError(f"encoder {kind!r} (stochastic={stochastic}) takes no {unknown[0]!r}")
    encoder = builder(frame_shape, out_dim, **own)
    return StochasticEncoder(encoder, **noise) if stochastic else encoder
