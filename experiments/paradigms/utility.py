"""The utility benchmark (Colin, Fel, Cadene and Serre, NeurIPS 2022, "What I cannot predict,
I do not understand"): can people predict a model's decisions after learning from its
explanations?

A participant goes through ``sessions`` sessions. Each has a learning phase (``learning``
images, each with the model's decision and, by condition, one method's explanation of it or
none) and an evaluation phase (new images, no explanation: which class will the model
choose?). Conditions are between participants; a method is useful when its participants
predict the model better than the baseline's (condition method ``none``): the utility score
is the ratio of their accuracies (see ``utility_report``).

The stimulus set holds ``decision`` entries (``stimuli.decisions``): an image
(``stimulus``), the model's decision (covariate ``decision``), and per method one
``explanation`` image: the map over the image (``image``), the raw map (``map``) and its
faithfulness scores (``meta``). The set's ``provenance.classes`` names the classes in order.
Entries carry ``covariates.phase`` = ``learning`` or ``evaluation``, so that every
condition learns from and is tested on the same images. Learning trials are stored with
kind ``learning`` (answer: none); evaluation trials are the main trials.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from experiments.paradigms.base import (
    Answer,
    Paradigm,
    ParadigmOptions,
    PlanError,
    Trial,
    condition_entries,
    condition_of,
)
from experiments.paradigms.utility_learner import Learner
from stimuli.stimulus_set import Entry, StimulusManifest

if TYPE_CHECKING:
    import pandas as pd

    from experiments.paradigms.base import Cell, ImagePixels, Responder, Section
    from experiments.study import Condition, StudySpec

ROLE = "explanation"
NO_EXPLANATION = "none"
FAITHFULNESS = ("deletion", "insertion", "mufidelity")


class UtilityOptions(ParadigmOptions):
    id: Literal["utility"] = "utility"
    sessions: int = Field(default=3, ge=1, le=10)
    learning: int = Field(default=8, ge=1, le=200)  # learning images per session
    learning_view_ms: int = Field(default=2500, ge=0, le=60_000)  # before "Next" unlocks


class UtilityAnswer(Answer):
    # the class predicted (0-based, in provenance.classes order); None on learning trials
    choice: int | None = Field(default=None, ge=0, le=99)


def classes_of(manifest: StimulusManifest) -> list[str]:
    """The model's classes, in the order buttons show them."""
    named = manifest.provenance.get("classes")
    if isinstance(named, list) and named:
        return [str(c) for c in named]
    return sorted({str(e.covariates.get("decision")) for e in manifest.entries
                   if e.type == "decision"})


def _method(condition: Condition) -> str | None:
    return condition.method_for(ROLE)


def _phase_entries(spec: StudySpec, manifest: StimulusManifest,
                   condition: Condition) -> dict[str, list[Entry]]:
    entries = condition_entries(spec, manifest, condition)
    return {phase: [e for e in entries if e.covariates.get("phase") == phase]
            for phase in ("learning", "evaluation")}


def _per_session(total: int, sessions: int) -> list[int]:
    return [total // sessions + (i < total % sessions) for i in range(sessions)]


def _stratified(entries: list[Entry], n: int, rng: np.random.Generator) -> list[Entry]:
    """n entries drawn without replacement, as evenly over the model's decisions as they
    allow (round-robin over decisions in a shuffled order), then shuffled."""
    by: dict[str, list[Entry]] = {}
    for i in rng.permutation(len(entries)):
        by.setdefault(str(entries[i].covariates.get("decision")), []).append(entries[i])
    queues = [by[k] for k in sorted(by)]
    out: list[Entry] = []
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop())
    return [out[i] for i in rng.permutation(len(out))]


class Utility(Paradigm):
    id = "utility"
    revision = 1
    Options = UtilityOptions
    Answer = UtilityAnswer
    description = ("utility benchmark: predict a model's decisions after learning from its "
                   "explanations")
    roles: ClassVar[dict[str, bool]] = {ROLE: False}  # "none": the baseline condition
    plugin = "utility"
    export_columns = ("explanation", "session", "decision", "choice", *FAITHFULNESS)
    entry_type = "decision"
    catch_trials = False
    practice = False
    factor = "explanation"
    factor_reference = NO_EXPLANATION
    factor_by = "session"

    def check_feasible(self, spec: StudySpec, manifest: StimulusManifest) -> None:
        if spec.practice.trials:
            raise PlanError("the utility paradigm has no practice trials (its learning phase "
                            "teaches the task): set practice.trials = 0")
        classes = classes_of(manifest)
        if len(classes) != 2:
            raise PlanError(f"the utility paradigm asks for one of two decisions; the "
                            f"stimulus set's model has {len(classes)} classes")
        for condition in spec.conditions:
            options: UtilityOptions = spec.options_for(condition.name)  # type: ignore[assignment]
            pools = _phase_entries(spec, manifest, condition)
            need = {"learning": options.learning * options.sessions,
                    "evaluation": spec.trials.main}
            for phase, n in need.items():
                if len(pools[phase]) < n:
                    raise PlanError(
                        f"condition {condition.name!r}: the stimulus set has "
                        f"{len(pools[phase])} {phase} images"
                        + (f" with {_method(condition)} explanations" if _method(condition)
                           else "")
                        + f", but the study needs {n}")
            if spec.trials.main < options.sessions:
                raise PlanError(f"condition {condition.name!r}: trials.main "
                                f"({spec.trials.main}) is smaller than the number of sessions")

    def cells(self, spec: StudySpec, manifest: StimulusManifest) -> list[Cell]:
        from experiments.paradigms.base import Cell

        return [Cell(c.name, ()) for c in spec.conditions]

    def plan(self, spec: StudySpec, manifest: StimulusManifest, cell: Cell,
             rng: np.random.Generator) -> list[Trial]:
        """Per session: its learning trials, then its evaluation trials; no image twice."""
        condition = condition_of(spec, cell.condition)
        options: UtilityOptions = spec.options_for(condition.name)  # type: ignore[assignment]
        method = _method(condition)
        classes = classes_of(manifest)
        pools = _phase_entries(spec, manifest, condition)
        learn = _stratified(pools["learning"], options.learning * options.sessions, rng)
        evaluate = _stratified(pools["evaluation"], spec.trials.main, rng)
        trials: list[Trial] = []

        def add(kind: str, session: int, entry: Entry) -> None:
            decision = classes.index(str(entry.covariates["decision"]))
            shown = entry.role(method, ROLE)[0] if method else None
            stimuli = {"image": entry.stimulus.image,  # type: ignore[union-attr]
                       "classes": classes, "method": method or NO_EXPLANATION,
                       "faithfulness": {k: shown.meta.get(k) for k in FAITHFULNESS}
                       if shown is not None else {}}
            if kind == "learning":
                stimuli |= {"decision": decision,
                            "explanation": shown.image if shown is not None else None,
                            "map": shown.map if shown is not None else None}
            trials.append(Trial(index=len(trials), kind=kind,  # type: ignore[arg-type]
                                block=session, attempt=1, unit_id=entry.id,
                                source=entry.source, layer=entry.layer, stimuli=stimuli,
                                key=None if kind == "learning" else decision))

        per_session = _per_session(spec.trials.main, options.sessions)
        for s in range(options.sessions):
            for entry in learn[s * options.learning:(s + 1) * options.learning]:
                add("learning", s + 1, entry)
            start = sum(per_session[:s])
            for entry in evaluate[start:start + per_session[s]]:
                add("main", s + 1, entry)
        return trials

    def view(self, trial: dict[str, Any], image_url: Callable[[str], str]) -> dict[str, Any]:
        s = trial["stimuli"]
        view = {"phase": "learning" if trial["kind"] == "learning" else "evaluation",
                "session": trial["block"], "image": image_url(s["image"]),
                "classes": s["classes"]}
        if trial["kind"] == "learning":
            view["decision"] = s["decision"]
            view["explanation"] = image_url(s["explanation"]) if s["explanation"] else None
            view["map"] = image_url(s["map"]) if s["map"] else None
        return view

    def score(self, key: Any, answer: UtilityAnswer) -> float:
        if key is None:  # a learning trial: seen
            return 1.0
        return float(answer.choice == key)

    def chance(self, options: ParadigmOptions) -> float:
        return 0.5  # two classes (check_feasible refuses others)

    def export_row(self, trial: dict[str, Any], answer: dict[str, Any]) -> dict[str, Any]:
        s = trial["stimuli"]
        classes = s["classes"]
        choice = answer.get("choice")
        decision = s.get("decision", trial["key"])
        return {"explanation": s["method"], "session": trial["block"],
                "decision": classes[decision] if decision is not None else None,
                "choice": classes[choice] if choice is not None else None,
                **{k: s["faithfulness"].get(k) for k in FAITHFULNESS}}

    def simulate(self, view, options, rng, skill, features):
        raise NotImplementedError("a utility participant learns across trials: "
                                  "use participant()")

    def participant(self, options: ParadigmOptions, rng: np.random.Generator, skill: float,
                    pixels: ImagePixels) -> Responder:
        """A learner that sees only what the learning phase shows: the images, the model's
        decisions and (by condition) the maps; never an evaluation trial's key."""
        return Learner(rng, skill, pixels)

    def report_sections(self, trials: pd.DataFrame) -> list[Section]:
        from experiments.paradigms.utility_report import utility_section

        section = utility_section(trials)
        return [section] if section is not None else []
