"""Attribution maps: a planted cause found by every method, the analytic gradients of a
linear model, the low-pass filter's spectrum, faithfulness and overlays that rank the truth
first, determinism for a seed, and the messages for bad input.

Letters: N images, C channels, H, W.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from stimuli.attribution.faithfulness import deletion, insertion, mufidelity
from stimuli.attribution.lowpass import choose_cutoff, lowpass_filter
from stimuli.attribution.maps import ATTRIBUTIONS, attribute
from stimuli.attribution.overlay import overlay
from tests.stimuli.conftest import make_tiny_cnn

SIDE = 32
# the planted cause, rows x columns: 16 x 16 pixels off-centre, aligned with WAM's 8-pixel
# coarsest wavelet blocks so that no block straddles its edge
REGION = (slice(8, 24), slice(16, 32))
ELSEWHERE = (slice(8, 24), slice(0, 16))  # as large, disjoint


class SpatialMask(nn.Module):
    """Multiplies feature maps (N, C, H, W) by a fixed (H, W) mask: what lies outside it
    cannot reach the layers above."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return a * self.mask


def square(where: tuple[slice, slice]) -> torch.Tensor:
    """(SIDE, SIDE) 0/1 indicator of a square."""
    m = torch.zeros(SIDE, SIDE)
    m[where] = 1.0
    return m


def planted_model() -> nn.Sequential:
    """A hand-built CNN whose class-1 logit reads only the pixels in REGION (class 0's is 0).

    conv 0 (1x1) with ReLU keeps each channel's brightness above grey, relu(x - 0.5), so a
    grey or black pixel adds nothing and occlusion, RISE and deletion all lower the score;
    the mask zeroes those features outside REGION; conv 3 (3x3, positive weights) and its
    ReLU are non-negative, so Grad-CAM's map on conv 3 is confined to REGION and its rim.
    """
    conv1, conv2, head = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4, 2)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        conv1.weight.copy_(torch.eye(3)[:, :, None, None])
        conv1.bias.fill_(-0.5)
        conv2.weight.copy_(torch.rand(4, 3, 3, 3, generator=generator) / 13.5)
        conv2.bias.zero_()
        head.weight.zero_()
        head.bias.zero_()
        head.weight[1] = 40.0  # random images: logit about 1, p(class 1) about 0.75
        head.bias[1] = -3.5
    return nn.Sequential(conv1, nn.ReLU(), SpatialMask(square(REGION)), conv2, nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).eval()


@pytest.fixture(scope="module")
def planted() -> nn.Sequential:
    return planted_model()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """(8, 3, SIDE, SIDE) uniform random images."""
    return torch.rand(8, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(1))


def contrast(maps: torch.Tensor, where: tuple[slice, slice] = REGION) -> torch.Tensor:
    """(N,) mean of each map (N, H, W) inside the square minus its mean outside, in units of
    the map's standard deviation: 0 for a uniform map, near 0 for a random one, and
    1 / sqrt(a (1 - a)) = 2.3 for the square's own indicator (area share a = 1/4)."""
    inside = square(where).bool()
    diff = maps[:, inside].mean(dim=1) - maps[:, ~inside].mean(dim=1)
    return diff / maps.flatten(1).std(dim=1).clamp(min=1e-12)


def test_the_planted_model_reads_only_its_region(planted, images):
    other = images.clone()
    outside = ~square(REGION).bool()
    other[:, :, outside] = torch.rand(8, 3, int(outside.sum()),
                                      generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        p = planted(images).softmax(dim=1)[:, 1]
        torch.testing.assert_close(planted(other), planted(images))
    assert ((p > 0.6) & (p < 0.95)).all(), p  # neither saturated nor undecided


def test_contrast_rejects_uniform_and_random_maps(images):
    assert (contrast(torch.ones(8, SIDE, SIDE)) == 0).all()
    random = torch.rand(8, SIDE, SIDE, generator=torch.Generator().manual_seed(2))
    assert (contrast(random).abs() < 0.3).all()
    assert (contrast(square(REGION).expand(8, -1, -1)) > 2.2).all()


@pytest.mark.parametrize("method", list(ATTRIBUTIONS))
def test_every_method_finds_the_planted_cause(planted, images, method):
    maps = attribute(method, planted, images, 1, seed=0)
    assert maps.shape == (8, SIDE, SIDE)
    assert torch.isfinite(maps).all() and (maps >= 0).all()
    # inside mean above outside mean by at least one standard deviation of the map, for
    # every image (found 1.7 .. 2.3; the region's own indicator gives 2.3)
    assert (contrast(maps) > 1.0).all(), contrast(maps)
    assert (contrast(maps, ELSEWHERE) < 0).all()


@pytest.mark.parametrize("method", list(ATTRIBUTIONS))
def test_every_method_maps_non_square_batches_and_restores_the_mode(method):
    model = make_tiny_cnn().train()
    x = torch.rand(3, 3, 32, 24, generator=torch.Generator().manual_seed(3))
    options = {"n_samples": 2} if method in ("smoothgrad", "wam") else {}
    maps = attribute(method, model, x, torch.tensor([0, 2, 3]), seed=0, **options)
    assert maps.shape == (3, 32, 24)
    assert torch.isfinite(maps).all() and not maps.requires_grad
    assert model.training


@pytest.fixture(scope="module")
def linear() -> nn.Sequential:
    torch.manual_seed(0)  # the layer's initial weights
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2)).eval()


def test_saliency_is_the_linear_models_weights(linear):
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    target = torch.tensor([0, 1, 1, 0])
    w = linear[1].weight.detach().view(2, 3, 8, 8)[target]  # N, C, H, W
    torch.testing.assert_close(attribute("saliency", linear, x, target, signed=True),
                               w.sum(dim=1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(attribute("saliency", linear, x, target),
                               w.abs().sum(dim=1), rtol=1e-5, atol=1e-6)


def test_integrated_gradients_is_input_times_weights(linear):
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    target = torch.tensor([1, 0, 1, 0])
    w = linear[1].weight.detach().view(2, 3, 8, 8)[target]  # N, C, H, W
    torch.testing.assert_close(
        attribute("integrated_gradients", linear, x, target, signed=True, n_steps=8),
        (x * w).sum(dim=1), rtol=1e-4, atol=1e-5)


def test_lowpass_filter_removes_every_frequency_above_the_cutoff():
    x = torch.rand(2, 3, 32, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    cutoff = 0.4
    filtered = lowpass_filter(x, cutoff)
    assert filtered.shape == x.shape and not filtered.is_complex()
    # radius in cycles per pixel, computed here independently; Nyquist = 0.5
    fy, fx = np.fft.fftfreq(32)[:, None], np.fft.fftfreq(24)[None, :]
    keep = torch.from_numpy(np.hypot(fy, fx) <= cutoff * 0.5)
    assert 0.1 < keep.float().mean() < 0.9  # both sides of the cut-off are tested
    before, after = torch.fft.fft2(x), torch.fft.fft2(filtered)
    removed = after[..., ~keep].abs().square().sum() / after.abs().square().sum()
    assert removed < 1e-20
    torch.testing.assert_close(after[..., keep], before[..., keep], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(lowpass_filter(x, 1.5), x)  # every frequency kept


def test_choose_cutoff_scores_every_candidate(planted, images):
    cutoffs = [0.1, 0.35, 1.0]
    best, scores = choose_cutoff(planted, images[:4], torch.ones(4, dtype=torch.long), cutoffs,
                                 steps=8)
    assert best in cutoffs
    assert sorted(scores) == cutoffs
    assert all(np.isfinite(s) for s in scores.values())
    assert scores[best] == max(scores.values())


def test_faithfulness_ranks_the_true_map_first(planted, images):
    target = torch.ones(8, dtype=torch.long)
    truth = square(REGION).expand(8, -1, -1)
    elsewhere = square(ELSEWHERE).expand(8, -1, -1)
    random = torch.rand(8, SIDE, SIDE, generator=torch.Generator().manual_seed(4))
    scores = {name: (deletion(planted, images, target, m), insertion(planted, images, target, m))
              for name, m in (("truth", truth), ("elsewhere", elsewhere))}
    for d, i in scores.values():
        assert d.shape == (8,) and i.shape == (8,)
    assert (scores["truth"][0] < scores["elsewhere"][0]).all()  # deletion: lower is better
    assert (scores["truth"][1] > scores["elsewhere"][1]).all()  # insertion: higher is better
    mu_truth = mufidelity(planted, images, target, truth)
    mu_random = mufidelity(planted, images, target, random)
    assert mu_truth.shape == mu_random.shape == (8,)
    assert (mu_truth > 0.5).all() and (mu_truth > mu_random).all(), (mu_truth, mu_random)


def test_overlay_keeps_the_size_and_paints_where_the_heat_is():
    image = np.full((24, 40, 3), 128, dtype=np.uint8)  # grey, H=24, W=40
    heat = np.zeros((6, 10))
    heat[:3, :5] = 1.0  # hot top-left quarter, at a quarter of the image's resolution
    out = overlay(image, heat, alpha=0.6)
    assert out.size == (40, 24) and out.mode == "RGB"
    pixels = np.asarray(out).astype(int)
    hot, cold = pixels[4, 4], pixels[20, 36]
    assert np.abs(hot - 128).sum() > 100
    assert hot[0] > hot[2] and cold[2] > cold[0]  # jet: red where hot, blue where cold
    unchanged = overlay(Image.fromarray(image), heat, alpha=0.0)
    np.testing.assert_array_equal(np.asarray(unchanged), image)


def _linear_model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * SIDE * SIDE, 2))


BAD_INPUTS: list[tuple[str, Callable[[nn.Module, torch.Tensor], object], str]] = [
    ("unknown method", lambda m, x: attribute("sharpness", m, x, 1),
     r"unknown attribution method 'sharpness' \(known: saliency, smoothgrad, .*, wam\)"),
    ("unknown option", lambda m, x: attribute("smoothgrad", m, x, 1, n_steps=4),
     r"smoothgrad: unknown option\(s\) n_steps \(its options: n_samples, noise\)"),
    ("option of no method", lambda m, x: attribute("saliency", m, x, 1, noise=0.1),
     r"saliency: unknown option\(s\) noise \(its options: none\)"),
    ("unknown layer", lambda m, x: attribute("gradcam", m, x, 1, layer="conv9"),
     r"no layer 'conv9' in the model \(layers: 0, 1, 2, 3, 4, 5, 6, 7\)"),
    ("no convolution", lambda m, x: attribute("gradcam", _linear_model(), x, 1),
     r"gradcam: the model has no Conv2d layer"),
    ("one image, not a batch", lambda m, x: attribute("saliency", m, x[0], 1),
     r"saliency: inputs must be \(N, C, H, W\), got shape \(3, 32, 32\)"),
    ("targets of another batch", lambda m, x: attribute("rise", m, x, torch.tensor([1, 0])),
     r"rise: target must be an int or one class per image \(4,\), got shape \(2,\)"),
    ("rise keeps everything", lambda m, x: attribute("rise", m, x, 1, keep=1.0),
     r"rise: keep must lie in \(0, 1\)"),
    ("wam too many levels", lambda m, x: attribute("wam", m, x, 1, levels=6),
     r"wam: the image sides \(32, 32\) must be divisible by 2\*\*levels = 64"),
    ("cut-off of zero", lambda m, x: lowpass_filter(x, 0.0),
     r"lowpass: cutoff must lie in \(0, 1.5\]"),
    ("no cut-offs", lambda m, x: choose_cutoff(m, x, torch.ones(4, dtype=torch.long), []),
     r"lowpass: no candidate cut-offs"),
    ("maps of another size",
     lambda m, x: deletion(m, x, torch.ones(4, dtype=torch.long), torch.rand(4, 16, 16)),
     r"maps of shape \(4, 16, 16\) do not match inputs \(4, 3, 32, 32\)"),
    ("overlay of a colour map", lambda m, x: overlay(np.zeros((8, 8, 3)), np.zeros((8, 8, 3))),
     r"overlay: the map must be \(H, W\), got shape \(8, 8, 3\)"),
    ("overlay alpha", lambda m, x: overlay(np.zeros((8, 8, 3)), np.zeros((8, 8)), alpha=2),
     r"overlay: alpha must lie in \[0, 1\], got 2"),
]


@pytest.mark.parametrize(("call", "message"), [case[1:] for case in BAD_INPUTS],
                         ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_is_a_clear_error(planted, images, call, message):
    with pytest.raises(ValueError, match=message):
        call(planted, images[:4])


@pytest.mark.parametrize("method", ["smoothgrad", "rise", "wam"])
def test_random_methods_are_deterministic_for_a_seed(planted, images, method):
    x = images[:2]
    torch.manual_seed(5)
    first = attribute(method, planted, x, 1, seed=7)
    after = torch.rand(3)  # the global generator is left as it was
    torch.manual_seed(5)
    torch.testing.assert_close(torch.rand(3), after)
    torch.testing.assert_close(attribute(method, planted, x, 1, seed=7), first,
                               rtol=0, atol=0)
    assert not torch.equal(attribute(method, planted, x, 1, seed=8), first)
