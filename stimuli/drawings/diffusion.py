"""Exemplar-conditioned latent diffusion (Boutin et al. 2024): a denoiser (denoiser.py)
learns the latent of a drawing given the latent of another drawing of the same category,
in the latent space of a regularized autoencoder; to draw a new category, sampling starts
from noise with the exemplar's latent as the condition and decodes the result.

Latents are standardized per dimension (mean and std over the training drawings) before
diffusion. The condition is dropped with probability ``cond_drop`` during training, so
sampling can use classifier-free guidance (Ho & Salimans 2022). The noise schedules are
diffusers' (DDPM to train, DDIM to sample); the networks are ours.
Letters: N latents, D latent dimensions, E exemplars, n drawings per exemplar, S side.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from stimuli.drawings.autoencoder import RegularizedAutoencoder
from stimuli.drawings.corpus import DrawingCorpus
from stimuli.drawings.denoiser import Denoiser
from stimuli.drawings.training import (
    Checkpoint,
    corpus_digest,
    cosine_lr,
    epoch_generator,
    module_digest,
    seeded,
)

log = logging.getLogger(__name__)

REVISION = 1  # bump when a change alters what training produces
DECODE_BATCH = 1024


class DiffusionConfig(BaseModel):
    """How to build, train and sample the latent diffusion model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int = Field(128, ge=8, le=4096)
    blocks: int = Field(3, ge=1, le=32)
    epochs: int = Field(16, ge=1)
    steps_per_epoch: int = Field(250, ge=1)
    batch_size: int = Field(256, ge=2)
    lr: float = Field(1e-3, gt=0)
    timesteps: int = Field(1000, ge=10)  # of the training (DDPM) schedule
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"
    cond_drop: float = Field(0.1, ge=0, lt=1)  # classifier-free guidance: P(no exemplar)
    sampling_steps: int = Field(25, ge=1, le=1000)  # DDIM
    guidance: float = Field(4.0, ge=0)  # 0: unconditional, 1: conditional, > 1: guided

    def training_schedule(self) -> DDPMScheduler:
        return DDPMScheduler(num_train_timesteps=self.timesteps, beta_schedule=self.beta_schedule,
                             clip_sample=False, prediction_type="epsilon")

    def sampling_schedule(self) -> DDIMScheduler:
        schedule = DDIMScheduler(num_train_timesteps=self.timesteps,
                                 beta_schedule=self.beta_schedule, clip_sample=False,
                                 set_alpha_to_one=False, prediction_type="epsilon")
        schedule.set_timesteps(self.sampling_steps)
        return schedule


class LatentDiffusion:
    """A trained denoiser in the latent space of ``autoencoder``; ``draw`` makes drawings."""

    def __init__(self, autoencoder: RegularizedAutoencoder, denoiser: Denoiser,
                 config: DiffusionConfig):
        self.autoencoder, self.denoiser, self.config = autoencoder.eval(), denoiser.eval(), config

    @property
    def device(self) -> torch.device:
        return self.denoiser.mean.device

    @torch.no_grad()
    def sample_latents(self, cond: torch.Tensor, *, seed: int, guidance: float | None = None
                       ) -> torch.Tensor:
        """Standardized latents (N, D) sampled given standardized conditions (N, D): one
        DDIM loop over all N, the noise drawn from ``seed``."""
        g = self.config.guidance if guidance is None else float(guidance)
        if g < 0:
            raise ValueError(f"guidance must be non-negative, got {g}")
        n = len(cond)
        schedule = self.config.sampling_schedule()
        noise = torch.Generator().manual_seed(seed)
        x = torch.randn(cond.shape, generator=noise).to(self.device)  # N, D
        both = torch.cat([cond, cond])  # 2N, D: conditional, then unconditional
        drop = torch.arange(2 * n, device=self.device) >= n
        for t in schedule.timesteps:
            if g == 1:  # the conditional prediction alone
                eps = self.denoiser(x, t.expand(n).to(self.device), cond, drop[:n])
            else:
                eps_c, eps_u = self.denoiser(
                    torch.cat([x, x]), t.expand(2 * n).to(self.device), both, drop).chunk(2)
                eps = eps_u + g * (eps_c - eps_u)
            x = schedule.step(eps, t, x).prev_sample
        return x

    @torch.no_grad()
    def draw(self, exemplars: np.ndarray, n: int, *, seed: int, guidance: float | None = None
             ) -> np.ndarray:
        """``n`` drawings of each exemplar's category: uint8 (E, n, S, S), ink 255 on 0,
        from uint8 exemplars (E, S, S). ``guidance`` None: the config's. The same seed gives
        the same drawings."""
        ae = self.autoencoder
        exemplars = np.asarray(exemplars)
        if exemplars.ndim != 3 or exemplars.dtype != np.uint8 or exemplars.shape[1:] != (
                ae.size, ae.size):
            raise ValueError(f"exemplars must be uint8 (E, {ae.size}, {ae.size}), got "
                             f"{exemplars.dtype} {exemplars.shape}")
        if n < 1:
            raise ValueError(f"n must be a positive number of drawings, got {n}")
        e = len(exemplars)
        cond = self.denoiser.standardize(ae.encode_images(exemplars))  # E, D
        x = self.sample_latents(cond.repeat_interleave(n, dim=0), seed=seed, guidance=guidance)
        z = ae.regularizer.project(self.denoiser.unstandardize(x))  # E * n, D
        ink = torch.cat([ae.decode(z[i : i + DECODE_BATCH])
                         for i in range(0, len(z), DECODE_BATCH)])  # E * n, 1, S, S
        ink = (ink * 255).round().to(torch.uint8).cpu().numpy()
        return ink.reshape(e, n, ae.size, ae.size)


def _partners(labels: torch.Tensor):
    """A sampler of partners: for drawings (B,) indices, another drawing of the same
    category each (itself when its category has one drawing)."""
    order = torch.argsort(labels, stable=True)  # drawings grouped by category
    counts = torch.bincount(labels)
    start = torch.cumsum(counts, 0) - counts  # C
    pos = torch.empty_like(order)
    pos[order] = torch.arange(len(order)) - start[labels[order]]  # rank within category

    def partner(index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        c = labels[index]
        k = counts[c]
        r = (torch.rand(len(index), generator=generator) * (k - 1)).long()
        r = r + (r >= pos[index]).long()  # skip the drawing itself
        return torch.where(k > 1, order[(start[c] + r).clamp(max=len(order) - 1)], index)

    return partner


def _train_epoch(denoiser: Denoiser, optimizer: torch.optim.Optimizer, z: torch.Tensor,
                 labels: torch.Tensor, config: DiffusionConfig, *, epoch: int, seed: int
                 ) -> float:
    """``steps_per_epoch`` steps on random (drawing, other drawing of its category) pairs
    of standardized latents ``z`` (N, D); returns the mean loss."""
    generator = epoch_generator(seed, epoch)
    schedule, partner = config.training_schedule(), _partners(labels)
    device, total_steps = z.device, config.epochs * config.steps_per_epoch
    denoiser.train()
    total = 0.0
    bar = tqdm(range(config.steps_per_epoch), desc=f"diffusion {epoch + 1}/{config.epochs}",
               unit="step", disable=None, leave=False)
    for step in bar:
        cosine_lr(optimizer, config.lr, epoch * config.steps_per_epoch + step, total_steps)
        index = torch.randint(0, len(z), (config.batch_size,), generator=generator)
        other = partner(index, generator)
        noise = torch.randn(config.batch_size, z.shape[1], generator=generator).to(device)
        t = torch.randint(0, config.timesteps, (config.batch_size,), generator=generator)
        drop = (torch.rand(config.batch_size, generator=generator) < config.cond_drop)
        x0, t = z[index.to(device)], t.to(device)
        x_t = schedule.add_noise(x0, noise, t)
        eps = denoiser(x_t, t, z[other.to(device)], drop.to(device))
        loss = F.mse_loss(eps, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() / config.steps_per_epoch
    return total


def train_diffusion(autoencoder: RegularizedAutoencoder, corpus: DrawingCorpus,
                    config: DiffusionConfig, *, seed: int, cache_dir: Path | None = None,
                    device: str | torch.device = "cpu") -> LatentDiffusion:
    """A latent diffusion model of ``corpus`` (callers pass its background split) in the
    latent space of ``autoencoder``. A finished checkpoint under ``cache_dir`` (None: the
    default cache) is loaded without training; an unfinished one is resumed."""
    if corpus.size != autoencoder.size:
        raise ValueError(f"the corpus's drawings are {corpus.size} px, the autoencoder's "
                         f"{autoencoder.size} px")
    autoencoder = autoencoder.to(device).eval()
    latent_dim = autoencoder.config.latent_dim
    denoiser = seeded(lambda: Denoiser(latent_dim, config.width, config.blocks), seed)
    denoiser.to(device)
    optimizer = torch.optim.Adam(denoiser.parameters(), lr=config.lr)
    checkpoint = Checkpoint("drawing-diffusion", {
        "revision": REVISION, "corpus": corpus_digest(corpus),
        "autoencoder": module_digest(autoencoder), "config": config.model_dump(mode="json"),
        "seed": seed}, cache_dir)
    start, _ = checkpoint.resume(denoiser, optimizer)
    if start < config.epochs:
        z = autoencoder.encode_images(corpus.images)  # N, D
        denoiser.set_scale(z)
        z = denoiser.standardize(z)
        labels = torch.from_numpy(np.asarray(corpus.labels, dtype=np.int64))
    for epoch in range(start, config.epochs):
        loss = _train_epoch(denoiser, optimizer, z, labels, config, epoch=epoch, seed=seed)
        checkpoint.save(epoch + 1, denoiser, optimizer, {"loss": loss})
        log.info("diffusion epoch %d/%d: loss %.4f", epoch + 1, config.epochs, loss)
    return LatentDiffusion(autoencoder, denoiser, config)
