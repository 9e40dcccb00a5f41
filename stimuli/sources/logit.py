"""Class logits: the model's output units, one per class (what the model decides)."""

from __future__ import annotations

from stimuli.sources.base import UnitSource


class ClassLogit(UnitSource):
    id = "logit"
    revision = 1
    description = "the model's class logits (its output, one unit per class)"
    fixed_layer = ""  # the model's output, whatever layers the build lists
    fixed_layer_name = "logits"

    def has_importance(self) -> bool:
        return False
