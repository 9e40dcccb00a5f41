"""The Fourier feature visualization baseline (Olah et al. 2017, "Feature Visualization"): a
free spectrum preconditioned by 1 / f (decorrelated colours for RGB), with jitter, scale and
rotation at every step. MACO's paper compares with it; so can a study."""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from stimuli.explain_context import ExplainContext
from stimuli.feature_vis import Fourier as FourierImages
from stimuli.feature_vis import Result
from stimuli.methods.base import UnitRef
from stimuli.methods.synthetic import Synthetic, SyntheticConfig, generator


class FourierConfig(SyntheticConfig):
    decay_power: float = Field(1.0, ge=0, le=3)
    scale: tuple[float, float] = (1.1, 0.9)  # Lucid's random scale, as zoom of the crop
    angle: float = Field(10.0, ge=0, le=180)  # random rotation, degrees


class Fourier(Synthetic):
    id = "fourier"
    revision = 1
    Config = FourierConfig
    description = "Fourier (1/f, decorrelated) feature visualizations, Olah et al. 2017"
    config: FourierConfig

    def run(self, ctx: ExplainContext, units: list[UnitRef], rngs: list[np.random.Generator],
            n: int) -> Result:
        size, channels = self.side(ctx), self.channels(ctx)
        shape = (2 * n, channels, size, size // 2 + 1)
        parts = [rng.standard_normal((2, *shape)) for rng in rngs]
        re = np.concatenate([p[0] for p in parts]).astype(np.float32)
        im = np.concatenate([p[1] for p in parts]).astype(np.float32)
        spectrum = torch.complex(torch.from_numpy(re), torch.from_numpy(im)) * 0.01
        param = FourierImages(spectrum.to(ctx.device), self.config.decay_power)
        return self.optimize(ctx, units, param, n, generator(rngs))
