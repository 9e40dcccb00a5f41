"""The drawing paradigms beyond the contract: how conditions choose drawers (one condition
with every drawer mixed, or conditions with different ones), balance over drawers and
categories, catch trials, and the errors that name what a stimulus set lacks."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from experiments.paradigms import PARADIGMS
from experiments.paradigms.base import PlanError
from experiments.study import StudySpec
from stimuli.stimulus_set import load_stimulus_set
from tests.experiments.drawing_set import DRAWERS, build_drawing_set
from tests.experiments.test_paradigm_contract import small_spec

RECOGNITION = PARADIGMS["category_recognition"]
TURING = PARADIGMS["human_vs_machine"]


def with_conditions(paradigm_id: str, conditions: list[dict], **trials) -> StudySpec:
    spec = small_spec(paradigm_id, **trials)
    data = spec.model_dump(mode="json")
    data["conditions"] = conditions
    return StudySpec.model_validate(data)


def main_trials(paradigm, spec, manifest, seed: int = 0):
    return {cell.condition: [t for t in paradigm.plan(spec, manifest, cell,
                                                      np.random.default_rng(seed))
                             if t.kind == "main"]
            for cell in paradigm.cells(spec, manifest)}


@pytest.fixture(scope="module")
def manifest(drawing_dir):
    return load_stimulus_set(drawing_dir).manifest


def test_one_condition_mixes_every_drawer_evenly_over_categories(manifest):
    spec = small_spec("category_recognition", main=16, catch_rate=0.0)
    RECOGNITION.check_feasible(spec, manifest)
    (trials,) = main_trials(RECOGNITION, spec, manifest).values()
    drawers = Counter(t.stimuli["drawer"] for t in trials)
    assert drawers == dict.fromkeys(DRAWERS, 4)  # 16 trials, 4 drawers
    assert max(Counter(t.unit_id for t in trials).values()) == 2  # 8 categories, twice each
    for t in trials:
        choices = t.stimuli["choices"]
        assert len(set(choices)) == len(choices) == 4
        assert choices[t.key] == manifest.entry(t.unit_id).stimulus.image
        assert t.stimuli["drawing"] in {r.image for r in manifest.entry(t.unit_id).role(
            "drawings", t.stimuli["drawer"])}


def test_two_conditions_show_different_drawers(manifest):
    spec = with_conditions("category_recognition", [
        {"name": "people", "source": "hershey", "method": "drawings",
         "options": {"drawers": ["human"]}},
        {"name": "models", "source": "hershey", "method": "drawings",
         "options": {"drawers": ["kl", "vq"], "n_choices": 3}},
    ])
    RECOGNITION.check_feasible(spec, manifest)
    plans = main_trials(RECOGNITION, spec, manifest)
    assert {t.stimuli["drawer"] for t in plans["people"]} == {"human"}
    assert {t.stimuli["drawer"] for t in plans["models"]} == {"kl", "vq"}
    assert {len(t.stimuli["choices"]) for t in plans["models"]} == {3}
    assert RECOGNITION.chance(spec.options_for("models")) == pytest.approx(1 / 3)


def test_catch_trials_show_the_exemplar_itself(manifest):
    spec = small_spec("category_recognition", main=6, catch_rate=0.5)
    plan = RECOGNITION.plan(spec, manifest, RECOGNITION.cells(spec, manifest)[0],
                            np.random.default_rng(0))
    catch = [t for t in plan if t.kind == "catch"]
    assert len(catch) == 3
    for t in catch:
        assert t.stimuli["drawer"] == "exemplar"
        assert t.stimuli["drawing"] == t.stimuli["choices"][t.key]


def test_human_vs_machine_pairs_a_human_and_a_model_drawing(manifest):
    spec = small_spec("human_vs_machine", main=24, catch_rate=0.3)
    TURING.check_feasible(spec, manifest)
    plan = TURING.plan(spec, manifest, TURING.cells(spec, manifest)[0],
                       np.random.default_rng(0))
    assert not [t for t in plan if t.kind == "catch"]  # none, whatever catch_rate says
    main = [t for t in plan if t.kind == "main"]
    drawers = Counter(t.stimuli["drawer"] for t in main)
    assert set(drawers) == {"kl", "prototype", "vq"} and max(drawers.values()) <= 9
    for t in main:
        entry = manifest.entry(t.unit_id)
        human = t.stimuli["drawings"][t.key]
        machine = t.stimuli["drawings"][1 - t.key]
        assert human in {r.image for r in entry.role("drawings", "human")}
        assert machine in {r.image for r in entry.role("drawings", t.stimuli["drawer"])}
        assert t.stimuli["exemplar"] == entry.stimulus.image
    assert {t.key for t in main} == {0, 1}


@pytest.mark.parametrize(("paradigm_id", "condition", "message"), [
    ("category_recognition", {"options": {"drawers": ["simclr"]}},
     "condition 'c': no category has drawings drawings by 'simclr' "
     "\\(drawers: human, kl, prototype, vq\\)"),
    ("category_recognition", {"method": "exemplars"},
     "condition 'c': method 'exemplars' is not in the stimulus set \\(it has drawings\\)"),
    ("category_recognition", {"source": "omniglot"},
     "condition 'c': the stimulus set has no drawing categories of source omniglot "
     "\\(it has hershey\\)"),
    ("human_vs_machine", {"options": {"drawers": ["barlow"]}},
     "no category has drawings drawings by 'barlow'"),
])
def test_plan_errors_name_what_the_set_lacks(manifest, paradigm_id, condition, message):
    base = {"name": "c", "source": "hershey", "method": "drawings"}
    spec = with_conditions(paradigm_id, [{**base, **condition}])
    with pytest.raises(PlanError, match=message):
        PARADIGMS[paradigm_id].check_feasible(spec, manifest)


def test_too_few_drawings_for_the_trials(tmp_path):
    build_drawing_set(tmp_path / "few", n_categories=4, per_drawer=1)
    manifest = load_stimulus_set(tmp_path / "few").manifest
    with pytest.raises(PlanError, match="has 14 drawings .* after practice, but trials.main "
                                        "asks for 20"):
        RECOGNITION.check_feasible(small_spec("category_recognition", main=20), manifest)
    spec = with_conditions("category_recognition", [
        {"name": "c", "source": "hershey", "method": "drawings", "options": {"n_choices": 5}}])
    with pytest.raises(PlanError, match="n_choices = 5 needs 5 categories of one source"):
        RECOGNITION.check_feasible(spec, manifest)


@pytest.mark.parametrize(("options", "message"), [
    ({"drawers": []}, "drawers must name at least one drawer, each once"),
    ({"drawers": ["kl", "kl"]}, "drawers must name at least one drawer, each once"),
])
def test_bad_drawer_options(options, message):
    data = small_spec("category_recognition").model_dump(mode="json")
    data["paradigm"] = {**data["paradigm"], **options}
    with pytest.raises(ValueError, match=message):
        StudySpec.model_validate(data)


def test_human_is_not_a_machine_drawer():
    data = small_spec("human_vs_machine").model_dump(mode="json")
    data["conditions"][0]["options"] = {"drawers": ["human", "kl"]}
    with pytest.raises(ValueError, match="drawers names the models; 'human' is always shown"):
        StudySpec.model_validate(data)
