"""The one-shot drawing models: each regularizer shapes the latent space as it should, the
diffusion model draws the exemplar's category, training is seeded, cached and resumable.

Tiny synthetic corpora at 16 px; one thread (the runs are too small to gain from more, and
the CI machine is shared). Every property is compared with, or bounded away from, what an
unregularized autoencoder (weight 0) gives.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import stimuli.drawings.autoencoder as autoencoder_module
from stimuli.drawings.augment import augment
from stimuli.drawings.autoencoder import AutoencoderConfig, as_input, train_autoencoder
from stimuli.drawings.diffusion import DiffusionConfig, train_diffusion
from stimuli.drawings.regularizers import REGULARIZERS, cross_correlation, make_regularizer
from tests.drawings.synthetic import synthetic_corpus

SMALL = {"epochs": 25, "batch_size": 32, "latent_dim": 16, "channels": 16}
PER_CATEGORY, TRAIN_PER_CATEGORY = 20, 15


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpora():
    """16 background categories, their drawings split into training and held-out."""
    full = synthetic_corpus(16, PER_CATEGORY, 16, jitter=0.07, seed=1)
    rows = np.arange(len(full.labels)) % PER_CATEGORY < TRAIN_PER_CATEGORY
    train = dataclasses.replace(full, images=full.images[rows], labels=full.labels[rows],
                                drawers=full.drawers[rows])
    held = dataclasses.replace(full, images=full.images[~rows], labels=full.labels[~rows],
                               drawers=full.drawers[~rows])
    return train, held


@pytest.fixture(scope="module")
def trained(corpora, tmp_path_factory):
    """An autoencoder per regularizer at its default weight, and a plain one (weight 0)."""
    cache = tmp_path_factory.mktemp("models")
    train, _ = corpora
    models = {name: train_autoencoder(train, AutoencoderConfig(regularizer=name, **SMALL),
                                      seed=0, cache_dir=cache) for name in REGULARIZERS}
    models["plain"] = train_autoencoder(
        train, AutoencoderConfig(regularizer="classification", weight=0, **SMALL), seed=0,
        cache_dir=cache)
    return models


def latents(model, corpus) -> tuple[torch.Tensor, torch.Tensor]:
    return model.encode_images(corpus.images), torch.from_numpy(corpus.labels)


def centroid_accuracy(model, train, held) -> float:
    """Held-out drawings classified by the nearest category mean of the training latents."""
    z_train, y_train = latents(model, train)
    z_held, y_held = latents(model, held)
    means = torch.stack([z_train[y_train == c].mean(0) for c in y_train.unique()])
    return float((torch.cdist(z_held, means).argmin(1) == y_held).float().mean())


def fisher_ratio(z: torch.Tensor, y: torch.Tensor) -> float:
    """Between-category over within-category scatter of latents (N, D)."""
    mu, within, between = z.mean(0), 0.0, 0.0
    for c in y.unique():
        zc = z[y == c]
        within += float(((zc - zc.mean(0)) ** 2).sum())
        between += len(zc) * float(((zc.mean(0) - mu) ** 2).sum())
    return between / within


def two_views(model, corpus) -> tuple[torch.Tensor, torch.Tensor]:
    x = as_input(corpus.images, "cpu")
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        return model.encode(augment(x, generator)), model.encode(augment(x, generator))


def test_every_autoencoder_reconstructs(trained, corpora):
    _, held = corpora
    x = as_input(held.images, "cpu")
    mean_image_error = float((x - x.mean(0)).abs().mean())
    for name, model in trained.items():
        with torch.no_grad():
            error = float((model.decode(model.encode(x)) - x).abs().mean())
        # the VAE's sampling noise slows its start most: 25 epochs of 240 drawings
        bound = 0.95 if name == "kl" else 0.85
        assert error < bound * mean_image_error, (name, error, mean_image_error)


def test_classification_makes_categories_linearly_separable(trained, corpora):
    train, held = corpora
    model, plain = trained["classification"], trained["plain"]
    z, y = latents(model, held)
    head_accuracy = float((model.regularizer.head(z).argmax(1) == y).float().mean())
    assert head_accuracy > 0.6  # chance is 1/16
    z_train, y_train = latents(model, train)
    assert fisher_ratio(z_train, y_train) > 1.5 * fisher_ratio(*latents(plain, train))


def test_vq_latents_are_codebook_rows(trained, corpora):
    model = trained["vq"]
    z, _ = latents(model, corpora[1])
    codebook = model.regularizer.codebook.detach()  # K, W
    words = z.reshape(-1, codebook.shape[1])
    exact = (words[:, None, :] == codebook[None]).all(dim=2).any(dim=1)
    assert bool(exact.all())
    assert len(torch.unique(words, dim=0)) > 16  # the codebook is used, not one row
    assert torch.equal(model.regularizer.project(z + 1e-3), z)


def test_kl_matches_the_prior(trained, corpora, tmp_path):
    def gaussian_kl(model) -> float:
        """KL(N(mean, var) || N(0, 1)) of the aggregate posterior, per dimension."""
        x = as_input(corpora[1].images, "cpu")
        with torch.no_grad():
            mean, logvar = model.encoder(x).chunk(2, dim=1)
        var = mean.var(0) + logvar.exp().mean(0)
        mu = mean.mean(0)
        return float((0.5 * (var + mu**2 - 1 - var.log())).mean())

    kl = gaussian_kl(trained["kl"])
    plain_kl = train_autoencoder(
        corpora[0], AutoencoderConfig(regularizer="kl", weight=0, **SMALL), seed=0,
        cache_dir=tmp_path)
    assert kl < 0.1
    assert gaussian_kl(plain_kl) > 3 * kl


def test_prototype_latents_classify_by_nearest_prototype(trained, corpora):
    accuracy = centroid_accuracy(trained["prototype"], *corpora)
    assert accuracy > 0.8
    assert accuracy > centroid_accuracy(trained["plain"], *corpora) + 0.05


def test_simclr_brings_views_of_a_drawing_together(trained, corpora):
    def alignment(model) -> float:
        """Mean cosine of a drawing's two views minus that of two different drawings."""
        a, b = two_views(model, corpora[1])
        sim = F.normalize(a, dim=1) @ F.normalize(b, dim=1).T
        twin = torch.eye(len(a), dtype=torch.bool)
        return float(sim[twin].mean() - sim[~twin].mean())

    assert alignment(trained["simclr"]) > 0.6
    assert alignment(trained["simclr"]) > 2 * alignment(trained["plain"])


def test_barlow_decorrelates_views_towards_identity(trained, corpora):
    def distance(model) -> float:
        c = cross_correlation(*two_views(model, corpora[1]))
        return float(((c - torch.eye(len(c))) ** 2).sum())

    assert distance(trained["barlow"]) < 0.75 * distance(trained["plain"])


def test_training_resumes_after_an_interruption_and_reuses_a_finished_run(
        corpora, tmp_path, monkeypatch):
    train = corpora[0]
    config = AutoencoderConfig(regularizer="simclr", **{**SMALL, "epochs": 4})
    straight = train_autoencoder(train, config, seed=3, cache_dir=tmp_path / "straight")
    real_epoch, epochs_run = autoencoder_module._train_epoch, []

    def interrupted(*args, epoch, **kwargs):
        if epoch == 2:
            raise KeyboardInterrupt
        epochs_run.append(epoch)
        return real_epoch(*args, epoch=epoch, **kwargs)

    monkeypatch.setattr(autoencoder_module, "_train_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_autoencoder(train, config, seed=3, cache_dir=tmp_path / "resumed")
    assert epochs_run == [0, 1]
    monkeypatch.setattr(autoencoder_module, "_train_epoch", lambda *a, epoch, **k: (
        epochs_run.append(epoch), real_epoch(*a, epoch=epoch, **k))[1])
    resumed = train_autoencoder(train, config, seed=3, cache_dir=tmp_path / "resumed")
    assert epochs_run == [0, 1, 2, 3]  # only the unfinished epochs ran again
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name

    def never(*args, **kwargs):
        raise AssertionError("a finished checkpoint must not train again")

    monkeypatch.setattr(autoencoder_module, "_train_epoch", never)
    again = train_autoencoder(train, config, seed=3, cache_dir=tmp_path / "resumed")
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(),
                                                 again.state_dict().values(), strict=True))


DIFFUSION = {"epochs": 4, "steps_per_epoch": 150, "batch_size": 128, "width": 128,
             "blocks": 2, "lr": 2e-3, "sampling_steps": 20}


@pytest.fixture(scope="module")
def one_shot(tmp_path_factory):
    """An autoencoder and a diffusion model trained on 12 background categories; 4
    evaluation categories held out."""
    corpus = synthetic_corpus(16, 20, 16, evaluation=4, jitter=0.05, seed=2)
    background, evaluation = corpus.split("background"), corpus.split("evaluation")
    cache = tmp_path_factory.mktemp("one-shot")
    ae = train_autoencoder(background, AutoencoderConfig(regularizer="prototype", **SMALL),
                           seed=0, cache_dir=cache)
    model = train_diffusion(ae, background, DiffusionConfig(**DIFFUSION), seed=0,
                            cache_dir=cache)
    return model, background, evaluation, cache


def test_drawings_are_of_the_exemplars_held_out_category(one_shot):
    model, _, evaluation, _ = one_shot
    labels = evaluation.labels
    exemplar_rows = [int(np.flatnonzero(labels == c)[0]) for c in range(4)]
    drawings = model.draw(evaluation.images[exemplar_rows], 10, seed=0)
    assert drawings.shape == (4, 10, 16, 16) and drawings.dtype == np.uint8
    others = np.setdiff1d(np.arange(len(labels)), exemplar_rows)  # not the exemplars
    ae = model.autoencoder
    means = torch.stack([ae.encode_images(evaluation.images[others][labels[others] == c])
                         .mean(0) for c in range(4)])
    z = ae.encode_images(drawings.reshape(-1, 16, 16))
    nearest = torch.cdist(z, means).argmin(1).numpy()
    accuracy = float((nearest == np.repeat(np.arange(4), 10)).mean())
    assert accuracy > 0.6  # chance is 1/4
    assert len(np.unique(drawings.reshape(40, -1), axis=0)) == 40  # not copies
    assert drawings.reshape(4, 10, -1).std(axis=1).mean() > 1  # they vary


def test_same_seed_same_weights_same_drawings(one_shot):
    model, background, evaluation, cache = one_shot
    exemplars = evaluation.images[:3]
    first = model.draw(exemplars, 4, seed=11)
    assert np.array_equal(first, model.draw(exemplars, 4, seed=11))
    assert not np.array_equal(first, model.draw(exemplars, 4, seed=12))
    retrained = train_diffusion(model.autoencoder, background, DiffusionConfig(**DIFFUSION),
                                seed=0, cache_dir=cache.parent / "fresh")
    assert np.array_equal(first, retrained.draw(exemplars, 4, seed=11))
    assert not np.array_equal(first, model.draw(exemplars, 4, seed=11, guidance=0.0))


def test_bad_inputs_are_refused(one_shot):
    model = one_shot[0]
    with pytest.raises(ValueError, match="exemplars must be uint8"):
        model.draw(np.zeros((2, 16, 16), dtype=np.float32), 2, seed=0)
    with pytest.raises(ValueError, match="positive number"):
        model.draw(np.zeros((2, 16, 16), dtype=np.uint8), 0, seed=0)
    with pytest.raises(ValueError, match="unknown regularizer"):
        make_regularizer("dropout", 16, 4)
