"""CRAFT: Jansen's estimator on a function with known indices, a planted concept found and
ranked first, determinism for a seed, and the messages for bad input."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import qmc
from torch import nn

from stimuli.attribution.craft import (
    Concepts,
    concept_maps,
    fit_concepts,
    jansen_total,
    sobol_importance,
    sobol_masks,
    spatial_codes,
)
from tests.stimuli.conftest import make_tiny_cnn

# Ishigami (a = 7, b = 0.1) on [-pi, pi]^3: total indices from its closed-form variances
ISHIGAMI_TOTAL = torch.tensor([0.5576, 0.4424, 0.2437], dtype=torch.float64)
SIDE, PATCH = 32, 12  # image side and side of the coloured patches
RED, GREEN, GREY = (0.9, 0.1, 0.1), (0.1, 0.9, 0.1), (0.1, 0.1, 0.1)


def ishigami(x: torch.Tensor, a: float = 7.0, b: float = 0.1) -> torch.Tensor:
    """f (..., ) of points x (..., 3) in [-pi, pi]^3."""
    x1, x2, x3 = x.unbind(-1)
    return torch.sin(x1) + a * torch.sin(x2) ** 2 + b * x3**4 * torch.sin(x1)


def test_jansen_total_recovers_the_ishigami_indices():
    n, d = 4096, 3
    points = qmc.Sobol(d=2 * d, scramble=True, rng=0).random_base2(int(math.log2(n)))
    points = torch.from_numpy(points) * 2 * math.pi - math.pi  # n, 2d on [-pi, pi]
    a, b = points[:, :d], points[:, d:]  # n, d each
    c = a[None].repeat(d, 1, 1)  # d, n, d: A with column i taken from B
    for i in range(d):
        c[i, :, i] = b[:, i]
    total = jansen_total(ishigami(a), ishigami(b), ishigami(c))
    assert total.shape == (d,)
    assert torch.allclose(total, ISHIGAMI_TOTAL, atol=0.05), total


def test_jansen_total_is_batched_and_zero_where_f_is_flat():
    gen = torch.Generator().manual_seed(0)
    f_a, f_b = torch.rand(2, 5, 8, generator=gen), torch.rand(2, 5, 8, generator=gen)
    f_c = torch.rand(2, 5, 4, 8, generator=gen)
    f_a[1], f_b[1], f_c[1] = 3.0, 3.0, 3.0  # the second batch of problems does not vary
    total = jansen_total(f_a, f_b, f_c)
    assert total.shape == (2, 5, 4)
    assert (total[1] == 0).all() and (total[0] > 0).all()
    assert torch.allclose(total[0, 2], jansen_total(f_a[0, 2], f_b[0, 2], f_c[0, 2]))
    with pytest.raises(ValueError, match=r"f_c \(\.\.\., K, n\)"):
        jansen_total(torch.rand(8), torch.rand(8), torch.rand(4, 7))


def test_sobol_masks_hold_a_b_and_each_c_i():
    k, n = 3, 8
    masks = sobol_masks(k, n, seed=1)
    assert masks.shape == ((k + 2) * n, k)
    a, b, c = masks[:n], masks[n:2 * n], masks[2 * n:].reshape(k, n, k)
    for i in range(k):
        assert torch.equal(c[i, :, i], b[:, i])
        others = [j for j in range(k) if j != i]
        assert torch.equal(c[i][:, others], a[:, others])
    assert torch.equal(masks, sobol_masks(k, n, seed=1))
    assert sobol_masks(k, 5, seed=1).shape == ((k + 2) * 5, k)  # any n, no warning


# --- a planted concept: a hand-built model whose class 0 looks only at red patches


def colour_model() -> tuple[nn.Module, nn.Module]:
    """g: a 1x1 conv + ReLU whose channels 0-1 see red, 2-3 green, 4 the dark background
    and 5 brightness; h: spatial mean, then class 0 = the red channels (and a little
    background), class 1 = the green channels."""
    conv = nn.Conv2d(3, 6, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([
            [2.0, -1.0, -1.0], [1.0, -0.5, -0.5],  # red
            [-1.0, 2.0, -1.0], [-0.5, 1.0, -0.5],  # green
            [-1 / 3, -1 / 3, -1 / 3], [1 / 3, 1 / 3, 1 / 3],  # dark, brightness
        ])[:, :, None, None])
        conv.bias.copy_(torch.tensor([-0.3, -0.1, -0.3, -0.1, 0.5, 0.0]))
    head = nn.Linear(6, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[3.0, 3.0, 0, 0, 0.2, 0], [0, 0, 3.0, 3.0, 0, 0]]))
        head.bias.zero_()
    g = nn.Sequential(conv, nn.ReLU()).eval()
    h = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).eval()
    return g, h


def patch_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, S, S): grey with noise, a red patch in the left half and a green one
    in the right half (random heights); and the red patches' masks (N, S, S)."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.tensor(GREY)[None, :, None, None].repeat(n, 1, SIDE, SIDE)
    red = torch.zeros(n, SIDE, SIDE, dtype=torch.bool)
    for i in range(n):
        ry, gy = torch.randint(SIDE - PATCH + 1, (2,), generator=gen).tolist()
        rx, gx = torch.randint(SIDE // 2 - PATCH + 1, (2,), generator=gen).tolist()
        gx += SIDE // 2
        images[i, :, ry:ry + PATCH, rx:rx + PATCH] = torch.tensor(RED)[:, None, None]
        images[i, :, gy:gy + PATCH, gx:gx + PATCH] = torch.tensor(GREEN)[:, None, None]
        red[i, ry:ry + PATCH, rx:rx + PATCH] = True
    images += 0.03 * torch.rand(images.shape, generator=gen)
    return images.clamp(0, 1), red


@pytest.fixture(scope="module")
def planted() -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor, Concepts]:
    g, h = colour_model()
    images, red = patch_images(16, seed=0)
    concepts = fit_concepts(g, h, images, 0, n_concepts=3, n_crops=256, crop_size=8,
                            n_designs=32, seed=0)
    return g, h, images, red, concepts


def test_the_planted_concept_is_found_and_ranked_first(planted):
    g, _, images, _, concepts = planted
    assert concepts.bank.shape == (3, 6) and concepts.codes.shape == (256, 3)
    assert concepts.crops.shape == (256, 3, 8, 8) and concepts.importance.shape == (3,)
    assert (concepts.bank >= 0).all() and (concepts.codes >= 0).all()
    # the red patch's activation direction, read off g at a pure red pixel
    red_pixel = torch.tensor(RED)[None, :, None, None]
    red_direction = nn.functional.normalize(g(red_pixel).detach().flatten(), dim=0)
    cosine = nn.functional.normalize(concepts.bank, dim=1) @ red_direction  # K
    red_concept = int(cosine.argmax())
    assert cosine[red_concept] > 0.95
    ranked = concepts.importance.argsort(descending=True)
    assert int(ranked[0]) == red_concept
    assert concepts.importance[red_concept] > 0.5
    assert concepts.importance[red_concept] > 10 * concepts.importance[ranked[1]]
    # its top crops are red: mostly the red channel
    top = concepts.crops[concepts.top_crops(red_concept, 3)]  # 3, 3, s, s
    assert (top[:, 0].mean(dim=(1, 2)) > 2 * top[:, 1].mean(dim=(1, 2))).all()


def test_concept_maps_light_up_inside_the_red_patch(planted):
    g, _, images, red, concepts = planted
    maps = concept_maps(g, concepts.bank, images[:4], SIDE)
    assert maps.shape == (4, 3, SIDE, SIDE)
    red_concept = int(concepts.importance.argmax())
    for i in range(4):
        inside, outside = maps[i, red_concept][red[i]], maps[i, red_concept][~red[i]]
        assert inside.mean() > 10 * outside.mean() + 1e-6
    assert concept_maps(g, concepts.bank, images[:1], 64).shape == (1, 3, 64, 64)


def test_sobol_importance_follows_the_logit_explained(planted):
    g, h, images, _, concepts = planted
    codes = spatial_codes(g, concepts.bank, images)  # N, K, h, w
    assert codes.shape == (16, 3, SIDE, SIDE)
    green_pixel = torch.tensor(GREEN)[None, :, None, None]
    green_direction = nn.functional.normalize(g(green_pixel).detach().flatten(), dim=0)
    green_concept = int((nn.functional.normalize(concepts.bank, dim=1) @ green_direction).argmax())
    red_concept = int(concepts.importance.argmax())
    assert green_concept != red_concept
    green_logit = sobol_importance(h, codes, concepts.bank, 1, n_designs=16, seed=0)
    assert int(green_logit.argmax()) == green_concept
    assert green_logit[red_concept] < 0.01 < 0.5 < green_logit[green_concept]


# --- determinism and bad input


@pytest.fixture(scope="module")
def tiny() -> tuple[nn.Module, nn.Module, torch.Tensor]:
    model = make_tiny_cnn()
    images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    return model[0], model[1], images


def fit_tiny(tiny, **changes) -> Concepts:
    g, h, images = tiny
    kwargs = {"n_concepts": 3, "n_crops": 32, "crop_size": 8, "n_designs": 8, "seed": 5}
    kwargs.update(changes)
    images = kwargs.pop("images", images)
    g = kwargs.pop("g", g)
    class_index = kwargs.pop("class_index", 1)
    return fit_concepts(g, h, images, class_index, **kwargs)


def test_fit_concepts_is_deterministic_for_a_seed(tiny):
    first, again, other = fit_tiny(tiny), fit_tiny(tiny), fit_tiny(tiny, seed=6)
    for name in ("bank", "crops", "codes", "importance"):
        assert torch.equal(getattr(first, name), getattr(again, name)), name
    assert not torch.equal(first.crops, other.crops)
    assert first.class_index == 1
    assert torch.isfinite(first.importance).all() and (first.importance >= 0).all()


@pytest.mark.parametrize(("changes", "message"), [
    ({"n_concepts": 0}, r"n_concepts must be at least 1, got 0"),
    ({"n_concepts": 9}, r"n_concepts must be at most C = 8 \(g's channels\), got 9"),
    ({"crop_size": 1}, r"crop_size must lie in \[2, 16\] pixels"),
    ({"crop_size": 17}, r"crop_size must lie in \[2, 16\] pixels"),
    ({"images": torch.rand(0, 3, 16, 16)}, r"images must hold at least 1 image"),
    ({"images": torch.rand(3, 16, 16)}, r"images must be \(N, 3, S, S\)"),
    ({"n_crops": 2}, r"n_crops must be at least n_concepts = 3, got 2"),
    ({"n_designs": 1}, r"n_designs must be at least 2, got 1"),
    ({"class_index": 4}, r"class_index must lie in \[0, 3\]"),
    ({"g": make_tiny_cnn()[0][:3]}, r"g returned negative activations"),
])
def test_fit_concepts_rejects_bad_input(tiny, changes, message):
    with pytest.raises(ValueError, match=message):
        fit_tiny(tiny, **changes)


def test_concepts_and_maps_reject_bad_input(tiny):
    g, _, images = tiny
    concepts = fit_tiny(tiny)
    with pytest.raises(ValueError, match=r"concept must lie in \[0, 2\], got 3"):
        concepts.top_crops(3, 1)
    with pytest.raises(ValueError, match=r"n must lie in \[1, 32\]"):
        concepts.top_crops(0, 33)
    with pytest.raises(ValueError, match=r"bank must be \(K, C\) with C = 8"):
        concept_maps(g, torch.rand(3, 5), images, 16)
