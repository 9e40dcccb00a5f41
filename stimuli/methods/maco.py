"""MACO feature visualization (Fel et al. 2023, "Unlocking feature visualization for deeper
networks with magnitude constrained optimization"): only the phase of the image's Fourier
spectrum is optimized, its magnitude stays that of natural images (estimated from the
build's own images, or the ImageNet spectrum published with xplique), which keeps the images
in the statistics of natural ones. Each image carries its transparency map (where the
accumulated input gradients say it matters), shown as the image itself or blended into grey.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from stimuli.explain_context import ExplainContext
from stimuli.feature_vis import Maco as MacoImages
from stimuli.feature_vis import Result
from stimuli.methods.base import UnitRef
from stimuli.methods.synthetic import Synthetic, SyntheticConfig, generator
from stimuli.spectrum import SpectrumConfig, magnitude_spectrum, resize_spectrum
from stimuli.stimulus_set import ImageRef


class MacoConfig(SyntheticConfig):
    spectrum: SpectrumConfig = Field(default_factory=SpectrumConfig)
    show: Literal["image", "masked"] = "image"  # what participants see; the map is kept
    mask_quantile: float = Field(0.99, gt=0.5, le=1)  # map value that counts as fully opaque


class Maco(Synthetic):
    id = "maco"
    revision = 1
    Config = MacoConfig
    description = "MACO feature visualizations (phase-only, natural magnitude) with their maps"
    config: MacoConfig

    def check(self, images) -> str | None:
        if self.config.spectrum.source == "imagenet" and images.mode != "RGB":
            return ('spectrum.source = "imagenet" is an RGB spectrum but images.mode is '
                    f'{images.mode!r}; use source = "images" (estimated from the images)')
        return None

    def run(self, ctx: ExplainContext, units: list[UnitRef], rngs: list[np.random.Generator],
            n: int) -> Result:
        size, channels = self.side(ctx), self.channels(ctx)
        magnitude, provenance = magnitude_spectrum(
            self.config.spectrum, images=ctx.pool, transform=ctx.transform,
            cache_dir=ctx.cache_dir, seed=ctx.seed)
        ctx.provenance[self.id] = {"spectrum": provenance}
        magnitude = resize_spectrum(magnitude, size, channels=channels)
        phase = np.concatenate([rng.standard_normal((2 * n, channels, size, size // 2 + 1))
                                for rng in rngs]).astype(np.float32)
        param = MacoImages(magnitude.to(ctx.device), torch.from_numpy(phase).to(ctx.device))
        return self.optimize(ctx, units, param, n, generator(rngs))

    def image_ref(self, ctx, result, b, top, plausibility, unit, i, role) -> ImageRef:
        ref = super().image_ref(ctx, result, b, top, plausibility, unit, i, role)
        alpha = transparency(result.transparency[b], self.config.mask_quantile)
        update = {"map": ctx.add_pixels(alpha[None])}
        if self.config.show == "masked":
            update["image"] = ctx.add_pixels(masked(result.images[b], alpha))
        return ref.model_copy(update=update)


def transparency(gradients: torch.Tensor, quantile: float) -> torch.Tensor:
    """Accumulated |gradients| (S, S) as opacity in [0, 1]: the ``quantile`` is opaque."""
    top = torch.quantile(gradients.flatten().double(), quantile).float()
    return (gradients / top).clamp(0, 1) if top > 0 else torch.ones_like(gradients)


def masked(image: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The image (C, S, S) where the map says it matters, mid-grey elsewhere."""
    return image * alpha + 0.5 * (1 - alpha)
