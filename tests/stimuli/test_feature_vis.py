"""Feature visualizations of planted units: a model whose units are known oriented-grating
detectors, so what a visualization should show is known.

Unit 0 prefers horizontal stripes over vertical ones, unit 1 the 45 degree diagonal over the
135 degree one (each the difference of two rectified oriented filters): maximizing a unit
should draw its preferred orientation, minimizing it the opposite one.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stimuli.feature_vis import (
    Accentuation,
    Fourier,
    LayerOutput,
    Maco,
    UnitObjective,
    Views,
    frequencies,
    optimize,
)

SIZE = 32
STEPS = 80
ORIENTATIONS = (0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4)  # stripes' normal direction


def grating(theta: float, size: int = 7, frequency: float = 0.25) -> torch.Tensor:
    """A Gabor patch whose stripes vary along direction theta."""
    y, x = torch.meshgrid(torch.arange(size) - size // 2, torch.arange(size) - size // 2,
                          indexing="ij")
    wave = torch.cos(2 * math.pi * frequency * (x * math.cos(theta) + y * math.sin(theta)))
    return wave * torch.exp(-(x**2 + y**2) / 8.0)


class Planted(nn.Module):
    """RGB -> 4 oriented filters (rectified) -> 2 opponent units -> a 2-class head."""

    def __init__(self):
        super().__init__()
        kernels = torch.stack([grating(t) for t in ORIENTATIONS])  # 4, 7, 7
        self.filters = nn.Conv2d(3, 4, 7, padding=3, bias=False)
        self.filters.weight.data = kernels[:, None].repeat(1, 3, 1, 1) / 3
        self.rectify = nn.ReLU()
        self.units = nn.Conv2d(4, 2, 1, bias=False)
        self.units.weight.data = torch.tensor([[0.0, 0, 1, 0], [0, 1, 0, 0]])[..., None, None] \
            - torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 1]])[..., None, None]
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.units(self.rectify(self.filters(x))))


# unit 0 = horizontal stripes (vary along y: theta = pi/2) minus vertical ones (theta = 0)
PREFERRED = {(0, 1): 2, (0, -1): 0, (1, 1): 1, (1, -1): 3}  # (unit, sign) -> orientation


@pytest.fixture(scope="module")
def planted() -> tuple[nn.Module, UnitObjective]:
    model = Planted().eval()
    output = LayerOutput(model, "units", mean=(0.5,) * 3, std=(0.25,) * 3)
    return model, UnitObjective(output, None)


def orientation_match(images: torch.Tensor) -> torch.Tensor:
    """(B, 4): each image's best normalized cross-correlation with each oriented patch."""
    grey = images.mean(1, keepdim=True)
    grey = grey - grey.mean((2, 3), keepdim=True)
    out = []
    for theta in ORIENTATIONS:
        k = grating(theta)
        k = (k - k.mean()) / k.norm()
        num = F.conv2d(grey, k[None, None])
        den = F.conv2d(grey**2, torch.ones(1, 1, 7, 7)).sqrt() + 1e-6
        out.append((num / den).flatten(1).amax(1))
    return torch.stack(out, 1)


def flat_magnitude(size: int) -> torch.Tensor:
    return (1.0 / frequencies(size).clamp(min=1.0 / size))[None].repeat(3, 1, 1)


def run(param, objective, units, signs, **kwargs):
    gen = torch.Generator().manual_seed(0)
    return optimize(param, objective, torch.tensor(units), torch.tensor(signs), steps=STEPS,
                    input_size=SIZE, views=Views(n=2), gen=gen, **kwargs)


@pytest.mark.parametrize("method", ["maco", "fourier"])
def test_visualizations_draw_the_planted_orientation_and_its_opposite(planted, method):
    _, objective = planted
    units, signs = [0, 0, 1, 1], [1, -1, 1, -1]  # one run for both units, both directions
    gen = torch.Generator().manual_seed(1)
    if method == "maco":
        phase = torch.randn(4, 3, SIZE, SIZE // 2 + 1, generator=gen)
        param, lr = Maco(flat_magnitude(SIZE), phase), 0.1
    else:
        spectrum = torch.complex(torch.randn(4, 3, SIZE, SIZE // 2 + 1, generator=gen),
                                 torch.randn(4, 3, SIZE, SIZE // 2 + 1, generator=gen)) * 0.01
        param, lr = Fourier(spectrum), 0.05
    result = run(param, objective, units, signs, lr=lr)
    match = orientation_match(result.images)
    for b, (unit, sign) in enumerate(zip(units, signs, strict=True)):
        best = int(match[b].argmax())
        assert best == PREFERRED[(unit, sign)], (method, unit, sign, match[b])
    # maximizing reached a positive response, minimizing a negative one
    assert (result.activations * torch.tensor(signs) > 0).all()
    assert result.images.min() >= 0 and result.images.max() <= 1
    assert result.transparency.shape == (4, SIZE, SIZE) and (result.transparency > 0).all()


def test_maco_keeps_the_magnitude_spectrum(planted):
    """Only the phase moves: before the squashing nonlinearity, every image's spectrum
    magnitude is the given one, up to the standardization's scale."""
    _, objective = planted
    magnitude = flat_magnitude(SIZE)
    param = Maco(magnitude, torch.randn(2, 3, SIZE, SIZE // 2 + 1))
    run(param, objective, [0, 1], [1, 1], lr=0.1)
    with torch.no_grad():
        phase = param.phase
        phase = (phase - phase.mean((1, 2, 3), keepdim=True)) / phase.std((1, 2, 3), keepdim=True)
        spatial = torch.fft.irfft2(torch.polar(magnitude.expand_as(phase), phase * math.pi),
                                   s=(SIZE, SIZE))
        again = torch.fft.rfft2(spatial).abs()
    ratio = again[:, :, 1:, 1:-1] / magnitude[:, 1:, 1:-1]
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-3)


def test_accentuation_raises_the_unit_and_stays_closer_to_its_seed_than_a_visualization(
        planted):
    _, objective = planted
    gen = torch.Generator().manual_seed(2)
    # a smooth, natural-looking seed: blurred noise
    seed = F.avg_pool2d(torch.rand(1, 3, SIZE + 6, SIZE + 6, generator=gen), 7, stride=1)
    seed = ((seed - seed.mean()) * 4 + 0.5).clamp(0.05, 0.95)
    before = objective(seed)[0, 0]
    early = LayerOutput(planted[0], "filters", mean=(0.5,) * 3, std=(0.25,) * 3)
    target = early(seed).detach()

    def penalty(images: torch.Tensor) -> torch.Tensor:
        return (early(images) - target).pow(2).flatten(1).mean(1) / target.pow(2).mean()

    accent = run(Accentuation(seed), objective, [0], [1], lr=0.2, penalty=penalty)
    phase = torch.randn(1, 3, SIZE, SIZE // 2 + 1, generator=gen)
    visual = run(Maco(flat_magnitude(SIZE), phase), objective, [0], [1], lr=0.1)

    assert accent.activations[0] > before + 0.1 * abs(before) + 0.05
    to_seed = (accent.images - seed).pow(2).mean().sqrt()
    assert to_seed < 0.5 * (visual.images - seed).pow(2).mean().sqrt()
    assert torch.allclose(Accentuation(seed).image(), seed, atol=2e-3)  # step 0 is the seed


def test_the_forward_pass_stops_at_the_objectives_layer(planted):
    model, objective = planted
    calls = []
    handle = model.head.register_forward_hook(lambda *_: calls.append(1))
    try:
        objective(torch.rand(2, 3, SIZE, SIZE))
    finally:
        handle.remove()
    assert calls == []
    with pytest.raises(ValueError, match="unknown layer 'nope'"):
        LayerOutput(model, "nope", mean=(0.5,), std=(0.5,))


@pytest.mark.parametrize("source_id", ["nmf", "sae"])
def test_dictionary_objectives_are_differentiable_stand_ins_for_the_codes(source_id):
    """A feature is optimized through a differentiable code: it must rank positions as the
    source's own encoder does, and pass gradients to the activations."""
    from stimuli.registry import SOURCES
    from tests.stimuli.conftest import planted_dictionary

    X, _ = planted_dictionary(3000, 16, 6, seed=3)
    cls = SOURCES[source_id]
    options = {"n_components": 6} | ({"k": 2, "epochs": 10} if source_id == "sae" else {})
    source = cls(cls.Config(**options), seed=0, device=torch.device("cpu"))
    source.fit(X)
    codes = source.encoder()(X)
    x = X[:500].clone().requires_grad_(True)
    stand_in = source.objective_encoder()(x)
    stand_in[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    active = codes[:500] > 0
    for k in range(codes.shape[1]):
        on = active[:, k]
        if 10 < on.sum() < 490:  # a feature's active positions score higher than the rest
            assert stand_in[on, k].mean() > stand_in[~on, k].mean()
        rho = torch.corrcoef(torch.stack([codes[:500, k], stand_in[:, k].detach()]))[0, 1]
        assert rho > 0.5, (source_id, k, float(rho))
