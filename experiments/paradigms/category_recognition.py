"""Category recognition of one-shot drawings (Boutin et al. 2024): which category is this?

Each trial shows one drawing, by one drawer (a person, or a model drawing a new category
from one exemplar), and ``n_choices`` category exemplars: its own and others of the same
corpus, in random positions; the participant clicks the exemplar it belongs to. A drawing
that keeps its category recognizable is matched; the drawers are compared by accuracy
(the ``drawer`` column). Trials rotate over drawers within each category, so that every
category is drawn by every drawer about equally often. Catch trials show the exemplar
itself as the drawing: anyone paying attention matches it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from experiments.paradigms.base import (
    Answer,
    Arrangement,
    Item,
    Paradigm,
    ParadigmOptions,
    PlanError,
    arrange,
    check_supply,
    condition_of,
)
from experiments.paradigms.drawings import (
    EXEMPLAR,
    DrawingOptions,
    check_drawings,
    drawings,
    feature_distance,
    method_of,
    rotation,
    shown_drawers,
)
from experiments.paradigms.drawings_report import drawer_section
from stimuli.stimulus_set import Entry, StimulusManifest

if TYPE_CHECKING:
    import pandas as pd

    from experiments.paradigms.base import Section
    from experiments.study import Condition, StudySpec


class RecognitionOptions(DrawingOptions):
    id: Literal["category_recognition"] = "category_recognition"
    n_choices: int = Field(default=4, ge=2, le=8)  # exemplars per trial, its own included


class RecognitionAnswer(Answer):
    choice: int = Field(ge=0, le=7)  # position of the exemplar chosen, 0-based


class CategoryRecognition(Paradigm):
    id = "category_recognition"
    revision = 1
    Options = RecognitionOptions
    Answer = RecognitionAnswer
    description = "category recognition: which exemplar's category does a drawing belong to?"
    roles: ClassVar[dict[str, bool]] = {}  # the drawers come from the `drawers` option
    plugin = "category-recognition"
    export_columns = ("drawer", "choice", "target_position", "n_choices")
    entry_type = "category"
    factor = "drawer"
    factor_reference = "human"

    def _arrangement(self, spec: StudySpec, manifest: StimulusManifest, condition: Condition,
                     rng: np.random.Generator | None) -> Arrangement:
        options: RecognitionOptions = spec.options_for(condition.name)  # type: ignore[assignment]
        method = method_of(condition)
        drawers = shown_drawers(spec, manifest, condition)
        entries = check_drawings(spec, manifest, condition, drawers)
        position = {e.id: i for i, e in enumerate(entries)}
        gen = rng if rng is not None else np.random.default_rng(0)

        def item(entry: Entry, drawing: str, drawer: str) -> Item:
            peers = [e for e in entries if e.id != entry.id and e.source == entry.source]
            others = [peers[i] for i in gen.choice(len(peers), options.n_choices - 1,
                                                   replace=False)]
            target = int(gen.integers(options.n_choices))
            shown = [e.stimulus.image for e in others]  # type: ignore[union-attr]
            shown.insert(target, entry.stimulus.image)  # type: ignore[union-attr]
            return Item({"drawing": drawing, "drawer": drawer, "choices": shown}, target)

        def enough(entry: Entry) -> bool:
            peers = sum(e.source == entry.source for e in entries) - 1
            return peers >= options.n_choices - 1

        def items(entry: Entry) -> list[Item]:
            if not enough(entry):
                return []
            n = min(len(drawings(entry, method, d)) for d in drawers)
            return [item(entry, drawings(entry, method, d)[j], d)
                    for d, j in rotation(drawers, n, position[entry.id])]

        def catch(entry: Entry, n: int) -> Item | None:
            if not enough(entry):
                return None
            return item(entry, entry.stimulus.image, EXEMPLAR)  # type: ignore[union-attr]

        return Arrangement(items, catch)

    def unit_roles(self, condition: Condition) -> list[tuple[str, str]]:
        return []  # categories are filtered by their drawers in _arrangement

    def check_feasible(self, spec: StudySpec, manifest: StimulusManifest) -> None:
        for condition in spec.conditions:
            options: RecognitionOptions = spec.options_for(condition.name)  # type: ignore
            arrangement = self._arrangement(spec, manifest, condition, None)
            if not any(arrangement.of(e) for e in check_drawings(
                    spec, manifest, condition, shown_drawers(spec, manifest, condition))):
                raise PlanError(f"condition {condition.name!r}: n_choices = "
                                f"{options.n_choices} needs {options.n_choices} categories "
                                "of one source with drawings")
            check_supply(spec, manifest, condition, arrangement,
                         "drawings (one per drawer and drawing of each category)")

    def plan(self, spec, manifest, cell, rng):
        condition = condition_of(spec, cell.condition)
        return arrange(spec, manifest, cell, rng,
                       self._arrangement(spec, manifest, condition, rng))

    def view(self, trial: dict[str, Any], image_url: Callable[[str], str]) -> dict[str, Any]:
        s = trial["stimuli"]
        return {"drawing": image_url(s["drawing"]),
                "choices": [image_url(d) for d in s["choices"]]}

    def score(self, key: Any, answer: RecognitionAnswer) -> float:
        return float(answer.choice == key)

    def chance(self, options: ParadigmOptions) -> float:
        return 1.0 / options.n_choices  # type: ignore[attr-defined]

    def export_row(self, trial: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
        s = trial["stimuli"]
        return {"drawer": s["drawer"], "choice": answer["choice"] + 1,
                "target_position": trial["key"] + 1, "n_choices": len(s["choices"])}

    def simulate(self, view, options, rng, skill, features):
        """Picks the exemplar nearest the drawing in ``features``, noisily; distances are
        z-scored within the trial, so what counts is how much the right exemplar stands out."""
        distance = np.array([feature_distance(features, view["drawing"], c)
                             for c in view["choices"]])
        z = (distance - distance.mean()) / (distance.std() + 1e-9)
        return {"choice": int(np.argmax(-2.0 * skill * z + rng.gumbel(size=len(z))))}

    def report_sections(self, trials: pd.DataFrame) -> list[Section]:
        section = drawer_section(trials, "Category recognition by drawer",
                                 "a drawing matched to its own category's exemplar")
        return [section] if section is not None else []
