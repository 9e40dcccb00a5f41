"""The denoiser of the latent diffusion model: a residual MLP that predicts the noise in a
drawing's latent given the diffusion timestep and the latent of an exemplar of the same
category (or a learned "no exemplar" vector, for classifier-free guidance).
Letters: N latents, D latent dimensions, W width.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding (N, dim) of integer timesteps (N,) (Vaswani et al. 2017)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]  # N, dim / 2
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ResidualBlock(nn.Module):
    """h + MLP(LayerNorm(h) + time), the time embedding added inside the branch."""

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.time = nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width), nn.SiLU(),
                                 nn.Linear(2 * width, width))

    def forward(self, h: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        return h + self.mlp(self.norm(h) + self.time(t_emb))


class Denoiser(nn.Module):
    """eps_hat(x_t, t, c): ``x_t`` (N, D) noisy latents, ``t`` (N,) timesteps, ``cond``
    (N, D) exemplar latents or None rows marked by ``drop`` (N,) bool."""

    def __init__(self, latent_dim: int, width: int = 256, blocks: int = 3):
        super().__init__()
        self.width = width
        self.register_buffer("mean", torch.zeros(latent_dim))  # of the training latents
        self.register_buffer("std", torch.ones(latent_dim))
        self.null = nn.Parameter(torch.zeros(latent_dim))  # the "no exemplar" condition
        self.inp = nn.Linear(2 * latent_dim, width)
        self.time = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList(ResidualBlock(width) for _ in range(blocks))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, latent_dim))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    @torch.no_grad()
    def set_scale(self, z: torch.Tensor) -> None:
        """Standardize by the per-dimension mean and std of training latents (N, D)."""
        self.mean.copy_(z.mean(dim=0))
        self.std.copy_(z.std(dim=0).clamp(min=1e-4))

    def standardize(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.mean) / self.std

    def unstandardize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                drop: torch.Tensor) -> torch.Tensor:
        cond = torch.where(drop[:, None], self.null.expand_as(cond), cond)  # N, D
        t_emb = self.time(timestep_embedding(t, self.width))  # N, W
        h = self.inp(torch.cat([x_t, cond], dim=1))  # N, W
        for block in self.blocks:
            h = block(h, t_emb)
        return self.out(h)
