"""Shortcut datasets: the latent features land where and how the spec says, and the bias of
a trained model moves the way Hermann et al. (2024) found (a hidden ReLU layer raises it)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from sklearn.linear_model import LogisticRegression
from torch import nn

from stimuli.lipschitz import train_classifier
from stimuli.shortcuts import ShortcutSpec, make_dataset, shortcut_bias


def test_features_follow_their_predictivity_and_regions():
    spec = ShortcutSpec(size=32, core_predictivity=1.0, shortcut_predictivity=0.8)
    data = make_dataset(spec, 2000, seed=0)
    assert data.images.shape == (2000, 3, 32, 32) and data.regions.shape == (2000, 2, 32, 32)
    assert float(data.images.min()) >= 0 and float(data.images.max()) <= 1
    assert torch.equal(data.core, data.labels)
    agree = float((data.shortcut == data.labels).float().mean())
    assert agree == pytest.approx(0.8, abs=0.03)
    core, cue = data.regions[:, 0], data.regions[:, 1]
    assert not (core & cue).any()  # the shape never touches the shortcut's quarter
    assert not cue[:, 16:, :].any() and not cue[:, :, 16:].any()
    # the colour patch is red where the shortcut says class 0, blue where it says class 1
    red = (data.images[:, 0] - data.images[:, 2])[cue].view(len(data), -1).mean(dim=1)
    assert bool(((red > 0) == (data.shortcut == 0)).all())
    # the shape is darker than the background
    assert float(data.images.mean(dim=1)[core].mean()) < 0.45


def test_conflict_and_agreement_sets_and_seeds():
    spec = ShortcutSpec(shortcut="position")
    conflict = make_dataset(spec, 200, seed=1, conflict=True)
    agree = make_dataset(spec, 200, seed=1, conflict=False)
    assert bool((conflict.shortcut != conflict.core).all())
    assert bool((agree.shortcut == agree.core).all())
    # the position marker lies on the left half of the quarter for class 0, right for 1
    columns = torch.arange(32).view(1, 1, 32)
    x = (conflict.regions[:, 1] * columns).sum(dim=(1, 2)) / conflict.regions[:, 1].sum(dim=(1, 2))
    assert bool(((x >= 8) == (conflict.shortcut == 1)).all())
    again = make_dataset(spec, 200, seed=1, conflict=True)
    assert torch.equal(again.images, conflict.images)
    assert not torch.equal(make_dataset(spec, 200, seed=2).images, conflict.images)


@pytest.mark.parametrize("bad, match", [
    ({"shortcut": "texture"}, "shortcut"),
    ({"shortcut_predictivity": 0.2}, "shortcut_predictivity"),
    ({"core_availability": 0}, "core_availability"),
    ({"classes": ["A", "A"]}, "two distinct"),
    ({"colour": "red"}, "colour"),
])
def test_bad_specs_name_the_problem(bad, match):
    with pytest.raises(ValidationError, match=match):
        ShortcutSpec(**bad)
    with pytest.raises(ValueError, match="at least one image"):
        make_dataset(ShortcutSpec(), 0, seed=0)


def _centered(x: torch.Tensor) -> torch.Tensor:
    return (x - 0.5) * 4


@pytest.mark.parametrize("seed", [0, 1])
def test_a_hidden_relu_layer_raises_shortcut_bias_over_a_linear_model(seed):
    """Both features at fixed places (each one direction in pixel space, as in the seed);
    the shape is fully predictive but faint, the colour 90 % predictive and vivid. The
    linear model (logistic regression to convergence: the maximum-likelihood weights, which
    do not depend on a feature's scale) follows the shape; the ReLU network leans on the
    colour."""
    spec = ShortcutSpec(size=16, placement="fixed", core_availability=0.3,
                        shortcut_availability=1.0, noise=0.1)
    data = make_dataset(spec, 1000, seed=seed)
    flat = _centered(data.images).flatten(1).numpy()
    linear = LogisticRegression(C=1e4, max_iter=3000).fit(flat, data.labels.numpy())
    linear_bias = shortcut_bias(
        lambda x: torch.from_numpy(linear.predict(_centered(x).flatten(1).numpy())),
        spec, n=500, seed=seed + 100)
    torch.manual_seed(seed)
    relu = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 64), nn.ReLU(), nn.Linear(64, 2))
    trained = train_classifier(relu, _centered(data.images), data.labels, epochs=20,
                               lr=1e-3, seed=seed).model
    relu_bias = shortcut_bias(lambda x: trained(_centered(x)).argmax(1), spec, n=500,
                              seed=seed + 100)
    assert linear_bias < 0.15
    assert relu_bias > linear_bias + 0.12
