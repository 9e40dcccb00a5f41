"""What the drawing paradigms share: which drawers a condition shows, and its categories.

A drawing stimulus set has one ``category`` entry per category: its exemplar
(``stimulus``) and, under the ``drawings`` method, one role per *drawer* (``human``, the
corpus's own variants or people's drawings, or a model named by its regularizer: ``kl``,
``vq``, ...), each listing drawings of that category. A condition names the method
(``method = "drawings"``) and its corpus (``source``); the paradigm option ``drawers``
chooses which drawers it shows (default: every one the set has), so that two conditions
can show different drawers, or one condition all of them mixed within participants.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import field_validator

from experiments.paradigms.base import ParadigmOptions, PlanError
from stimuli.stimulus_set import Entry, StimulusManifest

if TYPE_CHECKING:
    from experiments.study import Condition, StudySpec

HUMAN = "human"  # the drawer whose drawings are people's (or the corpus's own variants)
EXEMPLAR = "exemplar"  # the `drawer` of a catch trial that shows the exemplar itself


class DrawingOptions(ParadigmOptions):
    """Options of every drawing paradigm: ``drawers`` shown (None: all the set has)."""

    drawers: tuple[str, ...] | None = None

    @field_validator("drawers")
    @classmethod
    def _drawers(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and (not value or len(set(value)) != len(value)):
            raise ValueError("drawers must name at least one drawer, each once")
        return value


def drawer_order(drawers: set[str] | list[str]) -> list[str]:
    """``human`` first, then the models in alphabetical order (a fixed order for plans)."""
    return sorted(drawers, key=lambda d: (d != HUMAN, d))


def method_of(condition: Condition) -> str:
    return condition.method


def categories(manifest: StimulusManifest, condition: Condition) -> list[Entry]:
    """The condition's categories: entries of its sources with an exemplar."""
    return [e for e in manifest.entries if e.type == "category"
            and e.source in condition.source and e.stimulus is not None]


def present_drawers(manifest: StimulusManifest, condition: Condition) -> list[str]:
    method = method_of(condition)
    return drawer_order({r for e in categories(manifest, condition)
                         for r, items in e.explanations.get(method, {}).items() if items})


def shown_drawers(spec: StudySpec, manifest: StimulusManifest, condition: Condition) -> list[str]:
    """The drawers a condition shows: its ``drawers`` option, else all the set has."""
    options: DrawingOptions = spec.options_for(condition.name)  # type: ignore[assignment]
    return list(options.drawers) if options.drawers is not None \
        else present_drawers(manifest, condition)


def drawings(entry: Entry, method: str, drawer: str) -> list[str]:
    return [r.image for r in entry.role(method, drawer)]


def check_drawings(spec: StudySpec, manifest: StimulusManifest, condition: Condition,
                   needed: list[str]) -> list[Entry]:
    """The condition's categories that have drawings of every drawer in ``needed``; raises
    PlanError naming the method, source or drawer the set lacks."""
    name, method = condition.name, method_of(condition)
    entries = categories(manifest, condition)
    if not entries:
        present = sorted({e.source for e in manifest.entries if e.type == "category"})
        raise PlanError(f"condition {name!r}: the stimulus set has no drawing categories of "
                        f"source {', '.join(condition.source)} (it has "
                        f"{', '.join(present) or 'none'})")
    if method not in manifest.methods():
        raise PlanError(f"condition {name!r}: method {method!r} is not in the stimulus set "
                        f"(it has {', '.join(sorted(manifest.methods()))}); drawing paradigms "
                        "show the drawers of method = \"drawings\"")
    present = present_drawers(manifest, condition)
    for drawer in needed:
        if drawer not in present:
            raise PlanError(f"condition {name!r}: no category has {method} drawings by "
                            f"{drawer!r} (drawers: {', '.join(present) or 'none'})")
    return [e for e in entries if all(drawings(e, method, d) for d in needed)]


def rotation(drawers: list[str], n: int, offset: int) -> list[tuple[str, int]]:
    """(drawer, drawing index) for the items of one category: drawers take turns, starting
    at ``offset`` (each category starts at another one, so that every round of categories
    shows the drawers about equally often), each drawer's drawings in order."""
    return [(drawers[(k + offset) % len(drawers)], k // len(drawers))
            for k in range(n * len(drawers))]


def feature_distance(features: Any, a: str, b: str) -> float:
    return float(np.linalg.norm(np.asarray(features(a)) - np.asarray(features(b))))
