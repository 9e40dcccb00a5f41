"""Attribution methods and CRAFT concepts in the method registry: each explains a model's
decision on an image with one map, shown as a heatmap over the image.

They explain decisions, not units: a build file with a ``[scenario]`` table builds them
(``stimuli.decisions.build``), and unit builds refuse them. Each method's ``[<id>]`` table
holds its options (``stimuli.attribution.maps.attribute``'s keyword arguments); the low-pass
gradient also chooses its cut-off per model, and CRAFT fits its concepts per class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import Field

from stimuli.attribution.maps import ATTRIBUTIONS, attribute
from stimuli.methods.base import Method, MethodConfig, RoleKind

if TYPE_CHECKING:
    from stimuli.decisions.context import DecisionContext

ROLE = "explanation"


class AttributionConfig(MethodConfig):
    # keyword options of the method in stimuli.attribution.maps.attribute (n_samples, ...)
    options: dict[str, float | int | str] = Field(default_factory=dict)


class LowPassConfig(AttributionConfig):
    # candidate cut-offs (fractions of Nyquist); the most faithful on held-out images is used
    cutoffs: list[float] = Field(default_factory=lambda: [0.1, 0.2, 0.35, 0.5, 0.75, 1.0],
                                 min_length=1)
    held_out: int = Field(64, ge=4, le=4096)


class CraftConfig(MethodConfig):
    layer: str | None = None  # split the model here (default: its last ReLU)
    n_concepts: int = Field(6, ge=1, le=64)
    n_crops: int = Field(256, ge=8, le=20_000)
    crop_size: float = Field(0.5, gt=0.05, le=1.0)  # side of a crop / the image's
    n_designs: int = Field(32, ge=4, le=4096)  # Sobol designs (a power of two)
    images_per_class: int = Field(128, ge=4, le=20_000)
    crops_shown: int = Field(3, ge=1, le=8)  # the top concept's crops beside the map


class DecisionMethod(Method):
    """A method that maps one decision per image: (N, C, H, W) inputs and decided classes
    (N,) to (N, H, W) maps, larger where the image drove the decision more."""

    revision = 1
    Config = AttributionConfig
    roles: ClassVar[dict[str, RoleKind]] = {ROLE: "images"}
    explains_units = False
    attribution: ClassVar[str]

    def unsupported(self, source) -> str | None:
        return ("it explains a model's decisions on images (a build file with a [scenario] "
                "table), not units")

    def maps(self, ctx: DecisionContext, x: torch.Tensor, target: torch.Tensor,
             seed: int) -> torch.Tensor:
        options: dict[str, Any] = dict(self.config.options)  # type: ignore[attr-defined]
        return attribute(self.attribution, ctx.model, x, target, seed=seed, **options)


class LowPass(DecisionMethod):
    """Gradients low-pass filtered at the cut-off most faithful for this model."""

    id = attribution = "lowpass"
    description = ATTRIBUTIONS["lowpass"]
    Config = LowPassConfig

    def maps(self, ctx, x, target, seed):
        config: LowPassConfig = self.config  # type: ignore[assignment]
        cutoff = ctx.lowpass_cutoff(config, seed)
        options = {**config.options, "cutoff": cutoff}
        return attribute("lowpass", ctx.model, x, target, seed=seed, **options)


class Craft(DecisionMethod):
    """CRAFT concepts (Fel et al. 2023): the decided class's concepts, fitted on crops of
    images of that class, shown as where the most important concept lies in the image
    (and its crops beside it)."""

    id = attribution = "craft"
    description = ("CRAFT concepts: where the decided class's most important concept lies "
                   "in the image, and its crops")
    Config = CraftConfig

    def maps(self, ctx, x, target, seed):
        return ctx.craft_maps(self.config, x, target, seed)  # type: ignore[arg-type]


class Saliency(DecisionMethod):
    id = attribution = "saliency"
    description = ATTRIBUTIONS["saliency"]


class SmoothGrad(DecisionMethod):
    id = attribution = "smoothgrad"
    description = ATTRIBUTIONS["smoothgrad"]


class IntegratedGradients(DecisionMethod):
    id = attribution = "integrated_gradients"
    description = ATTRIBUTIONS["integrated_gradients"]


class GradCam(DecisionMethod):
    id = attribution = "gradcam"
    description = ATTRIBUTIONS["gradcam"]


class Occlusion(DecisionMethod):
    id = attribution = "occlusion"
    description = ATTRIBUTIONS["occlusion"]


class Rise(DecisionMethod):
    id = attribution = "rise"
    description = ATTRIBUTIONS["rise"]


class Wam(DecisionMethod):
    id = attribution = "wam"
    description = ATTRIBUTIONS["wam"]


DECISION_METHODS: dict[str, type[DecisionMethod]] = {
    m.id: m for m in (Saliency, SmoothGrad, IntegratedGradients, GradCam, Occlusion, Rise,
                      LowPass, Wam, Craft)
}
