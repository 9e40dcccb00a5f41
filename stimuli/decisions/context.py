"""What a decision build hands to its methods: the model, fresh images of its training
distribution (for choosing the low-pass cut-off and fitting CRAFT's concepts), and a record
of what each method chose, for the provenance.

Letters: N images, K concepts, S image side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import nn

from stimuli.attribution.craft import Concepts, concept_maps, fit_concepts
from stimuli.attribution.lowpass import choose_cutoff
from stimuli.cache import seed_from
from stimuli.shortcuts import ShortcutSpec, make_dataset

if TYPE_CHECKING:
    from stimuli.decisions.methods import CraftConfig, LowPassConfig


def split_at(model: nn.Module, layer: str | None) -> tuple[nn.Module, nn.Module, str]:
    """A sequential model cut after ``layer`` (a child's name; default: its last ReLU) into
    g (input -> activations) and h (activations -> logits), for CRAFT."""
    if not isinstance(model, nn.Sequential):
        raise ValueError("craft: the model must be an nn.Sequential to be cut at a layer")
    names = [name for name, _ in model.named_children()]
    if layer is None:
        relus = [n for n, m in model.named_children() if isinstance(m, nn.ReLU)]
        if not relus:
            raise ValueError("craft: the model has no ReLU to cut after (CRAFT factorizes "
                             "non-negative activations); name a layer")
        layer = relus[-1]
    if layer not in names:
        raise ValueError(f"craft: no layer {layer!r} (layers: {', '.join(names)})")
    cut = names.index(layer) + 1
    return model[:cut], model[cut:], layer


@dataclass
class DecisionContext:
    model: nn.Module
    device: torch.device
    data: ShortcutSpec  # the distribution the model was trained on
    seed: int
    classes: list[str]
    details: dict[str, dict] = field(default_factory=dict)  # method -> what it chose
    _cutoff: float | None = None
    _concepts: dict[int, Concepts] = field(default_factory=dict)
    _beside: dict[str, list[Image.Image]] = field(default_factory=dict)

    @torch.no_grad()
    def decide(self, x: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, np.ndarray]:
        """The model's decisions (N,) and its probability of each (N,)."""
        probs = torch.cat([self.model(x[i:i + batch].to(self.device)).softmax(dim=1).cpu()
                           for i in range(0, len(x), batch)])
        top, decisions = probs.max(dim=1)
        return decisions, top.numpy()

    def fresh(self, n: int, name: str) -> torch.Tensor:
        """n new images of the training distribution (none of them shown)."""
        return make_dataset(self.data, n, seed=seed_from(self.seed, name)).images

    def lowpass_cutoff(self, config: LowPassConfig, seed: int) -> float:
        """The cut-off most faithful on held-out images (chosen once per build)."""
        if self._cutoff is None:
            x = self.fresh(config.held_out, "lowpass-held-out").to(self.device)
            target = self.decide(x)[0].to(self.device)
            best, scores = choose_cutoff(self.model, x, target, config.cutoffs)
            self._cutoff = float(best)
            self.details["lowpass"] = {"cutoff": self._cutoff, "held_out": config.held_out,
                                       "scores": {str(k): float(v) for k, v in scores.items()}}
        return self._cutoff

    def concepts(self, config: CraftConfig, class_index: int) -> Concepts:
        """The class's CRAFT concepts, fitted on crops of fresh images the model assigns to
        it (once per class and build)."""
        if class_index not in self._concepts:
            g, h, layer = split_at(self.model, config.layer)
            pool = self.fresh(config.images_per_class * 4, f"craft-{class_index}")
            chosen = pool[self.decide(pool)[0] == class_index][:config.images_per_class]
            if len(chosen) < 4:
                raise ValueError(f"craft: the model assigns too few images to class "
                                 f"{self.classes[class_index]!r} to fit its concepts")
            side = chosen.shape[-1]
            concepts = fit_concepts(
                g, h, chosen.to(self.device), class_index, n_concepts=config.n_concepts,
                n_crops=config.n_crops, crop_size=max(2, round(config.crop_size * side)),
                n_designs=config.n_designs, seed=seed_from(self.seed, "craft", class_index))
            self._concepts[class_index] = concepts
            self.details.setdefault("craft", {"layer": layer, "importance": {}})
            self.details["craft"]["importance"][self.classes[class_index]] = [
                round(float(v), 6) for v in concepts.importance]
        return self._concepts[class_index]

    def craft_maps(self, config: CraftConfig, x: torch.Tensor, target: torch.Tensor,
                   seed: int) -> torch.Tensor:
        """Per image, its decided class's concept maps weighted by their importance (N, S, S);
        the crops of the concept that weighs most in each image are kept to show beside it
        (in call order, so that batches given in order keep the images' order)."""
        g, _, _ = split_at(self.model, config.layer)
        out = torch.zeros(x.shape[0], x.shape[-2], x.shape[-1])
        strips = self._beside.setdefault("craft", [])
        for i in range(len(x)):
            concepts = self.concepts(config, int(target[i]))
            maps = concept_maps(g, concepts.bank, x[i:i + 1], x.shape[-1])[0].cpu()  # (K, S, S)
            weight = concepts.importance.cpu().clamp(min=0)
            out[i] = (weight[:, None, None] * maps).sum(dim=0)
            top = int((weight * maps.flatten(1).mean(dim=1)).argmax())
            crops = concepts.crops[concepts.top_crops(top, config.crops_shown)]
            strips.append(crop_strip(crops))
        return out

    def shown_beside(self, method_id: str, index: int) -> Image.Image | None:
        """What a method shows beside its map of image ``index`` (CRAFT: concept crops)."""
        strips = self._beside.get(method_id)
        return strips[index] if strips is not None else None


def crop_strip(crops: torch.Tensor) -> Image.Image:
    """Crops (n, 3, s, s) in [0, 1] stacked vertically with white gaps."""
    arrays = [(c.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
              for c in crops]
    side = arrays[0].shape[0]
    gap = max(1, side // 16)
    out = np.full((len(arrays) * side + (len(arrays) - 1) * gap, side, 3), 255, np.uint8)
    for i, a in enumerate(arrays):
        out[i * (side + gap):i * (side + gap) + side] = a
    return Image.fromarray(out)
