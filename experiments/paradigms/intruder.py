"""Intruder detection (odd one out): which image does not belong with the others?

Several exemplars of one unit plus one intruder, in random positions; the participant clicks
the intruder and says how sure they are. The intruder is a strongly activating image of
another unit of the same source and layer, or one of the unit's own weakly activating
images. It rates how coherent a unit's exemplars look without any query, which is how
word-intrusion tests rate topics and how neurons and dictionary features can be compared
(Fel et al. 2023; Zimmermann et al. 2023). Catch trials repeat one image and add another:
anyone paying attention finds it.
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
    Section,
    arrange,
    check_roles,
    check_supply,
    condition_entries,
    condition_of,
)
from stimuli.stimulus_set import Entry, StimulusManifest

if TYPE_CHECKING:
    import pandas as pd

    from experiments.study import Condition, StudySpec


class IntruderOptions(ParadigmOptions):
    id: Literal["intruder"] = "intruder"
    n_items: int = Field(default=5, ge=3, le=9)  # images per trial, the intruder included
    intruder: Literal["other_unit", "min_refs"] = "other_unit"
    sets_per_unit: int = Field(default=4, ge=1, le=50)  # trials a unit can supply


class IntruderAnswer(Answer):
    choice: int = Field(ge=0, le=8)  # position of the image chosen, 0-based
    confidence: int = Field(ge=1, le=3)


class Intruder(Paradigm):
    id = "intruder"
    revision = 1
    Options = IntruderOptions
    Answer = IntruderAnswer
    description = "intruder detection: find the image that is not an exemplar of the unit"
    roles: ClassVar[dict[str, bool]] = {"max_refs": True, "min_refs": False}
    plugin = "intruder"
    export_columns = ("choice", "confidence", "n_items", "intruder_position", "intruder_from")

    def _arrangement(self, spec: StudySpec, manifest: StimulusManifest, condition: Condition,
                     rng: np.random.Generator | None) -> Arrangement:
        options: IntruderOptions = spec.options_for(condition.name)  # type: ignore[assignment]
        refs = condition.method_for("max_refs")
        lows = condition.method_for("min_refs")
        entries = condition_entries(spec, manifest, condition)
        n_shown = options.n_items - 1
        gen = rng if rng is not None else np.random.default_rng(0)

        def peers(entry: Entry) -> list[Entry]:
            return [e for e in entries
                    if e.id != entry.id and (e.source, e.layer) == (entry.source, entry.layer)]

        def place(members: list[str], intruder: str, source: str) -> Item:
            position = int(gen.integers(options.n_items))
            items = [*members[:position], intruder, *members[position:]]
            return Item({"items": items, "intruder_from": source}, position)

        def items(entry: Entry) -> list[Item]:
            top = [r.image for r in entry.role(refs, "max_refs")]
            if len(top) < n_shown:
                return []
            out = []
            for _ in range(options.sets_per_unit):
                members = [top[i] for i in sorted(gen.choice(len(top), n_shown, replace=False))]
                if options.intruder == "min_refs":
                    candidates = [r.image for r in entry.role(lows, "min_refs")] if lows else []
                    source = "min_refs"
                else:
                    others = peers(entry)
                    other = others[int(gen.integers(len(others)))] if others else None
                    candidates = [r.image for r in other.role(refs, "max_refs")] if other else []
                    source = "other_unit"
                candidates = [c for c in candidates if c not in members]
                if not candidates:
                    return out
                out.append(place(members, candidates[int(gen.integers(len(candidates)))], source))
            return out

        def catch(entry: Entry, n: int) -> Item | None:
            top = [r.image for r in entry.role(refs, "max_refs")]
            others = [r.image for p in peers(entry) for r in p.role(refs, "max_refs")
                      if r.image != top[0]]
            if not top or not others:
                return None
            return place([top[0]] * n_shown, others[n % len(others)], "catch")

        return Arrangement(items, catch)

    def check_feasible(self, spec: StudySpec, manifest: StimulusManifest) -> None:
        check_roles(spec, manifest)
        for condition in spec.conditions:
            name = condition.name
            options: IntruderOptions = spec.options_for(name)  # type: ignore[assignment]
            if options.intruder == "min_refs" and condition.method_for("min_refs") is None:
                raise PlanError(f"condition {name!r}: intruder = 'min_refs' needs the min_refs "
                                "role")
            check_supply(spec, manifest, condition,
                         self._arrangement(spec, manifest, condition, None),
                         f"intruder trials (units with at least {options.n_items - 1} references, "
                         f"{options.sets_per_unit} each)")

    def plan(self, spec, manifest, cell, rng):
        condition = condition_of(spec, cell.condition)
        return arrange(spec, manifest, cell, rng,
                       self._arrangement(spec, manifest, condition, rng))

    def view(self, trial: dict[str, Any], image_url: Callable[[str], str]) -> dict[str, Any]:
        return {"items": [image_url(d) for d in trial["stimuli"]["items"]]}

    def score(self, key: Any, answer: IntruderAnswer) -> float:
        return float(answer.choice == key)

    def chance(self, options: ParadigmOptions) -> float:
        return 1.0 / options.n_items  # type: ignore[attr-defined]

    def export_row(self, trial: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
        return {
            "choice": answer["choice"] + 1,
            "confidence": answer["confidence"],
            "n_items": len(trial["stimuli"]["items"]),
            "intruder_position": trial["key"] + 1,
            "intruder_from": trial["stimuli"]["intruder_from"],
        }

    def simulate(self, view, options, rng, skill, features):
        """Picks the image farthest in mean colour from the mean of the others, noisily;
        distances are z-scored within the trial, so what counts is how much the intruder
        stands out against the exemplars' own spread, not the images' colour scale."""
        x = np.array([features(u) for u in view["items"]])  # n, 3
        total = x.sum(axis=0)
        others = (total[None, :] - x) / (len(x) - 1)
        distance = np.linalg.norm(x - others, axis=1)
        z = (distance - distance.mean()) / (distance.std() + 1e-9)
        utility = 2.0 * skill * z + rng.gumbel(size=len(x))
        choice = int(np.argmax(utility))
        margin = np.sort(utility)[-1] - np.sort(utility)[-2]
        return {"choice": choice, "confidence": int(min(3, 1 + margin // 1.5))}

    def report_sections(self, trials: pd.DataFrame) -> list[Section]:
        # matplotlib is the report's, imported here: the participant server's workers,
        # which import every paradigm, never draw
        from matplotlib.figure import Figure

        main = trials[(trials["trial_kind"] == "main") & ~trials["excluded"]]
        if main.empty or "intruder_position" not in main:
            return []
        by_position = (
            main.groupby("intruder_position", observed=True)
            .agg(trials=("correct", "size"), accuracy=("correct", "mean"))
            .reset_index()
        )
        chosen = main["choice"].astype(float).value_counts(normalize=True).sort_index()
        fig = Figure(figsize=(5.2, 3.2))
        ax = fig.subplots()
        ax.bar(chosen.index.astype(int), chosen.to_numpy(), color="#1f6fb2", label="chosen")
        n = int(main["n_items"].max())
        ax.axhline(1 / n, color="#888", ls="--", lw=1, label="uniform")
        ax.set_xlabel("position of the image chosen")
        ax.set_ylabel("proportion of main trials")
        ax.set_xticks(range(1, n + 1))
        ax.legend(frameon=False, fontsize=8)
        by_source = (
            main.groupby("intruder_from", observed=True)
            .agg(trials=("correct", "size"), accuracy=("correct", "mean"))
            .reset_index()
        )
        return [Section(
            title="Intruder detection",
            paragraphs=(
                f"Chance is 1/{n} = {1 / n:.3f}. A participant without a position preference "
                "chooses each position equally often; a bar far above the line is a bias.",
            ),
            tables=(("Accuracy by the intruder's position", by_position),
                    ("Accuracy by where the intruder came from", by_source)),
            figures=(("Positions chosen", fig),),
        )]
