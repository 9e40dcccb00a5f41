"""The 2AFC exemplar task (Borowski et al. 2021; Zimmermann et al. 2021/2023).

Minimally activating references on one side, maximally activating ones on the other, and a
query pair in the middle: which query belongs with the strong examples? A condition chooses
where each role comes from: references (``max_refs``, ``min_refs``) from natural exemplars,
feature visualizations, accentuations, several of them together (``["exemplars", "maco"]``:
``n_references`` of each, one group per method in the order listed), or ``none`` (the
no-explanation baseline); ``queries`` from natural exemplars. Catch pairs come from one of the
reference methods and are among the references shown, so the answer is obvious to anyone
paying attention; a condition without references has no catch trials.

Each trial stores which references it showed (``references``: the method ids joined by
``+``, or ``none``), which the export carries and the report groups accuracy by.
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
from experiments.paradigms.two_afc_report import NO_REFERENCES, references_section
from stimuli.stimulus_set import Entry, Pair, StimulusManifest

if TYPE_CHECKING:
    import pandas as pd

    from experiments.paradigms.base import Section
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


def references_label(methods: list[str]) -> str:
    """What the export calls a trial's references: ``exemplars``, ``exemplars+maco``,
    ``none``."""
    return "+".join(methods) or NO_REFERENCES


def catch_method(condition: Condition) -> str | None:
    """The method a condition's catch pairs come from; None when it has no catch trials:
    ``catch = "none"``, or no references (and no catch method named), since a catch pair
    is obvious only against the references it is taken from."""
    if not condition.methods_for("max_refs") and "catch" not in condition.roles:
        return None
    return condition.method_for("catch")


class TwoAFC(Paradigm):
    id = "2afc_exemplar"
    revision = 2  # references from several methods; trials store `references`
    Options = TwoAFCOptions
    Answer = TwoAFCAnswer
    description = "2AFC exemplar task: which query goes with the strong references?"
    roles: ClassVar[dict[str, bool]] = {
        "queries": True, "max_refs": False, "min_refs": False, "catch": False,
    }
    combinable = frozenset({"max_refs", "min_refs"})
    plugin = "2afc"
    export_columns = ("choice", "confidence", "references")

    def unit_roles(self, condition: Condition) -> list[tuple[str, str]]:
        """Queries, and both reference roles of every reference method: a unit that lacks
        one would show a trial of another reference condition than its participants'."""
        refs = condition.methods_for("max_refs")
        return [*super().unit_roles(condition),
                *((m, role) for m in refs for role in ("max_refs", "min_refs"))]

    def _arrangement(self, spec: StudySpec, condition: Condition,
                     rng: np.random.Generator | None) -> Arrangement:
        options = spec.options_for(condition.name)
        k = options.n_references  # type: ignore[attr-defined]
        queries, refs = condition.method_for("queries"), condition.methods_for("max_refs")
        catch = catch_method(condition)
        label = references_label(refs)

        def item(entry: Entry, pair: Pair, is_catch: bool) -> Item:
            ref_max: list[str] = []
            ref_min: list[str] = []
            groups = []  # [shown max, shown min] per reference method, in display order
            for method in refs:
                keep = is_catch and method == catch
                top = _shown([r.image for r in entry.role(method, "max_refs")], k,
                             pair.max.image if keep else None)
                low = _shown([r.image for r in entry.role(method, "min_refs")], k,
                             pair.min.image if keep else None)
                ref_max += top
                ref_min += low
                groups.append([len(top), len(low)])
            max_first = bool(rng.integers(2)) if rng is not None else True
            a, b = (pair.max, pair.min) if max_first else (pair.min, pair.max)
            return Item({"ref_max": ref_max, "ref_min": ref_min, "ref_groups": groups,
                         "references": label, "query_a": a.image, "query_b": b.image},
                        "a" if max_first else "b")

        def items(entry: Entry) -> list[Item]:
            return [item(entry, p, False) for p in entry.role(queries, "queries")]

        def catch_item(entry: Entry, n: int) -> Item | None:
            pairs = entry.role(catch, "catch") if catch else []
            return item(entry, pairs[n % len(pairs)], True) if pairs else None

        return Arrangement(items, catch_item if catch is not None else None)

    def check_feasible(self, spec: StudySpec, manifest: StimulusManifest) -> None:
        check_roles(spec, manifest)
        for condition in spec.conditions:
            name = condition.name
            refs = condition.methods_for("max_refs")
            lows = condition.methods_for("min_refs")
            if refs != lows:
                raise PlanError(f"condition {name!r}: max_refs and min_refs must name the same "
                                f"methods, or both be 'none' (max_refs: "
                                f"{references_label(refs)}, min_refs: {references_label(lows)})")
            catch = catch_method(condition)
            if n_catch(spec) > 0 and catch is not None and catch not in refs:
                shown = f"among its references ({', '.join(refs)})" if refs else \
                    "shown: the condition has no references (leave catch out of its roles)"
                raise PlanError(f"condition {name!r}: role 'catch' asks for method {catch!r}, "
                                f"whose images are not {shown}")
            check_supply(spec, manifest, condition, self._arrangement(spec, condition, None),
                         "query pairs")

    def plan(self, spec, manifest, cell, rng):
        condition = condition_of(spec, cell.condition)
        return arrange(spec, manifest, cell, rng, self._arrangement(spec, condition, rng))

    def view(self, trial: dict[str, Any], image_url: Callable[[str], str]) -> dict[str, Any]:
        """``ref_groups``: [max, min] references per method, so that the browser lays out
        one group per method; trials planned before there were groups have one."""
        s = trial["stimuli"]
        groups = s.get("ref_groups")
        if groups is None:
            groups = [[len(s["ref_max"]), len(s["ref_min"])]] if s["ref_max"] else []
        return {
            "ref_max": [image_url(d) for d in s["ref_max"]],
            "ref_min": [image_url(d) for d in s["ref_min"]],
            "ref_groups": groups,
            "query_a": image_url(s["query_a"]),
            "query_b": image_url(s["query_b"]),
        }

    def score(self, key: Any, answer: TwoAFCAnswer) -> float:
        return float(answer.choice == key)

    def chance(self, options: ParadigmOptions) -> float:
        return 0.5

    def export_row(self, trial: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
        """``references`` as planned; trials planned before it was stored have it only when
        they showed none (else it is unknown: None)."""
        s = trial["stimuli"]
        references = s.get("references", None if s["ref_max"] else NO_REFERENCES)
        return {"choice": answer["choice"], "confidence": answer["confidence"],
                "references": references}

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

    def report_sections(self, trials: pd.DataFrame) -> list[Section]:
        section = references_section(trials, chance=0.5)
        return [section] if section is not None else []
