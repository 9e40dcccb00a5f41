"""Feature accentuation (Hamblin et al. 2024, "Feature accentuation: revealing 'what'
features respond to in natural images"): a given image is changed, as little as it takes, to
drive the unit up (or down). The seeds are the unit's own natural references (those the
``exemplars`` method shows), or images the researcher gives. A penalty keeps an earlier
layer's activations close to the seed's; it is balanced automatically: the unit's gain is
measured in units of its top natural activation and the penalty in units of the seed's own
activation energy at that layer, so ``penalty = 1`` means the same on any model.

Per image the manifest adds ``seed`` (the natural seed's digest, when there is one),
``seed_activation`` and ``seed_distance`` (root mean squared pixel change, [0, 1] scale).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydantic import Field
from torch import nn

from stimuli.explain_context import ExplainContext
from stimuli.feature_vis import Accentuation as AccentuationImages
from stimuli.feature_vis import LayerOutput, Result
from stimuli.images import ImageFolder, iter_batches
from stimuli.methods.base import UnitRef
from stimuli.methods.synthetic import Synthetic, SyntheticConfig, generator
from stimuli.stimulus_set import ImageRef, rounded


class AccentuationConfig(SyntheticConfig):
    steps: int = Field(128, ge=1, le=20000)
    lr: float = Field(0.2, gt=0, le=10)
    scale: tuple[float, float] = (1.0, 0.8)
    decay_power: float = Field(1.0, ge=0, le=3)
    penalty: float = Field(1.0, ge=0)  # weight of staying close to the seed
    penalty_layer: str | None = None  # default: the model's first layer with weights
    seed_folder: Path | None = None  # the researcher's seeds; default: natural references


class Accentuation(Synthetic):
    id = "accentuation"
    revision = 1
    Config = AccentuationConfig
    description = "feature accentuations of the unit's natural references (or given images)"
    config: AccentuationConfig

    def required(self) -> tuple[str, ...]:
        return () if self.config.seed_folder is not None else ("exemplars",)

    def run(self, ctx: ExplainContext, units: list[UnitRef], rngs: list[np.random.Generator],
            n: int) -> Result:
        seeds, self._seed_digests = self.seeds(ctx, units, n)  # B, C, S, S
        size = self.side(ctx)
        if seeds.shape[-1] != size:
            seeds = torch.nn.functional.interpolate(seeds, size=(size, size), mode="bilinear",
                                                    antialias=True, align_corners=False)
        self._seeds = seeds
        param = AccentuationImages(seeds.to(ctx.device), self.config.decay_power)
        layer = self.config.penalty_layer or first_layer(ctx.model)
        early = LayerOutput(ctx.model, layer, mean=ctx.transform.mean, std=ctx.transform.std,
                            cls_token=ctx.cls_token)
        start = param.image().detach()
        with torch.no_grad():
            target = early(start)
            energy = target.pow(2).flatten(1).mean(1).clamp(min=1e-12)  # B
            self._seed_activation = self.objective(ctx, units[0])(start)[
                torch.arange(len(start)), self.targets(units, n)[0]].cpu()
        scale = torch.tensor([
            abs(float(ctx.statistics[(u.layer, u.source)].top_values[u.index, 0])) or 1.0
            for u in units]).repeat_interleave(2 * n).to(ctx.device)
        weight = self.config.penalty * scale / energy

        def penalty(images: torch.Tensor) -> torch.Tensor:
            return weight * (early(images) - target).pow(2).flatten(1).mean(1)

        return self.optimize(ctx, units, param, n, generator(rngs), penalty=penalty)

    def seeds(self, ctx: ExplainContext, units: list[UnitRef],
              n: int) -> tuple[torch.Tensor, list[str | None]]:
        """Seed images (B, C, S, S) in [0, 1], in :meth:`run`'s order, and the digest of each
        natural seed (None for the researcher's)."""
        if self.config.seed_folder is not None:
            folder = ImageFolder(self.config.seed_folder)
            if len(folder) < n:
                raise ValueError(f"accentuation.seed_folder {folder.root} has {len(folder)} "
                                 f"images; n_images = {n} needs as many")
            x = torch.cat([xb for _, xb in iter_batches(folder, ctx.transform,
                                                        indices=range(n))])
            mean = torch.tensor(ctx.transform.mean)[:, None, None]
            std = torch.tensor(ctx.transform.std)[:, None, None]
            pixels = (x * std + mean).clamp(0, 1)
            return pixels.repeat(2 * len(units), 1, 1, 1), [None] * (2 * n * len(units))
        digests: list[str | None] = []
        for unit in units:
            roles = ctx.explained["exemplars"][unit.id]
            for role in ("max_refs", "min_refs"):
                refs = [ref["image"] for ref in roles[role]]
                if len(refs) < n:
                    raise ValueError(f"accentuation.n_images = {n}, but the exemplars method "
                                     f"gives {len(refs)} {role} per unit")
                digests.extend(refs[:n])
        return ctx.pixels([ctx.indices[d] for d in digests]), digests

    def image_ref(self, ctx, result, b, top, plausibility, unit, i, role) -> ImageRef:
        ref = super().image_ref(ctx, result, b, top, plausibility, unit, i, role)
        distance = (result.images[b] - self._seeds[b].cpu()).pow(2).mean().sqrt()
        meta = {**ref.meta, "seed_distance": rounded(float(distance)),
                "seed_activation": rounded(float(self._seed_activation[b]))}
        if self._seed_digests[b] is not None:
            meta["seed"] = self._seed_digests[b]
        return ref.model_copy(update={"meta": meta})


def first_layer(model: nn.Module) -> str:
    """The first submodule with weights of its own (an early layer: its activations describe
    the image's local structure, which an accentuation should keep)."""
    for name, module in model.named_modules():
        if name and any(True for _ in module.parameters(recurse=False)):
            return name
    raise ValueError("the model has no layer with weights; set accentuation.penalty_layer")
