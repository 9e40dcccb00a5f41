"""Regularized autoencoders of drawings (Boutin et al. 2024): a small conv encoder and
decoder around a latent vector whose geometry one of six regularizers shapes
(regularizers.py). The latent diffusion model (diffusion.py) draws in that latent space.

Training minimizes the binary cross-entropy of the ink (summed over pixels, averaged over
drawings) plus ``weight`` times the regularizer's loss; it is seeded, resumable after any
finished epoch, and cached by the corpus's content, the config and the seed (training.py).
Letters: N drawings, S side in pixels, D latent dimensions, C channels.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from tqdm import tqdm

from stimuli.drawings.augment import augment
from stimuli.drawings.corpus import DrawingCorpus
from stimuli.drawings.regularizers import DEFAULT_WEIGHTS, make_regularizer
from stimuli.drawings.training import (
    Checkpoint,
    corpus_digest,
    cosine_lr,
    epoch_generator,
    seeded,
)

log = logging.getLogger(__name__)

REVISION = 1  # bump when a change alters what training produces
STAGES = 3  # stride-2 stages: the encoder's grid is ceil(S / 8)


class AutoencoderConfig(BaseModel):
    """How to build and train one regularized autoencoder. ``weight`` None takes the
    regularizer's default (``DEFAULT_WEIGHTS``); 0 trains a plain autoencoder."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    regularizer: Literal["kl", "vq", "classification", "prototype", "simclr", "barlow"]
    weight: float | None = Field(None, ge=0)
    latent_dim: int = Field(32, ge=2, le=512)
    channels: int = Field(32, ge=4, le=256)  # deepest stages; halved, quartered nearer pixels
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(128, ge=4)
    lr: float = Field(2e-3, gt=0)
    shots: int = Field(4, ge=2)  # prototype episodes: drawings per category in a batch
    codebook_size: int = Field(256, ge=2)  # vq
    word_size: int = Field(4, ge=1)  # vq: latent dimensions per codebook word
    temperature: float = Field(0.5, gt=0)  # simclr

    @property
    def effective_weight(self) -> float:
        return DEFAULT_WEIGHTS[self.regularizer] if self.weight is None else self.weight


def _grid(size: int) -> int:
    for _ in range(STAGES):
        size = math.ceil(size / 2)
    return size


def _stage(conv: nn.Module) -> tuple[nn.Module, ...]:
    """A conv, batch norm (without it a plain autoencoder of sparse ink long sits at the
    mean drawing) and a ReLU."""
    return conv, nn.BatchNorm2d(conv.out_channels), nn.ReLU()


class RegularizedAutoencoder(nn.Module):
    """Encoder (N, 1, S, S) -> (N, D) and decoder (N, D) -> (N, 1, S, S); inputs and
    outputs are ink in [0, 1]. ``n_classes`` sizes the classification head."""

    def __init__(self, size: int, config: AutoencoderConfig, n_classes: int):
        super().__init__()
        if not 8 <= size <= 256:
            raise ValueError(f"drawings must be 8 to 256 pixels wide, got {size}")
        self.size, self.config, self.n_classes = size, config, n_classes
        d, c, g = config.latent_dim, config.channels, _grid(size)
        options = {"vq": {"codebook_size": config.codebook_size, "word_size": config.word_size},
                   "simclr": {"temperature": config.temperature}}.get(config.regularizer, {})
        self.regularizer = make_regularizer(config.regularizer, d, n_classes, **options)
        self.encoder = nn.Sequential(
            *_stage(nn.Conv2d(1, c // 2, 3, stride=2, padding=1)),
            *_stage(nn.Conv2d(c // 2, c, 3, stride=2, padding=1)),
            *_stage(nn.Conv2d(c, c, 3, stride=2, padding=1)),
            nn.Flatten(),  # N, C * g * g
            nn.Linear(c * g * g, self.regularizer.features(d)),
        )
        self.decoder = nn.Sequential(
            nn.Linear(d, c * g * g), nn.ReLU(),
            nn.Unflatten(1, (c, g, g)),
            *_stage(nn.ConvTranspose2d(c, c, 4, stride=2, padding=1)),
            *_stage(nn.ConvTranspose2d(c, c // 2, 4, stride=2, padding=1)),
            *_stage(nn.ConvTranspose2d(c // 2, c // 4, 4, stride=2, padding=1)),
            nn.Conv2d(c // 4, 1, 3, padding=1),  # N, 1, 8g, 8g: ink logits
        )

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """Ink logits (N, 1, S, S) of latents (N, D)."""
        return self.decoder(z)[..., : self.size, : self.size]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents (N, D) of drawings (N, 1, S, S): the mean for KL, the code for VQ."""
        return self.regularizer.code(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Drawings (N, 1, S, S), ink in [0, 1], of latents (N, D)."""
        return torch.sigmoid(self.logits(z))

    @torch.no_grad()
    def encode_images(self, images: np.ndarray, *, batch_size: int = 1024) -> torch.Tensor:
        """Latents (N, D) of uint8 drawings (N, S, S), in batches, without gradients."""
        device = next(self.parameters()).device
        x = torch.from_numpy(np.ascontiguousarray(images))
        return torch.cat([self.encode(as_input(x[i : i + batch_size], device))
                          for i in range(0, len(x), batch_size)])


def as_input(images: torch.Tensor | np.ndarray, device: str | torch.device) -> torch.Tensor:
    """uint8 drawings (N, S, S) as the models' float input (N, 1, S, S) in [0, 1]."""
    x = torch.as_tensor(images)
    if x.ndim != 3 or x.dtype != torch.uint8:
        raise ValueError(f"expected uint8 drawings (N, S, S), got {x.dtype} {tuple(x.shape)}")
    return x.to(device).unsqueeze(1).float() / 255


def _batches(labels: torch.Tensor, config: AutoencoderConfig, generator: torch.Generator
             ) -> list[torch.Tensor]:
    """One epoch's batches of drawing indices: a random permutation, or for episodic
    regularizers groups of ``shots`` drawings of one category, the groups shuffled."""
    n, size = len(labels), config.batch_size
    order = torch.randperm(n, generator=generator)
    if config.regularizer == "prototype":
        y = labels[order]
        by_class = torch.argsort(y, stable=True)  # order positions grouped by class
        y_sorted = y[by_class]
        start = torch.searchsorted(y_sorted, y_sorted)  # first position of each class
        rank = torch.arange(n) - start  # rank within its class
        group = y_sorted * n + rank // config.shots  # one id per (class, chunk)
        _, group = group.unique(return_inverse=True)
        shuffled = torch.randperm(int(group.max()) + 1, generator=generator)[group]
        order = order[by_class[torch.argsort(shuffled, stable=True)]]
    return list(order.split(size))


def _train_epoch(model: RegularizedAutoencoder, optimizer: torch.optim.Optimizer,
                 images: torch.Tensor, labels: torch.Tensor, *, epoch: int, seed: int,
                 device: str | torch.device) -> dict[str, float]:
    """One pass over ``images`` (N, S, S) uint8 on ``device``; returns mean losses."""
    config, reg = model.config, model.regularizer
    weight = config.effective_weight
    generator = epoch_generator(seed, epoch)
    batches = _batches(labels, config, generator)
    steps = config.epochs * len(batches)
    totals = {"reconstruction": 0.0, "regularizer": 0.0}
    model.train()
    bar = tqdm(batches, desc=f"autoencoder {config.regularizer} {epoch + 1}/{config.epochs}",
               unit="batch", disable=None, leave=False)
    for i, index in enumerate(bar):
        cosine_lr(optimizer, config.lr, epoch * len(batches) + i, steps)
        x = images[index.to(device)].unsqueeze(1).float() / 255  # B, 1, S, S
        y = labels[index].to(device)
        view = None
        if reg.needs_views:
            x, x_view = augment(x, generator), augment(x, generator)
            view = reg.code(model.encoder(x_view))
        z, loss_reg = reg.bottleneck(model.encoder(x), generator)
        recon = F.binary_cross_entropy_with_logits(model.logits(z), x, reduction="sum") / len(x)
        loss_reg = loss_reg + reg.penalty(z, y, view)
        optimizer.zero_grad(set_to_none=True)
        (recon + weight * loss_reg).backward()
        optimizer.step()
        totals["reconstruction"] += recon.item() / len(batches)
        totals["regularizer"] += loss_reg.item() / len(batches)
    return totals


def train_autoencoder(corpus: DrawingCorpus, config: AutoencoderConfig, *, seed: int,
                      cache_dir: Path | None = None, device: str | torch.device = "cpu"
                      ) -> RegularizedAutoencoder:
    """A regularized autoencoder trained on all of ``corpus`` (callers pass its background
    split), in eval mode on ``device``. A finished checkpoint under ``cache_dir`` (None: the
    default cache) is loaded without training; an unfinished one is resumed."""
    if len(corpus.images) < 2:
        raise ValueError("the corpus needs at least two drawings to train on")
    n_classes = len(corpus.categories)
    model = seeded(lambda: RegularizedAutoencoder(corpus.size, config, n_classes), seed)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    checkpoint = Checkpoint("drawing-autoencoder", {
        "revision": REVISION, "corpus": corpus_digest(corpus), "n_classes": n_classes,
        "config": config.model_dump(mode="json"), "seed": seed}, cache_dir)
    start, _ = checkpoint.resume(model, optimizer)
    images = torch.from_numpy(np.ascontiguousarray(corpus.images)).to(device)
    labels = torch.from_numpy(np.asarray(corpus.labels, dtype=np.int64))
    for epoch in range(start, config.epochs):
        losses = _train_epoch(model, optimizer, images, labels, epoch=epoch, seed=seed,
                              device=device)
        checkpoint.save(epoch + 1, model, optimizer, losses)
        log.info("autoencoder %s epoch %d/%d: %s", config.regularizer, epoch + 1,
                 config.epochs, ", ".join(f"{k} {v:.3f}" for k, v in losses.items()))
    return model.eval()
