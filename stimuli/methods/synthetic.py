"""What the methods that optimize images (maco, fourier, accentuation) share: their options,
the batched run over a family's units (each unit maximized for ``max_refs`` and minimized for
``min_refs``), and what the manifest records of every image.

Per image: ``activation`` (what the unit reached on the whole image), and in ``meta``
``relative_activation`` (that, divided by the unit's top natural activation) and
``plausibility`` (the mean cosine similarity, in the model's penultimate layer, to the unit's
natural extremes of the same side: a synthetic image that the model represents like natural
images of the unit is plausible). A catch pair takes the first image of each side.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from stimuli.explain_context import ExplainContext
from stimuli.feature_vis import LayerOutput, Result, UnitObjective, Views, frozen, optimize
from stimuli.methods.base import Explanation, Method, MethodConfig, RoleKind, UnitRef
from stimuli.stimulus_set import ImageRef, Pair, rounded


class SyntheticConfig(MethodConfig):
    n_images: int = Field(9, ge=1, le=50)  # per side and unit
    steps: int = Field(256, ge=1, le=20000)
    lr: float = Field(0.05, gt=0, le=10)
    size: int | None = Field(None, ge=8, le=2048)  # side optimized; None: the model's input
    views: int = Field(4, ge=1, le=64)  # random crops of every image per step
    scale: tuple[float, float] = (1.0, 0.6)  # crop side, first step -> last step
    shift: float = Field(0.1, ge=0, le=1)
    angle: float = Field(0.0, ge=0, le=180)
    noise: float = Field(0.02, ge=0, le=1)
    units_per_batch: int = Field(8, ge=1, le=1024)  # units optimized (and cached) together
    catch: bool = True

    @model_validator(mode="after")
    def _scale(self) -> SyntheticConfig:
        if not all(0.05 <= s <= 2 for s in self.scale):
            raise ValueError(f"scale values must lie in [0.05, 2], got {self.scale}")
        return self

    def view_options(self) -> Views:
        return Views(n=self.views, scale=self.scale, shift=self.shift, angle=self.angle,
                     noise=self.noise)


class Penultimate:
    """The input of the model's last linear layer (the representation its decision reads),
    flattened; None for models without one."""

    def __init__(self, model: nn.Module):
        self.model = model
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        self.module = linears[-1] if linears else None

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.module is None:
            return None
        seen: list[torch.Tensor] = []
        handle = self.module.register_forward_pre_hook(lambda _m, inputs: seen.append(inputs[0]))
        try:
            self.model(x)
        finally:
            handle.remove()
        return seen[-1].flatten(1)


def normalize(ctx: ExplainContext, pixels: torch.Tensor) -> torch.Tensor:
    """Pixel space [0, 1] to the model's input."""
    mean = torch.tensor(ctx.transform.mean)[:, None, None].to(pixels)
    std = torch.tensor(ctx.transform.std)[:, None, None].to(pixels)
    return (pixels - mean) / std


class Synthetic(Method):
    """Base class of the optimizing methods; subclasses build the parameterization."""

    roles: ClassVar[dict[str, RoleKind]] = {
        "max_refs": "images", "min_refs": "images", "catch": "pairs",
    }
    config: SyntheticConfig

    def batch_size(self) -> int:
        return self.config.units_per_batch

    def n_extremes(self) -> int:
        return self.config.n_images  # the natural extremes plausibility compares with

    def side(self, ctx: ExplainContext) -> int:
        return self.config.size or ctx.transform.size

    def channels(self, ctx: ExplainContext) -> int:
        return 3 if ctx.transform.mode == "RGB" else 1

    def run(self, ctx: ExplainContext, units: list[UnitRef], rngs: list[np.random.Generator],
            n: int) -> Result:
        """Optimize ``n`` images per side for every unit: the order is unit, side (max then
        min), image."""
        raise NotImplementedError

    def objective(self, ctx: ExplainContext, unit: UnitRef) -> UnitObjective:
        source = ctx.sources[(unit.layer, unit.source)]
        output = LayerOutput(ctx.model, unit.layer, mean=ctx.transform.mean,
                             std=ctx.transform.std, cls_token=ctx.cls_token)
        return UnitObjective(output, source.objective_encoder(), ctx.pooling)

    def targets(self, units: list[UnitRef], n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit index (B,) and sign (B,) of every image, in :meth:`run`'s order."""
        index = torch.tensor([u.index for u in units]).repeat_interleave(2 * n)
        signs = torch.tensor([1, -1]).repeat_interleave(n).repeat(len(units))
        return index, signs

    def optimize(self, ctx: ExplainContext, units: list[UnitRef], param, n: int,
                 gen: torch.Generator, penalty=None) -> Result:
        index, signs = self.targets(units, n)
        name = f"{self.id} {units[0].id.rsplit('/', 1)[0]} units " \
               f"{units[0].index}..{units[-1].index}"
        with frozen(ctx.model), torch.enable_grad():
            return optimize(param, self.objective(ctx, units[0]), index.to(ctx.device),
                            signs.to(ctx.device), steps=self.config.steps, lr=self.config.lr,
                            input_size=ctx.transform.size, views=self.config.view_options(),
                            gen=gen, penalty=penalty, desc=name)

    def explain_batch(self, ctx: ExplainContext, units: list[UnitRef],
                      rngs: list[np.random.Generator]) -> list[Explanation]:
        n = self.config.n_images
        result = self.run(ctx, units, rngs, n)
        plausibility = self._plausibility(ctx, units, result.images, n)
        out = []
        for u, unit in enumerate(units):
            stats = ctx.statistics[(unit.layer, unit.source)]
            top = float(stats.top_values[unit.index, 0])
            sides: dict[str, list[ImageRef]] = {}
            for s, role in enumerate(("max_refs", "min_refs")):
                refs = []
                for i in range(n):
                    b = (2 * u + s) * n + i
                    refs.append(self.image_ref(ctx, result, b, top, plausibility, unit, i, role))
                sides[role] = refs
            roles: Explanation = dict(sides)
            if self.config.catch:
                roles["catch"] = [Pair(max=sides["max_refs"][0], min=sides["min_refs"][0])]
            out.append(roles)
        return out

    def image_ref(self, ctx: ExplainContext, result: Result, b: int, top: float,
                  plausibility: torch.Tensor | None, unit: UnitRef, i: int,
                  role: str) -> ImageRef:
        activation = float(result.activations[b])
        meta: dict = {"relative_activation": rounded(activation / top) if abs(top) > 1e-12
                      else None}
        if plausibility is not None:
            meta["plausibility"] = rounded(float(plausibility[b]))
        return ImageRef(image=ctx.add_pixels(result.images[b]), activation=rounded(activation),
                        meta=meta)

    def _plausibility(self, ctx: ExplainContext, units: list[UnitRef], images: torch.Tensor,
                      n: int) -> torch.Tensor | None:
        """(B,) mean cosine similarity of each image to its unit's natural extremes of the
        same side, in the penultimate layer; None when the model has no linear head."""
        features = Penultimate(ctx.model)
        size = ctx.transform.size
        if images.shape[-1] != size:
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True,
                                   align_corners=False)
        synthetic = features(normalize(ctx, images).to(ctx.device))
        if synthetic is None:
            return None
        out = torch.empty(len(images))
        for u, unit in enumerate(units):
            stats = ctx.statistics[(unit.layer, unit.source)]
            for s, extremes in enumerate((stats.top_indices, stats.bottom_indices)):
                natural = features(ctx.inputs(extremes[unit.index, :n].tolist()).to(ctx.device))
                rows = slice((2 * u + s) * n, (2 * u + s + 1) * n)
                sims = F.cosine_similarity(synthetic[rows, None], natural[None], dim=2)
                out[rows] = sims.mean(1).cpu()
        return out



def generator(rngs: list[np.random.Generator]) -> torch.Generator:
    """One torch generator for a batch's random views, drawn from its units' generators."""
    return torch.Generator().manual_seed(int(rngs[0].integers(2**62)))
