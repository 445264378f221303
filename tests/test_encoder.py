from __future__ import annotations

import pytest
import torch

from ssvae_core import conv3x3
from ssvae_core import encoder as encoder_module
from ssvae_core.encoder import (
    ENCODERS,
    CentreOfMassEncoder,
    StochasticEncoder,
    build_encoder,
    centre_of_mass,
    encoder_params,
    pixel_coordinates,
    stochastic_params,
)


def test_centre_of_mass_of_a_single_pixel() -> None:
    maps = torch.zeros(1, 3, 8, 16)
    maps[0, 0, 2, 5] = 1.0  # row 2, column 5
    maps[0, 1, 7, 0] = 2.0
    maps[0, 2] = 1.0  # uniform -> centre
    z = centre_of_mass(maps)
    xs, ys = pixel_coordinates(16), pixel_coordinates(8)
    expected = torch.tensor([[xs[5], ys[2], xs[0], ys[7], 0.0, 0.0]])
    torch.testing.assert_close(z, expected, atol=1e-6, rtol=0)


def test_centre_of_mass_matches_a_loop() -> None:
    maps = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    z = centre_of_mass(maps)
    xs, ys = pixel_coordinates(7), pixel_coordinates(5)
    for b in range(2):
        for k in range(3):
            total = maps[b, k].sum()
            x = sum(maps[b, k, r, c] * xs[c] for r in range(5) for c in range(7)) / total
            y = sum(maps[b, k, r, c] * ys[r] for r in range(5) for c in range(7)) / total
            assert abs(z[b, 2 * k] - x) < 1e-5 and abs(z[b, 2 * k + 1] - y) < 1e-5


def test_fig2_architecture() -> None:
    enc = CentreOfMassEncoder()
    convs = [m for m in enc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (3, 6, (3, 3)),
        (6, 3, (3, 3)),
    ]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in enc.modules()) == 2
    z = enc(torch.rand(4, 3, 32, 32))
    assert z.shape == (4, 6) and bool((z.abs() <= 1).all())


@pytest.mark.parametrize("kind", sorted(ENCODERS))
@pytest.mark.parametrize("stochastic", [False, True])
def test_every_encoder_gives_z_and_gradients(kind: str, stochastic: bool) -> None:
    noise = {"learn_sigma": True} if stochastic else {}
    enc = build_encoder(kind, (3, 16, 16), stochastic=stochastic, **noise)
    x = torch.rand(5, 3, 16, 16)
    z = enc(x)
    assert z.shape == (5, 6)
    z.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in enc.parameters())


def test_stochastic_encoder_samples_around_the_mean_and_is_seeded() -> None:
    mean = CentreOfMassEncoder()
    enc = StochasticEncoder(mean, sigma=0.1)
    x = torch.rand(64, 3, 16, 16)
    a = enc(x, generator=torch.Generator().manual_seed(1))
    b = enc(x, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    mu = mean(x)
    assert 0.08 < float((a - mu).detach().std()) < 0.12
    enc.eval()
    torch.testing.assert_close(enc(x), mean(x))


def test_unknown_encoder_lists_names() -> None:
    with pytest.raises(ValueError, match="com, mlp"):
        build_encoder("resnet", (3, 8, 8))


def test_each_encoder_takes_only_its_own_settings() -> None:
    assert encoder_params("com") == {} and encoder_params("mlp") == {"hidden": 64}
    assert stochastic_params() == {"sigma": 0.03, "learn_sigma": False}
    with pytest.raises(ValueError, match="takes no 'hidden'"):
        build_encoder("com", (3, 8, 8), hidden=16)
    with pytest.raises(ValueError, match="takes no 'sigma'"):
        build_encoder("com", (3, 8, 8), sigma=0.1)  # a deterministic encoder has no sigma
    assert build_encoder("mlp", (3, 8, 8), hidden=16).net[1].out_features == 16


def _fig2_step(monkeypatch: pytest.MonkeyPatch, read: bool) -> tuple[list[torch.Tensor], str]:
    """One forward and backward of Fig. 2 on 5 frames; the first ReLU's output read from the
    batch norm's input by the second convolution (`read`) or kept. -> (z and every gradient,
    what the second convolution keeps for its backward besides its weight: "relu output",
    "conv1 output" (which the batch norm keeps anyway) or something else)."""
    if not read:
        monkeypatch.setattr(encoder_module, "relu_input", lambda y: None)
    torch.manual_seed(0)
    net = CentreOfMassEncoder()
    frames = torch.rand(5, 3, 24, 20, generator=torch.Generator().manual_seed(1))
    seen: dict[str, int] = {}
    conv1, conv2 = net.features[0], net.features[3]
    conv1.register_forward_hook(lambda m, a, out: seen.update(conv1=out.data_ptr()))
    conv2.register_forward_hook(
        lambda m, a, out: seen.update(
            relu=a[0].data_ptr(), kept=out.grad_fn.saved_tensors[1].data_ptr()
        )
    )
    z = net(frames)
    (z * torch.arange(6.0)).sum().backward()
    kept = {seen["relu"]: "relu output", seen["conv1"]: "conv1 output"}.get(seen["kept"], "?")
    return [z.detach(), *(p.grad for p in net.parameters())], kept  # type: ignore[misc]


def test_fig2_does_not_keep_the_first_relus_output_and_computes_the_same_bits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if conv3x3.library() is None:
        pytest.skip("no C compiler: the C kernels could not be built")
    read, read_kept = _fig2_step(monkeypatch, read=True)
    kept, kept_kept = _fig2_step(monkeypatch, read=False)
    assert all(torch.equal(a, b) for a, b in zip(read, kept, strict=True))
    assert (read_kept, kept_kept) == ("conv1 output", "relu output")
