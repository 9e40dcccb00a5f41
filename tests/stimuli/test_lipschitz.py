"""The two models trained on one shortcut dataset: the 1-Lipschitz CNN stays 1-Lipschitz
(checked numerically, where the unconstrained one is not), and following its saliency flips
its decision, no sooner than its certified radius allows."""

from __future__ import annotations

import pytest
import torch

from stimuli.lipschitz import (
    certified_radius,
    lipschitz_cnn,
    lipschitz_constant,
    robustness,
    small_cnn,
    train_classifier,
)
from stimuli.shortcuts import ShortcutSpec, make_dataset

SPEC = ShortcutSpec(size=16)


@pytest.fixture(scope="module")
def data():
    return make_dataset(SPEC, 1000, seed=0), make_dataset(SPEC, 200, seed=1)


@pytest.fixture(scope="module")
def lipschitz(data):
    train, _ = data
    torch.manual_seed(0)
    return train_classifier(lipschitz_cnn(2, size=16), train.images, train.labels, loss="hkr",
                            epochs=4, seed=0)


@pytest.fixture(scope="module")
def plain(data):
    train, _ = data
    torch.manual_seed(0)
    return train_classifier(small_cnn(2, size=16), train.images, train.labels, epochs=3,
                            seed=0)


def test_both_models_learn_the_task(data, plain, lipschitz):
    _, test = data
    for report in (plain, lipschitz):
        with torch.no_grad():
            accuracy = float((report.model(test.images).argmax(1) == test.labels)
                             .float().mean())
        assert accuracy > 0.85, report
        assert report.losses[-1] < report.losses[0]
        assert not report.model.training
    # the exported 1-Lipschitz model is plain torch layers under the same names
    assert type(lipschitz.model[0]) is torch.nn.Conv2d
    assert set(lipschitz.model.state_dict()) == set(small_cnn(2, size=16).state_dict())


def test_lipschitz_constant_is_at_most_one(data, plain, lipschitz):
    _, test = data
    assert lipschitz_constant(lipschitz.model, test.images[:32]) <= 1.0 + 1e-4
    # the same check finds the unconstrained CNN's constant above 1
    assert lipschitz_constant(plain.model, test.images[:32]) > 1.0


def test_following_its_saliency_flips_the_decision(data, lipschitz):
    """Steps along the gradient of the runner-up's logit minus the decided one's: the class
    flips within a few radii, never before the certified radius."""
    _, test = data
    model = lipschitz.model
    x = test.images[:64]
    with torch.no_grad():
        logits = model(x)
    decided = logits.argmax(1)
    radius = certified_radius(logits, decided)
    step, walked = 0.02, torch.zeros(len(x))
    point, flipped = x.clone(), torch.zeros(len(x), dtype=torch.bool)
    for _ in range(400):
        point.requires_grad_(True)
        out = model(point)
        margin = out.gather(1, (1 - decided)[:, None])[:, 0] - out.gather(1, decided[:, None])[:, 0]
        (grad,) = torch.autograd.grad(margin.sum(), point)
        with torch.no_grad():
            unit = grad / grad.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, 1, 1, 1)
            moving = ~flipped
            point = point.detach() + step * unit * moving.view(-1, 1, 1, 1)
            walked += step * moving
            flipped |= model(point).argmax(1) != decided
        if flipped.all():
            break
    assert float(flipped.float().mean()) >= 0.95
    assert bool((walked[flipped] >= radius[flipped] - step).all())


def test_certified_radius_and_robustness(data, lipschitz):
    _, test = data
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.5, 0.0]])
    radius = certified_radius(logits, torch.tensor([0, 0, 0]))
    torch.testing.assert_close(radius, torch.tensor([2 / 2 ** 0.5, 0.0, 0.5 / 2 ** 0.5]))
    x, y = test.images[:64], test.labels[:64]
    clean = robustness(lipschitz.model, x, y, eps=1e-6)
    attacked = robustness(lipschitz.model, x, y, eps=2.0)
    assert attacked < clean  # the attack is real
    with torch.no_grad():
        certified = float((certified_radius(lipschitz.model(x), y) > 0.1).float().mean())
    assert robustness(lipschitz.model, x, y, eps=0.1) >= certified  # no attack beats a bound


def test_bad_training_input():
    with pytest.raises(ValueError, match="loss: 'ce' or 'hkr'"):
        train_classifier(small_cnn(2, size=16), torch.zeros(2, 3, 16, 16),
                         torch.zeros(2, dtype=torch.long), loss="mse")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="the same non-zero number"):
        train_classifier(small_cnn(2, size=16), torch.zeros(2, 3, 16, 16),
                         torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="multiple of 4"):
        lipschitz_cnn(2, size=18)
