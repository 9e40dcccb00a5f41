"""Exemplar search over an image stream: the most and least activating images of every unit.

:class:`ExemplarSearch` streams a source once through the model and keeps, for every unit of
every (layer, source), only the running top and bottom scores (see
:class:`~stimuli.activations.RunningExtremes`). How they become trials is the ``exemplars``
method's job (stimuli/methods/exemplars.py). Letters: B images in a batch, U units.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn

from stimuli.activations import RunningExtremes, to_positions, unit_scores
from stimuli.models import LayerCapture

log = logging.getLogger(__name__)

Encoder = Callable[[torch.Tensor], torch.Tensor]


class ExemplarSearch:
    """Running extremes of every unit in one pass over the images.

    ``units`` maps (layer, source) to an encoder of position vectors, (M, C) -> (M, K), or None
    for the layer's channels (neurons). After :meth:`fit`, ``extremes_[(layer, source)]`` is a
    :class:`RunningExtremes` with (U, n_extremes) top and bottom scores and image indices,
    and the scores of the ``subset`` images, (R, U), for percentile ("hard") queries.
    """

    def __init__(
        self,
        n_extremes: int,
        *,
        pooling: str = "mean",
        subset: torch.Tensor | None = None,
        device: str | torch.device = "cpu",
        cls_token: bool = True,  # token layers: whether token 0 (CLS) counts as a position
    ):
        self.n_extremes = n_extremes
        self.pooling = pooling
        self.subset = subset
        self.device = device
        self.cls_token = cls_token

    @torch.no_grad()
    def fit(
        self,
        model: nn.Module,
        units: Mapping[tuple[str, str], Encoder | None],
        batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    ) -> ExemplarSearch:
        """Stream ``batches`` of (index (B,), x (B, ...)) through ``model``."""
        if self.n_extremes < 1:
            raise ValueError(f"n_extremes must be positive, not {self.n_extremes}")
        if not units:
            raise ValueError("no units to search")
        layers = sorted({layer for layer, _ in units})
        self.extremes_ = {
            key: RunningExtremes(self.n_extremes, subset=self.subset) for key in units
        }
        shared = _layers_with_encoders(units)
        with LayerCapture(model, layers, cls_token=self.cls_token) as cap:
            for index, x in batches:
                model(x.to(self.device))
                # a layer's position vectors (B*H*W, C) are a copy: made once for its encoders
                positions = {layer: to_positions(cap.outputs[layer]) for layer in shared}
                for key, encoder in units.items():
                    scores = unit_scores(  # B, U
                        cap.outputs[key[0]], encoder, self.pooling, positions=positions.get(key[0])
                    )
                    self.extremes_[key].update(index, scores)
        n_seen = {e.n_seen_ for e in self.extremes_.values()}
        self.n_images_ = n_seen.pop() if n_seen else 0
        return self


def _layers_with_encoders(units: Mapping[tuple[str, str], Encoder | None]) -> list[str]:
    """Layers with more than one encoder: their position vectors are worth sharing."""
    counts = Counter(layer for (layer, _), encoder in units.items() if encoder is not None)
    return [layer for layer, n in counts.items() if n > 1]
