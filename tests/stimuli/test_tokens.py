"""Token layers (N, T, C) of a vision transformer: neurons, dictionary features and
importance, with and without the CLS token, checked against computations on the raw tokens.

The transformer is defined here (patch embedding, CLS token, two pre-norm blocks, a head on
the CLS token; about 5,000 parameters, random weights)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stimuli.activations import pool, sample_positions, to_positions, unit_scores
from stimuli.exemplars import ExemplarSearch
from stimuli.importance import unit_importance
from stimuli.models import LayerCapture, channels_first, edit_layer
from stimuli.nmf import NMF
from stimuli.sae import TopKSAE


class Block(nn.Module):
    """Pre-norm attention then MLP, each around a residual connection: (N, T, C) -> same."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        h = self.norm1(t)
        t = t + self.attn(h, h, h, need_weights=False)[0]
        return t + self.mlp(self.norm2(t))


class TinyViT(nn.Module):
    """16 px images in 4 x 4 patches: T = 1 + 16 tokens of C = 16 channels; 5 classes."""

    def __init__(self, *, size: int = 16, patch: int = 4, dim: int = 16, classes: int = 5):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.pos = nn.Parameter(0.5 * torch.randn(1, 1 + (size // patch) ** 2, dim))
        self.blocks = nn.Sequential(Block(dim, 2), Block(dim, 2))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)  # N, P, C
        t = torch.cat([self.cls.expand(len(t), -1, -1), t], dim=1) + self.pos  # N, T, C
        return self.head(self.norm(self.blocks(t)[:, 0]))


RESIDUAL = "blocks.1"  # N, 17, 16: the residual stream after the last block
HIDDEN = "blocks.1.mlp.1"  # N, 17, 32: the last MLP's ReLU, non-negative (for NMF)
EARLY = "blocks.0.mlp.1"  # N, 17, 32: the first MLP's ReLU, whose patch tokens do matter


@pytest.fixture
def vit() -> TinyViT:
    torch.manual_seed(0)
    return TinyViT().eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(12, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def raw_tokens(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """The layer's output as the model made it, (N, T, C), captured without our hooks."""
    out = {}
    module = dict(model.named_modules())[layer]
    handle = module.register_forward_hook(lambda _m, _i, o: out.setdefault("t", o.detach()))
    with torch.no_grad():
        model(x)
    handle.remove()
    return out["t"]


def batches_of(x: torch.Tensor, size: int = 5):
    for start in range(0, len(x), size):
        yield torch.arange(start, min(start + size, len(x))), x[start : start + size]


@pytest.mark.parametrize("cls_token", [True, False])
def test_tokens_are_read_channels_first_and_pooled_over_tokens(vit, images, cls_token):
    tokens = raw_tokens(vit, RESIDUAL, images)  # N, T, C
    assert tokens.shape == (12, 17, 16)
    kept = tokens if cls_token else tokens[:, 1:]  # N, T', C
    with torch.no_grad(), LayerCapture(vit, [RESIDUAL], cls_token=cls_token) as cap:
        vit(images)
    acts = cap.outputs[RESIDUAL]
    assert acts.shape == (12, 16, kept.shape[1], 1)
    assert torch.equal(acts[..., 0], kept.transpose(1, 2))
    assert torch.allclose(pool(acts, "mean"), kept.mean(dim=1), atol=1e-6)
    assert torch.equal(pool(acts, "max"), kept.amax(dim=1))
    assert torch.equal(to_positions(acts), kept.reshape(-1, 16))  # one row per token
    encoder = nn.Linear(16, 3)  # any map (M, C) -> (M, K), applied per token
    with torch.no_grad():
        scores = unit_scores(acts, encoder, "mean")
        manual = encoder(kept).mean(dim=1)  # N, K
    assert torch.allclose(scores, manual, atol=1e-6)


def test_exemplar_search_on_tokens_matches_a_full_sort(vit, images):
    dictionary = torch.rand(4, 32, generator=torch.Generator().manual_seed(2))

    def encoder(m: torch.Tensor) -> torch.Tensor:
        return m @ dictionary.T  # M, 32 -> M, 4

    units = {(RESIDUAL, "neuron"): None, (HIDDEN, "nmf"): encoder}
    search = ExemplarSearch(3, pooling="max", cls_token=False).fit(vit, units, batches_of(images))
    residual = raw_tokens(vit, RESIDUAL, images)[:, 1:].amax(dim=1)  # N, 16
    hidden = encoder(raw_tokens(vit, HIDDEN, images)[:, 1:]).amax(dim=1)  # N, 4
    for key, full in (((RESIDUAL, "neuron"), residual), ((HIDDEN, "nmf"), hidden)):
        top = full.T.topk(3, dim=1)  # U, 3
        assert torch.allclose(search.extremes_[key].top_values_, top.values, atol=1e-6)
        bottom = (-full.T).topk(3, dim=1)
        assert torch.allclose(search.extremes_[key].bottom_values_, -bottom.values, atol=1e-6)


@pytest.mark.parametrize("cls_token", [True, False])
def test_the_cls_token_counts_only_when_asked(vit, images, cls_token):
    """A CLS token blown up at the layer changes every score if it counts, none if not."""

    def search() -> torch.Tensor:
        found = ExemplarSearch(2, cls_token=cls_token).fit(
            vit,
            {(RESIDUAL, "neuron"): None, (RESIDUAL, "sum"): lambda m: m.sum(1, True)},
            batches_of(images),
        )
        return torch.cat([e.top_values_ for e in found.extremes_.values()])

    clean = search()
    layer = dict(vit.named_modules())[RESIDUAL]
    handle = layer.register_forward_hook(
        lambda _m, _i, out: torch.cat([out[:, :1] + 100, out[:, 1:]], dim=1)
    )
    try:
        blown = search()
    finally:
        handle.remove()
    if cls_token:
        assert (blown - clean).abs().min() > 1  # the mean over 17 tokens moved by 100/17
    else:
        assert torch.equal(blown, clean)


def test_positions_are_tokens_and_dictionaries_fit_on_them(vit, images):
    gen = torch.Generator().manual_seed(0)
    positions = sample_positions(
        vit,
        [HIDDEN, RESIDUAL],
        batches_of(images),
        per_image=5,
        max_samples=1000,
        generator=gen,
        cls_token=False,
    )
    assert positions[HIDDEN].shape == (12 * 5, 32)
    assert positions[RESIDUAL].shape == (12 * 5, 16)
    tokens = raw_tokens(vit, RESIDUAL, images)  # N, T, C
    # every sample is one of the image's patch tokens, never its CLS token
    dist = torch.cdist(positions[RESIDUAL].reshape(12, 5, 16), tokens)  # N, 5, T
    nearest = dist.argmin(dim=2)
    assert torch.allclose(dist.amin(dim=2), torch.zeros(12, 5), atol=1e-4)
    assert (nearest > 0).all()
    assert len(set(nearest.flatten().tolist())) > 5  # spread over the tokens

    everything = sample_positions(
        vit,
        [RESIDUAL],
        batches_of(images),
        per_image=100,
        max_samples=10_000,
        generator=gen,
        cls_token=True,
    )[RESIDUAL]
    assert everything.shape == (12 * 17, 16)  # all tokens, CLS included

    X = positions[HIDDEN]
    nmf = NMF(6, max_iter=30, random_state=0).fit(X)
    sae = TopKSAE(6, k=2, epochs=3, random_state=0).fit(positions[RESIDUAL])
    assert nmf.get_dictionary().shape == (6, 32)
    assert sae.get_dictionary().shape == (6, 16)
    search = ExemplarSearch(2, cls_token=False).fit(
        vit,
        {(HIDDEN, "nmf"): nmf.transform, (RESIDUAL, "sae"): sae.encode},
        batches_of(images),
    )
    assert search.extremes_[(HIDDEN, "nmf")].top_values_.shape == (6, 2)
    assert search.extremes_[(RESIDUAL, "sae")].top_values_.shape == (6, 2)
    codes = nmf.transform(raw_tokens(vit, HIDDEN, images)[:, 1:].reshape(-1, 32))
    expected = codes.reshape(12, 16, 6).mean(dim=1).T.topk(2, dim=1).values  # K, 2
    assert torch.allclose(search.extremes_[(HIDDEN, "nmf")].top_values_, expected, atol=1e-5)


def drop(model: nn.Module, layer: str, x: torch.Tensor, edit) -> torch.Tensor:
    """Mean drop in the predicted class's probability when ``edit`` rewrites the raw
    (N, T, C) output of ``layer`` (a manual importance)."""
    with torch.no_grad():
        p = torch.softmax(model(x), dim=1)
        pred = p.argmax(dim=1, keepdim=True)
        handle = dict(model.named_modules())[layer].register_forward_hook(
            lambda _m, _i, out: edit(out.clone())
        )
        try:
            q = torch.softmax(model(x), dim=1)
        finally:
            handle.remove()
    return (p.gather(1, pred) - q.gather(1, pred)).mean()


def zero_channel(c: int, first: int):
    def edit(t: torch.Tensor) -> torch.Tensor:
        t[:, first:, c] = 0
        return t

    return edit


@pytest.mark.parametrize("cls_token", [True, False])
def test_neuron_importance_is_zeroing_the_channel_in_the_tokens(vit, images, cls_token):
    units = [0, 5, 11]
    got = unit_importance(vit, "blocks.0", images, units, cls_token=cls_token, batch_size=5)
    first = 0 if cls_token else 1
    expected = torch.stack([drop(vit, "blocks.0", images, zero_channel(c, first)) for c in units])
    assert torch.allclose(got, expected, atol=1e-6)
    assert got.abs().max() > 1e-4


def test_without_cls_the_last_layer_cannot_matter(vit, images):
    """The head reads only the CLS token after the last block: edits that leave it untouched
    cannot change the prediction, and edits that include it do."""
    units = [0, 5, 11]
    without = unit_importance(vit, RESIDUAL, images, units, cls_token=False)
    assert torch.equal(without, torch.zeros(3))
    with_cls = unit_importance(vit, RESIDUAL, images, units, cls_token=True)
    assert with_cls.abs().min() > 1e-4


def test_feature_importance_removes_codes_times_atom_from_each_token(vit, images):
    gen = torch.Generator().manual_seed(3)
    dictionary = torch.rand(4, 32, generator=gen)  # K, C

    def encoder(m: torch.Tensor) -> torch.Tensor:
        return m @ dictionary.T / 10  # M, K

    got = unit_importance(
        vit, EARLY, images, [1, 3], encoder=encoder, dictionary=dictionary, cls_token=False
    )

    def remove(k: int):
        def edit(t: torch.Tensor) -> torch.Tensor:  # N, T, C
            t[:, 1:] -= encoder(t[:, 1:])[..., k : k + 1] * dictionary[k]
            return t

        return edit

    expected = torch.stack([drop(vit, EARLY, images, remove(k)) for k in (1, 3)])
    assert torch.allclose(got, expected, atol=1e-6)
    assert got.abs().max() > 1e-4
    # the identity dictionary makes feature k neuron k
    eye = torch.eye(32)
    as_features = unit_importance(
        vit, EARLY, images, [2, 7], encoder=lambda m: m, dictionary=eye, cls_token=False
    )
    as_neurons = unit_importance(vit, EARLY, images, [2, 7], cls_token=False)
    assert torch.allclose(as_features, as_neurons, atol=1e-6)


class Volume(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, None, None]  # N, T, 1, 1, C


@pytest.mark.parametrize(
    ("output", "cls_token", "message"),
    [
        (
            torch.zeros(2, 3, 1, 4, 4),
            True,
            r"^layer 'l' returns shape \(2, 3, 1, 4, 4\); expected \(N, C\), tokens \(N, T, C\) "
            r"or \(N, C, H, W\)$",
        ),
        (torch.zeros(2), True, r"^layer 'l' returns shape \(2,\)"),
        (
            (torch.zeros(2, 3), None),
            True,
            r"^layer 'l' returns tuple, not a single tensor; choose a submodule that returns one$",
        ),
        (
            torch.zeros(2, 1, 8),
            False,
            r"^layer 'l' has a single token; cls_token=False leaves none$",
        ),
    ],
)
def test_layouts_that_cannot_work(output, cls_token, message):
    with pytest.raises(ValueError, match=message):
        channels_first(output, "l", cls_token=cls_token)


def test_bad_layouts_through_the_hooks(vit, images):
    vit.blocks.append(Volume())  # would break the model anyway: only the capture is tested
    with (
        pytest.raises(ValueError, match=r"^layer 'blocks.2' returns shape \(12, 17, 1, 1, 16\)"),
        LayerCapture(vit, ["blocks.2"]),
    ):
        vit(images)
    with (
        pytest.raises(ValueError, match="^layer 'blocks.0.attn' returns tuple"),
        LayerCapture(vit, ["blocks.0.attn"]),
    ):
        vit(images)
    with (
        pytest.raises(ValueError, match=r"^an edit returned shape \(12, 16, 17\), expected "),
        edit_layer(vit, "blocks.0", lambda acts: acts[..., 0]),
    ):
        vit(images)
    with pytest.raises(ValueError, match=r"^expected activations \(N, C\) or \(N, C, H, W\), "):
        pool(torch.zeros(2, 17, 16))


def make_tiny_vit() -> TinyViT:
    """A seeded TinyViT, for builds that name it as a model factory."""
    torch.manual_seed(0)
    return TinyViT().eval()
