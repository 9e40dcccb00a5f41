"""The 2AFC exemplar task (Borowski et al. 2021; Zimmermann et al. 2021/2023).

Minimally activating references on one side, maximally activating ones on the other, and a
query pair in the middle: which query belongs with the strong examples? A condition chooses
where each role comes from: references (``max_refs``, ``min_refs``) from natural exemplars,
feature visualizations, or ``none`` (the no-explanation baseline); ``queries`` and ``catch``
pairs from natural exemplars. Catch pairs are taken from the shown references, so the answer
is obvious to anyone paying attention.
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
    check_roles,
    check_supply,
    condition_of,
    n_catch,
)
from stimuli.stimulus_set import Entry, Pair, StimulusManifest

if TYPE_CHECKING:
    from experiments.study import Condition, StudySpec


class TwoAFCOptions(ParadigmOptions):
    id: Literal["2afc_exemplar"] = "2afc_exemplar"
    n_references: int = Field(default=9, ge=1, le=20)
    max_side: Literal["left", "right"] = "right"


class TwoAFCAnswer(Answer):
    choice: Literal["a", "b"]
    confidence: int = Field(ge=1, le=3)


def _shown(refs: list[str], k: int, keep: str | None) -> list[str]:
    """The first k references; a catch image beyond them takes the last place."""
    shown = refs[:k]
    if keep is not None and keep not in shown:
        shown = [*shown[:-1], keep]
    return shown


class TwoAFC(Paradigm):
    id = "2afc_exemplar"
    revision = 1
    Options = TwoAFCOptions
    Answer = TwoAFCAnswer
    description = "2AFC exemplar task: which query goes with the strong references?"
    roles: ClassVar[dict[str, bool]] = {
        "queries": True, "max_refs": False, "min_refs": False, "catch": False,
    }
    plugin = "2afc"
    export_columns = ("choice", "confidence")

    def _arrangement(self, spec: StudySpec, condition: Condition,
                     rng: np.random.Generator | None) -> Arrangement:
        options = spec.options_for(condition.name)
        k = options.n_references  # type: ignore[attr-defined]
        queries, refs = condition.method_for("queries"), condition.method_for("max_refs")
        catch = condition.method_for("catch")

        def item(entry: Entry, pair: Pair, is_catch: bool) -> Item:
            ref_max = [r.image for r in entry.role(refs, "max_refs")] if refs else []
            ref_min = [r.image for r in entry.role(refs, "min_refs")] if refs else []
            ref_max = _shown(ref_max, k, pair.max.image if is_catch else None)
            ref_min = _shown(ref_min, k, pair.min.image if is_catch else None)
            max_first = bool(rng.integers(2)) if rng is not None else True
            a, b = (pair.max, pair.min) if max_first else (pair.min, pair.max)
            return Item({"ref_max": ref_max, "ref_min": ref_min, "query_a": a.image,
                         "query_b": b.image}, "a" if max_first else "b")

        def items(entry: Entry) -> list[Item]:
            return [item(entry, p, False) for p in entry.role(queries, "queries")]

        def catch_item(entry: Entry, n: int) -> Item | None:
            pairs = entry.role(catch, "catch") if catch else []
            return item(entry, pairs[n % len(pairs)], True) if pairs else None

        return Arrangement(items, catch_item)

    def check_feasible(self, spec: StudySpec, manifest: StimulusManifest) -> None:
        check_roles(spec, manifest)
        for condition in spec.conditions:
            name = condition.name
            refs = condition.method_for("max_refs")
            if (refs is None) != (condition.method_for("min_refs") is None):
                raise PlanError(f"condition {name!r}: max_refs and min_refs must both be shown "
                                "or both be 'none'")
            catch = condition.method_for("catch")
            if n_catch(spec) > 0 and refs is None:
                raise PlanError(f"condition {name!r}: catch trials need references "
                                "(set trials.catch_rate = 0 for a condition without them)")
            if n_catch(spec) > 0 and catch != refs:
                raise PlanError(f"condition {name!r}: catch pairs must come from the "
                                f"method of the references ({refs}), not {catch}")
            check_supply(spec, manifest, condition, self._arrangement(spec, condition, None),
                         "query pairs")

    def plan(self, spec, manifest, cell, rng):
        condition = condition_of(spec, cell.condition)
        return arrange(spec, manifest, cell, rng, self._arrangement(spec, condition, rng))

    def view(self, trial: dict[str, Any], image_url: Callable[[str], str]) -> dict[str, Any]:
        s = trial["stimuli"]
        return {
            "ref_max": [image_url(d) for d in s["ref_max"]],
            "ref_min": [image_url(d) for d in s["ref_min"]],
            "query_a": image_url(s["query_a"]),
            "query_b": image_url(s["query_b"]),
        }

    def score(self, key: Any, answer: TwoAFCAnswer) -> float:
        return float(answer.choice == key)

    def chance(self, options: ParadigmOptions) -> float:
        return 0.5

    def export_row(self, trial: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
        return {"choice": answer["choice"], "confidence": answer["confidence"]}

    def simulate(self, view, options, rng, skill, features):
        """Compares each query's mean colour with the two reference sets' mean colours; with
        no references it can only guess."""
        if view["ref_max"] and view["ref_min"]:
            ref_max = np.mean([features(u) for u in view["ref_max"]], axis=0)
            ref_min = np.mean([features(u) for u in view["ref_min"]], axis=0)
            evidence = [
                np.linalg.norm(features(q) - ref_min) - np.linalg.norm(features(q) - ref_max)
                for q in (view["query_a"], view["query_b"])
            ]
            margin = skill * (evidence[0] - evidence[1]) / 80.0 + rng.logistic()
        else:
            margin = rng.logistic()
        return {"choice": "a" if margin > 0 else "b",
                "confidence": int(min(3, 1 + abs(margin) // 1.5))}
