"""Human or machine? A visual Turing test of one-shot drawings (Boutin et al. 2024).

Each trial shows a category's exemplar and two drawings of it, side by side in random
order: one by the ``human`` drawer, one by a model; the participant clicks the one they
think a person drew. Picking the human drawing is "correct", so accuracy near chance (0.5)
means the model's drawings pass for human ones; the ``drawer`` column names the model.
Trials rotate over the models within each category. There are no catch trials: no pair of
drawings makes "which one did a person draw?" obvious without also changing the question.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

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
    HUMAN,
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


class HumanVsMachineOptions(DrawingOptions):
    """``drawers``: the models shown against the human drawings (default: every model)."""

    id: Literal["human_vs_machine"] = "human_vs_machine"

    @field_validator("drawers")
    @classmethod
    def _models_only(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and HUMAN in value:
            raise ValueError(f"drawers names the models; {HUMAN!r} is always shown")
        return value


class HumanVsMachineAnswer(Answer):
    choice: int = Field(ge=0, le=1)  # position of the drawing chosen as human's, 0-based


def machines(spec: StudySpec, manifest: StimulusManifest, condition: Condition) -> list[str]:
    return [d for d in shown_drawers(spec, manifest, condition) if d != HUMAN]


class HumanVsMachine(Paradigm):
    id = "human_vs_machine"
    revision = 1
    Options = HumanVsMachineOptions
    Answer = HumanVsMachineAnswer
    description = "human vs machine: which of two drawings of an exemplar did a person draw?"
    roles: ClassVar[dict[str, bool]] = {}  # human and the models of the `drawers` option
    plugin = "human-vs-machine"
    export_columns = ("drawer", "choice", "human_position")
    entry_type = "category"
    catch_trials = False
    factor = "drawer"

    def _arrangement(self, spec: StudySpec, manifest: StimulusManifest, condition: Condition,
                     rng: np.random.Generator | None) -> Arrangement:
        method = method_of(condition)
        models = machines(spec, manifest, condition)
        entries = check_drawings(spec, manifest, condition, [HUMAN, *models])
        position = {e.id: i for i, e in enumerate(entries)}
        gen = rng if rng is not None else np.random.default_rng(0)

        def items(entry: Entry) -> list[Item]:
            human = drawings(entry, method, HUMAN)
            n = min(len(drawings(entry, method, m)) for m in models) if models else 0
            out = []
            for model, j in rotation(models, n, position[entry.id]):
                pair = [human[j % len(human)], drawings(entry, method, model)[j]]
                first = int(gen.integers(2))  # the human drawing's position
                out.append(Item({"exemplar": entry.stimulus.image,  # type: ignore[union-attr]
                                 "drawings": pair if first == 0 else pair[::-1],
                                 "drawer": model}, first))
            return out

        return Arrangement(items, None)

    def unit_roles(self, condition: Condition) -> list[tuple[str, str]]:
        return []  # categories are filtered by their drawers in _arrangement

    def check_feasible(self, spec: StudySpec, manifest: StimulusManifest) -> None:
        for condition in spec.conditions:
            check_drawings(spec, manifest, condition, [HUMAN])
            if not machines(spec, manifest, condition):
                raise PlanError(f"condition {condition.name!r}: no model's drawings to show "
                                "against the human ones (drawers: only human)")
            check_supply(spec, manifest, condition,
                         self._arrangement(spec, manifest, condition, None),
                         "drawing pairs (one per model and drawing of each category)")

    def plan(self, spec, manifest, cell, rng):
        condition = condition_of(spec, cell.condition)
        return arrange(spec, manifest, cell, rng,
                       self._arrangement(spec, manifest, condition, rng))

    def view(self, trial: dict[str, Any], image_url: Callable[[str], str]) -> dict[str, Any]:
        s = trial["stimuli"]
        return {"exemplar": image_url(s["exemplar"]),
                "drawings": [image_url(d) for d in s["drawings"]]}

    def score(self, key: Any, answer: HumanVsMachineAnswer) -> float:
        return float(answer.choice == key)

    def chance(self, options: ParadigmOptions) -> float:
        return 0.5

    def export_row(self, trial: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
        return {"drawer": trial["stimuli"]["drawer"], "choice": answer["choice"] + 1,
                "human_position": trial["key"] + 1}

    def simulate(self, view, options, rng, skill, features):
        """Takes the drawing nearer the exemplar in ``features`` for the human one (a
        person copies faithfully, a model drifts), noisily: each drawing's evidence is its
        share of the two distances, so the feature scale does not matter."""
        distance = np.array([feature_distance(features, view["exemplar"], d)
                             for d in view["drawings"]])
        share = distance / (distance.sum() + 1e-9)
        return {"choice": int(np.argmax(-6.0 * skill * share + rng.gumbel(size=2)))}

    def report_sections(self, trials: pd.DataFrame) -> list[Section]:
        section = drawer_section(trials, "Human vs machine by model",
                                 "the human drawing picked as the human one")
        return [section] if section is not None else []
