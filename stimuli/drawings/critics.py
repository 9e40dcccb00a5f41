"""The two critics of Boutin et al. that place a drawer (a model, or people) on the
originality-recognizability plane: how far each drawing strays from its exemplar in the
feature space of a SimCLR encoder, and how often a prototypical network, shown one
exemplar per category, tells which category a drawing belongs to.

Both follow serre-lab/LatentMatters (``Originality_Recognizability.py``), itself after
serre-lab/diversity_vs_recognizability: drawings are min-max scaled and binarized before
either critic; originality is the root-mean-square feature difference to the exemplar in
units of the feature vectors' spread (see :meth:`OriginalityCritic.originality` for where
ours measures that spread); recognizability is the accuracy of 1-shot, 20-way episodes
whose support is the exemplars and whose queries are the drawings.

Both are trained on the corpus passed (callers pass the background split) and judge
drawings of held-out categories. Training is seeded and cached by the corpus's content,
the config, the seed and ``REVISION`` (not the device), so a second call loads. The
defaults train each critic at 48 px in about 40 s on two busy CPU cores.

Letters: N drawings, C categories, S side in pixels, D features, W ways, E episodes.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal, NamedTuple, TypeVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from tqdm import tqdm

from stimuli.cache import TensorCache, seed_from
from stimuli.drawings.corpus import DrawingCorpus
from stimuli.drawings.critic_nets import (
    Augmentation,
    augment,
    conv_encoder,
    nt_xent,
    prototypical_loss,
    squared_distances,
    to_ink,
)

log = logging.getLogger(__name__)

REVISION = 1  # bump when training or scoring changes: cached critics are retrained
_BATCH = 512  # drawings per forward pass when scoring
_T = TypeVar("_T")


class _CriticConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int = Field(32, ge=1, le=256)  # channels of every conv block
    blocks: int = Field(4, ge=1, le=6)  # conv blocks, each halving the side
    features: int = Field(128, ge=2, le=1024)  # D
    steps: int = Field(400, ge=1)  # optimizer steps
    lr: float = Field(1e-3, gt=0)  # Adam
    threshold: float = Field(0.3, gt=0, lt=1)  # binarization, as LatentMatters (0.3)
    augmentation: Augmentation = Augmentation()


class OriginalityConfig(_CriticConfig):
    batch: int = Field(64, ge=2)  # drawings per step (two views each)
    projection: int = Field(64, ge=2)  # SimCLR's head; scores use the features before it
    temperature: float = Field(0.5, gt=0)  # as Boutin et al.'s ContrastiveLoss
    scale_sample: int = Field(2048, ge=2)  # drawings the reference scale is measured on


class RecognizabilityConfig(_CriticConfig):
    ways: int = Field(20, ge=2)  # W of the training episodes
    queries: int = Field(5, ge=1)  # Q per way
    augment: bool = True  # augment support and queries while training


class Recognizability(NamedTuple):
    """``accuracy``: mean of ``correct``, the fraction of each drawing's episodes (N,) in
    which its own exemplar was the nearest prototype."""

    accuracy: float
    correct: np.ndarray


def corpus_digest(corpus: DrawingCorpus) -> str:
    """SHA-256 of the drawings and their labels: the cache key's view of a corpus."""
    h = hashlib.sha256()
    for array in (corpus.images, corpus.labels):
        h.update(str((array.dtype.str, array.shape)).encode())
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


class _Critic:
    """An encoder in eval mode and what it was trained for."""

    def __init__(self, encoder: nn.Module, config: _CriticConfig, size: int,
                 device: torch.device | str):
        self.encoder = encoder.to(device).eval()
        self.config = config
        self.size = size
        self.device = torch.device(device)

    @torch.no_grad()
    def embed(self, drawings: np.ndarray) -> torch.Tensor:
        """uint8 (N, S, S) -> features (N, D) on the critic's device."""
        if drawings.ndim != 3 or drawings.shape[1:] != (self.size, self.size):
            raise ValueError(f"this critic judges ({self.size}, {self.size}) drawings, got "
                             f"shape {drawings.shape}")
        out = [self.encoder(to_ink(drawings[i:i + _BATCH], self.config.threshold,
                                   self.device))
               for i in range(0, len(drawings), _BATCH)]
        if not out:
            return torch.zeros(0, self.config.features, device=self.device)
        return torch.cat(out)


class OriginalityCritic(_Critic):
    """``scale_``: the reference scale of the feature space (see :meth:`originality`)."""

    def __init__(self, encoder: nn.Module, config: OriginalityConfig, size: int,
                 device: torch.device | str, scale: float):
        super().__init__(encoder, config, size, device)
        self.scale_ = scale

    def originality(self, drawings: np.ndarray, exemplars: np.ndarray, *,
                    normalize: Literal["critic", "drawings"] = "critic") -> np.ndarray:
        """Each drawing's distance to its exemplar (both uint8 (N, S, S)) -> (N,).

        As in LatentMatters' ``originality_d``: the root-mean-square over feature
        dimensions of (f(drawing) - f(exemplar)) / s, where s is the typical spread of one
        feature vector across its dimensions (the mean over drawings of their std over D).
        The paper measures s on the drawings being scored (``normalize="drawings"``); by
        default s is the critic's ``scale_``, measured once on its training corpus, so a
        drawing's score does not depend on the batch it came in and drawers compare on
        one scale."""
        if drawings.shape != exemplars.shape:
            raise ValueError(f"drawings {drawings.shape} and exemplars {exemplars.shape} "
                             "must pair up one to one")
        f, g = self.embed(drawings), self.embed(exemplars)  # N D
        if normalize == "critic":
            scale = self.scale_
        elif normalize == "drawings":
            scale = feature_spread(f)
        else:
            raise ValueError(f"normalize must be 'critic' or 'drawings', got {normalize!r}")
        return ((f - g) / scale).pow(2).mean(1).sqrt().cpu().numpy()


class RecognizabilityCritic(_Critic):
    def recognizability(self, drawings: np.ndarray, labels: np.ndarray,
                        exemplars: np.ndarray, *, ways: int = 20, episodes: int = 10,
                        seed: int = 0) -> Recognizability:
        """One-shot classification of drawings (N, S, S) whose categories ``labels`` (N,)
        index ``exemplars`` (C, S, S), one exemplar per category.

        In each of ``episodes`` episodes per drawing, the drawing is classified among its
        own exemplar and the exemplars of ``ways - 1`` other categories drawn at random
        (seeded), by the nearest prototype; a tie counts as a miss. Chance is 1 / ways."""
        labels = np.asarray(labels, dtype=np.int64)
        c = len(exemplars)
        if labels.shape != (len(drawings),):
            raise ValueError(f"labels must be ({len(drawings)},), got {labels.shape}")
        if len(labels) and (labels.min() < 0 or labels.max() >= c):
            raise ValueError(f"labels must index the {c} exemplars")
        if not 2 <= ways <= c:
            raise ValueError(f"ways must be in [2, {c}] (the number of exemplars), got {ways}")
        if episodes < 1:
            raise ValueError(f"episodes must be at least 1, got {episodes}")
        d = squared_distances(self.embed(drawings), self.embed(exemplars)).cpu().numpy()  # N C
        n = len(labels)
        own = d[np.arange(n), labels]  # N
        rng = np.random.default_rng(seed)
        hits = np.zeros(n)
        for _ in range(episodes):
            keys = rng.random((n, c))  # N C: the ways - 1 smallest keys are the distractors
            keys[np.arange(n), labels] = np.inf
            distractors = np.argpartition(keys, ways - 2, axis=1)[:, :ways - 1]  # N W-1
            hits += own < np.take_along_axis(d, distractors, 1).min(1)
        correct = hits / episodes
        return Recognizability(float(correct.mean()) if n else float("nan"), correct)


def feature_spread(features: torch.Tensor) -> float:
    """The mean over drawings of each feature vector's std over its D dimensions."""
    return float(features.std(dim=1).mean().clamp_min(1e-12))


def train_originality_critic(corpus: DrawingCorpus, config: OriginalityConfig, *,
                             seed: int, cache_dir: Path | None = None,
                             device: torch.device | str = "cpu") -> OriginalityCritic:
    """A SimCLR encoder of ``corpus``'s drawings (cached)."""
    cache, inputs = TensorCache(cache_dir), _cache_inputs(corpus, config, seed)
    size = corpus.size
    stored = cache.load("drawing-originality", inputs)
    if stored is None:
        encoder, head = _seeded(seed, lambda: (
            conv_encoder(size, config.width, config.blocks, config.features),
            nn.Sequential(nn.ReLU(), nn.Linear(config.features, config.projection))))
        _fit_simclr(encoder, head, corpus.images, config, seed, device)
        sample = np.random.default_rng(seed_from(seed, "scale")).permutation(
            len(corpus.images))[:config.scale_sample]
        critic = OriginalityCritic(encoder, config, size, device, 0.0)
        critic.scale_ = feature_spread(critic.embed(corpus.images[np.sort(sample)]))
        cache.save("drawing-originality", inputs, {
            "state": _cpu_state(encoder), "scale": critic.scale_, "size": size})
        return critic
    encoder = conv_encoder(stored["size"], config.width, config.blocks, config.features)
    encoder.load_state_dict(stored["state"])
    return OriginalityCritic(encoder, config, stored["size"], device, float(stored["scale"]))


def train_recognizability_critic(corpus: DrawingCorpus, config: RecognizabilityConfig, *,
                                 seed: int, cache_dir: Path | None = None,
                                 device: torch.device | str = "cpu") -> RecognizabilityCritic:
    """A prototypical network trained on ``corpus`` in W-way one-shot episodes (cached)."""
    cache, inputs = TensorCache(cache_dir), _cache_inputs(corpus, config, seed)
    stored = cache.load("drawing-recognizability", inputs)
    if stored is None:
        encoder = _seeded(seed, lambda: conv_encoder(
            corpus.size, config.width, config.blocks, config.features))
        _fit_protonet(encoder, corpus, config, seed, device)
        cache.save("drawing-recognizability", inputs,
                   {"state": _cpu_state(encoder), "size": corpus.size})
        return RecognizabilityCritic(encoder, config, corpus.size, device)
    encoder = conv_encoder(stored["size"], config.width, config.blocks, config.features)
    encoder.load_state_dict(stored["state"])
    return RecognizabilityCritic(encoder, config, stored["size"], device)


def _fit_simclr(encoder: nn.Module, head: nn.Module, images: np.ndarray,
                config: OriginalityConfig, seed: int, device: torch.device | str) -> None:
    """NT-Xent between two augmented views of each drawing of a batch."""
    if len(images) < 2:
        raise ValueError("SimCLR needs at least 2 drawings")
    encoder.to(device).train()
    head.to(device).train()
    rng = np.random.default_rng(seed_from(seed, "batches"))
    gen = torch.Generator(device=device).manual_seed(seed_from(seed, "views"))
    optimizer = torch.optim.Adam([*encoder.parameters(), *head.parameters()], lr=config.lr)
    batch = min(config.batch, len(images))
    start, loss = time.perf_counter(), torch.tensor(float("nan"))
    for _ in tqdm(range(config.steps), desc="originality critic", unit="step",
                  disable=None, leave=False):
        rows = np.sort(rng.choice(len(images), batch, replace=False))
        x = to_ink(images[rows], config.threshold, device)  # B 1 S S
        views = torch.cat([augment(x, config.augmentation, gen, config.threshold)
                           for _ in range(2)])  # 2B 1 S S
        z = head(encoder(views))  # 2B P
        loss = nt_xent(z[:batch], z[batch:], config.temperature)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    log.info("originality critic: %d steps in %.1f s, NT-Xent %.3f", config.steps,
             time.perf_counter() - start, loss.item())
    encoder.eval()


def _fit_protonet(encoder: nn.Module, corpus: DrawingCorpus, config: RecognizabilityConfig,
                  seed: int, device: torch.device | str) -> None:
    """W-way one-shot episodes: one drawing of each way is its prototype, Q others query."""
    rows = [np.flatnonzero(corpus.labels == c) for c in range(len(corpus.categories))]
    usable = [r for r in rows if len(r) >= 2]  # a support and at least one query
    if len(usable) < config.ways:
        raise ValueError(f"{config.ways}-way episodes need {config.ways} categories with at "
                         f"least 2 drawings; the corpus has {len(usable)}")
    encoder.to(device).train()
    rng = np.random.default_rng(seed_from(seed, "episodes"))
    gen = torch.Generator(device=device).manual_seed(seed_from(seed, "views"))
    optimizer = torch.optim.Adam(encoder.parameters(), lr=config.lr)
    w, q = config.ways, config.queries
    start, loss = time.perf_counter(), torch.tensor(float("nan"))
    for _ in tqdm(range(config.steps), desc="recognizability critic", unit="step",
                  disable=None, leave=False):
        support, queries = [], []
        for way in rng.choice(len(usable), w, replace=False):
            drawn = rng.permutation(usable[way])
            support.append(drawn[0])
            queries.append(rng.choice(drawn[1:], q, replace=len(drawn) - 1 < q))
        picked = np.concatenate([support, *queries])  # W + W*Q, queries way by way
        x = to_ink(corpus.images[picked], config.threshold, device)  # (W+W*Q) 1 S S
        if config.augment:
            x = augment(x, config.augmentation, gen, config.threshold)
        f = encoder(x)  # (W+W*Q) D
        loss = prototypical_loss(f[:w], f[w:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    log.info("recognizability critic: %d steps in %.1f s, loss %.3f", config.steps,
             time.perf_counter() - start, loss.item())
    encoder.eval()


def _cache_inputs(corpus: DrawingCorpus, config: _CriticConfig, seed: int) -> dict:
    return {"corpus": corpus_digest(corpus), "config": config.model_dump(mode="json"),
            "seed": seed, "revision": REVISION}


def _seeded(seed: int, build: Callable[[], _T]) -> _T:
    """Build modules with their initial weights drawn from ``seed``, leaving torch's global
    generator as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_from(seed, "init"))
        return build()


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}
