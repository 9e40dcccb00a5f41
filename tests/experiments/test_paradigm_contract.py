"""The paradigm contract, checked for every registered paradigm (in the spirit of
scikit-learn's ``parametrize_with_checks``): a bundled demo study, feasibility, cells, a
deterministic plan of contiguous trial indices, a browser view without the answer key,
simulated answers that the paradigm's Answer accepts and that depend on the stimuli,
scores, export rows, a jsPsych plugin that registers the paradigm, report sections.

The same contract in a real browser is tests/server/test_paradigm_browser.py.
"""

from __future__ import annotations

import io
import json
import tomllib
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from experiments.paradigms import PARADIGMS
from experiments.paradigms.base import Paradigm, Section, Trial
from experiments.study import StudySpec
from stimuli.stimulus_set import load_stimulus_set

ROOT = Path(__file__).resolve().parents[2]
DEMOS = ROOT / "experiments" / "demos"
STATIC = ROOT / "server" / "static"


def demo_of(paradigm_id: str) -> Path:
    """The bundled demo study of a paradigm (every paradigm must have one)."""
    for path in sorted(DEMOS.glob("*.toml")):
        if tomllib.loads(path.read_text())["paradigm"]["id"] == paradigm_id:
            return path
    raise AssertionError(f"no demo study in {DEMOS} for paradigm {paradigm_id!r}")


def small_spec(paradigm_id: str, slug: str = "contract", **trials) -> StudySpec:
    """The paradigm's demo study on the procedural set, with few trials."""
    data = tomllib.loads(demo_of(paradigm_id).read_text())
    data["slug"] = slug
    data["trials"] = {**data["trials"], "main": 6, "catch_rate": 0.34, **trials}
    data["practice"] = {"trials": 2 if PARADIGMS[paradigm_id].practice else 0,
                        "max_attempts": 2}
    locks = {k: 0 for k in data["paradigm"] if k.endswith("_ms")}  # no waiting in tests
    data["paradigm"] = {**data["paradigm"], "response_lock_ms": 0, **locks}
    return StudySpec.model_validate(data)


@cache
def _pixels(directory: str) -> dict[str, np.ndarray]:
    stimulus_set = load_stimulus_set(Path(directory))
    out = {}
    for digest, data in stimulus_set.images.items():
        with Image.open(io.BytesIO(data)) as img:
            out[digest] = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    return out


PARAMS = pytest.mark.parametrize("paradigm", list(PARADIGMS.values()), ids=list(PARADIGMS))


def plans(paradigm: Paradigm, spec: StudySpec, manifest, seed: int = 0) -> list[list[Trial]]:
    return [paradigm.plan(spec, manifest, cell, np.random.default_rng(seed))
            for cell in paradigm.cells(spec, manifest)]


@PARAMS
def test_plans_are_feasible_deterministic_and_structured(paradigm, stimuli_for):
    spec = small_spec(paradigm.id)
    manifest = load_stimulus_set(stimuli_for(paradigm)).manifest
    paradigm.check_feasible(spec, manifest)
    cells = paradigm.cells(spec, manifest)
    assert {c.condition for c in cells} == {c.name for c in spec.conditions}
    first, again = plans(paradigm, spec, manifest), plans(paradigm, spec, manifest)
    assert [[t.to_dict() for t in p] for p in first] == [[t.to_dict() for t in p] for p in again]
    other = plans(paradigm, spec, manifest, seed=1)
    assert [[t.to_dict() for t in p] for p in first] != [[t.to_dict() for t in p] for p in other]
    for plan in first:
        assert [t.index for t in plan] == list(range(len(plan)))
        kinds = [t.kind for t in plan]
        assert kinds.count("practice") == spec.practice.trials * spec.practice.max_attempts
        assert kinds.count("main") == spec.trials.main
        catch = round(spec.trials.catch_rate * spec.trials.main) if paradigm.catch_trials else 0
        assert kinds.count("catch") == catch
        json.dumps([t.to_dict() for t in plan])  # stored as JSON with the session
        units = {e.id: e for e in manifest.entries}
        assert all(units[t.unit_id].source == t.source for t in plan)


def simulated(paradigm: Paradigm, stimulus_dir: Path, *, seeds=(0,), skills=(1.0,)):
    """(cell, options, trial, view, {skill: validated answer}) for every planned trial of
    the paradigm's small study, answered in order by one simulated participant per skill
    and plan (``Paradigm.participant``)."""
    spec = small_spec(paradigm.id)
    manifest = load_stimulus_set(stimulus_dir).manifest
    pixels = _pixels(str(stimulus_dir)).__getitem__
    rng = np.random.default_rng(0)
    for seed in seeds:
        for cell, plan in zip(paradigm.cells(spec, manifest),
                              plans(paradigm, spec, manifest, seed), strict=True):
            options = spec.options_for(cell.condition)
            respond = {skill: paradigm.participant(options, rng, skill, pixels)
                       for skill in skills}
            for trial in plan:
                view = paradigm.view(trial.to_dict(), lambda d: d)
                answers = {skill: paradigm.Answer.model_validate(respond[skill](view))
                           for skill in skills}
                yield cell, options, trial, view, answers


@PARAMS
def test_views_hide_the_key_and_simulated_answers_score_and_export(paradigm, stimuli_for):
    directory = stimuli_for(paradigm)
    for _, options, trial, view, answers in simulated(paradigm, directory):
        assert 0 < paradigm.chance(options) < 1
        assert "key" not in view and "correct" not in view
        json.dumps(view)
        assert paradigm.score(trial.key, answers[1.0]) in (0.0, 1.0)
        row = paradigm.export_row(trial.to_dict(), answers[1.0].model_dump(mode="json"))
        assert tuple(row) == paradigm.export_columns
        json.dumps(row)


@PARAMS
def test_simulated_participants_see_the_stimuli(paradigm, stimuli_for):
    """Skilled observers beat chance by far, blind ones do not: answers depend on images."""
    scores: dict[float, list[float]] = {0.0: [], 4.0: []}
    chance = []
    directory = stimuli_for(paradigm)
    for _, options, trial, _, answers in simulated(paradigm, directory, seeds=range(4),
                                                   skills=tuple(scores)):
        if trial.kind not in ("main", "catch"):
            continue
        chance.append(paradigm.chance(options))
        for skill, answer in answers.items():
            scores[skill].append(paradigm.score(trial.key, answer))
    level = float(np.mean(chance))
    assert np.mean(scores[4.0]) > level + 0.25
    assert abs(np.mean(scores[0.0]) - level) < 0.1


@PARAMS
def test_the_browser_plugin_registers_the_paradigm(paradigm):
    assert (STATIC / "css" / "paradigms" / paradigm.stylesheet).is_file()
    source = (STATIC / "js" / "paradigms" / paradigm.script).read_text()
    registration = f'window.AssayParadigms["{paradigm.id}"]' if not paradigm.id.isidentifier() \
        else f"window.AssayParadigms.{paradigm.id}"
    assert registration in source
    for member in ("plugin:", "images:", "params:", "isCorrect:", "controls:"):
        assert member in source.split(registration, 1)[1]


@PARAMS
def test_report_sections_are_sections(paradigm, stimuli_for):
    directory = stimuli_for(paradigm)
    rows = [
        {"trial_kind": trial.kind, "excluded": False, "condition": cell.condition,
         "participant": cell.key, "correct": paradigm.score(trial.key, answers[1.0]) >= 1.0,
         **paradigm.export_row(trial.to_dict(), answers[1.0].model_dump(mode="json"))}
        for cell, _, trial, _, answers in simulated(paradigm, directory)
    ]
    sections = paradigm.report_sections(pd.DataFrame(rows))
    assert all(isinstance(s, Section) and s.title for s in sections)
