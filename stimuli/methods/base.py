"""How a unit is shown: an explanation method turns units into the images of its roles.

A method is a small class with an ``id``, a ``revision`` (bump it when its output changes:
its cached work is recomputed, every other method's reused), its own pydantic ``Config``
(the build file's ``[<id>]`` table) and the ``roles`` it writes (``max_refs``: images,
``queries``: pairs, ...). ``explain`` gets one unit at a time with a random generator seeded
from names (the build seed, the method's id, the unit's id and the config's digest), so its
output does not depend on which other units or methods a build holds. A method that
optimizes images overrides ``explain_batch`` instead, to explain ``batch_size()`` units of a
family in one run; the build caches each batch, so an interrupted build resumes there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from stimuli.stimulus_set import ImageRef, Pair

if TYPE_CHECKING:
    from stimuli.explain_context import ExplainContext
    from stimuli.sources.base import UnitSource

RoleKind = Literal["images", "pairs"]
Explanation = dict[str, list[ImageRef] | list[Pair]]  # role -> items


class MethodConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class UnitRef:
    """A unit to explain: its source and layer, and its index among the source's units."""

    source: str
    layer: str  # the layer hooked ("" = the model's output)
    index: int
    id: str  # the manifest entry id


class Method:
    """Base class: subclasses set the class attributes and implement :meth:`explain`."""

    id: ClassVar[str]
    revision: ClassVar[int]
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    description: ClassVar[str] = ""
    roles: ClassVar[dict[str, RoleKind]]
    # False for a method whose entries are not units (drawings of a corpus's categories):
    # it has its own builder, and unit builds refuse it
    explains_units: ClassVar[bool] = True

    def __init__(self, config: MethodConfig):
        self.config = config

    def unsupported(self, source: type[UnitSource]) -> str | None:
        """Why this method cannot explain the source's units, or None when it can."""
        return None

    def check(self, images: Any) -> str | None:
        """Why this method cannot work on the build's images (its ``[images]`` table: size,
        colour mode, ...), or None; reported with the config's other problems."""
        return None

    def n_extremes(self) -> int:
        """Natural extremes per unit (most and least activating images) it needs."""
        return 0

    def required(self) -> tuple[str, ...]:
        """Methods whose output this one builds on: the build must list them too, and
        explains them first (their roles are in ``ctx.explained``)."""
        return ()

    def batch_size(self) -> int | None:
        """Units of a family explained (and cached) together; None: all of them."""
        return None

    def explain(self, ctx: ExplainContext, unit: UnitRef, rng: np.random.Generator) -> Explanation:
        """The items of every role in ``roles`` for one unit."""
        raise NotImplementedError

    def explain_batch(self, ctx: ExplainContext, units: list[UnitRef],
                      rngs: list[np.random.Generator]) -> list[Explanation]:
        """The roles of several units of one family, each with its own generator."""
        return [self.explain(ctx, unit, rng) for unit, rng in zip(units, rngs, strict=True)]
