"""Importance of a unit for the model's decision, the same way for neurons and dictionary features.

The importance of unit u is the mean drop, over a sample of images, in the probability of the
class the intact model predicts when u's contribution is removed from the layer's output:

- a neuron (channel c): its activation map is set to zero, A[:, c] = 0;
- a dictionary feature k with codes Z (per position) and atom D_k (C,): the layer's output
  loses Z_k * D_k at every position, A <- A - Z_k D_k (the rest, reconstruction error
  included, is kept).

Token layers work the same way on their channels-first view (see stimuli.models): the edit
is made there and the model gets it back as tokens; an excluded CLS token is left untouched.

Letters: B images, C channels, H, W spatial (T' tokens, 1), K dictionary atoms, U units.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import nn

from stimuli.activations import to_positions
from stimuli.models import LayerCapture, edit_layer

log = logging.getLogger(__name__)


@torch.no_grad()
def unit_importance(
    model: nn.Module,
    layer: str,
    x: torch.Tensor,
    units: Sequence[int],
    *,
    encoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
    dictionary: torch.Tensor | None = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    cls_token: bool = True,
) -> torch.Tensor:
    """Importance (U,) of ``units`` of ``layer`` over images x (B, ...).

    Neurons when ``encoder`` and ``dictionary`` are None; dictionary features otherwise, with
    ``encoder`` mapping position vectors (M, C) to codes (M, K) and ``dictionary`` (K, C).
    ``cls_token`` as in :class:`~stimuli.models.LayerCapture` (token layers only).
    """
    if (encoder is None) != (dictionary is None):
        raise ValueError(
            "give both encoder and dictionary (dictionary features) or neither (neurons)"
        )
    if len(x) == 0:
        raise ValueError("importance needs at least one image")
    total = torch.zeros(len(units), dtype=torch.float64)
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device)
        with LayerCapture(model, [layer], cls_token=cls_token) as cap:
            probs = torch.softmax(model(xb), dim=1)  # B, classes
        acts = cap.outputs[layer]  # B, C, H, W; B, C; or B, C, T', 1
        pred = probs.argmax(dim=1, keepdim=True)  # B, 1
        p0 = probs.gather(1, pred)[:, 0]  # B
        codes = None
        if encoder is not None:
            codes = encoder(to_positions(acts))  # B*H*W, K (or B, K)
        for i, unit in enumerate(units):
            edit = _remover(acts, unit, codes, dictionary)
            with edit_layer(model, layer, edit, cls_token=cls_token):
                p1 = torch.softmax(model(xb), dim=1).gather(1, pred)[:, 0]  # B
            total[i] += float((p0 - p1).double().sum())
    return (total / len(x)).float()


def _remover(acts, unit, codes, dictionary):
    """A function replacing the layer's output by ``acts`` without unit's contribution."""
    if codes is None:
        removed = acts.clone()
        removed[:, unit] = 0.0
        return lambda _out: removed
    contribution = codes[:, unit, None] * dictionary[unit].to(acts)[None, :]  # M, C
    if acts.ndim == 4:
        b, c, h, w = acts.shape
        contribution = contribution.reshape(b, h, w, c).permute(0, 3, 1, 2)  # B, C, H, W
    removed = acts - contribution
    return lambda _out: removed
