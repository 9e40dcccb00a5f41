"""Study files: a broken one gets an error naming the field and what is wrong."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from experiments.paradigms import PARADIGMS
from experiments.paradigms.base import PlanError
from experiments.study import StudyFileError, load_study, parse_study
from stimuli.stimulus_set import Pair, load_stimulus_set

TWO_AFC = PARADIGMS["2afc_exemplar"]

DEMO = (Path(__file__).resolve().parents[2] / "experiments" / "demos" / "2afc.toml").read_text()

BROKEN = [
    (
        DEMO.replace('slug = "demo-2afc"', 'slug = "Demo Study!"'),
        "slug 'Demo Study!' must be 2-63 lowercase letters, digits or dashes",
    ),
    (
        DEMO.replace("main = 12", "main = 0"),
        "trials.main: Input should be greater than or equal to 1",
    ),
    (
        DEMO.replace("response_lock_ms = 1500", "response_lock_ms = -5"),
        "paradigm.2afc_exemplar.response_lock_ms: Input should be greater than or equal to 0",
    ),
    (
        DEMO.replace('id = "2afc_exemplar"', 'id = "3afc"'),
        "paradigm: Input tag '3afc' found using 'id' does not match any of the expected tags: "
        "'2afc_exemplar'",
    ),
    (
        DEMO.replace('source = "nmf"', 'source = "nmf"\nroles = { references = "maco" }'),
        "conditions.1.roles: 'references' is not a role of 2afc_exemplar (its roles: "
        "queries, max_refs, min_refs, catch)",
    ),
    (
        DEMO.replace('source = "nmf"', 'source = "nmf"\noptions = { n_references = 40 }'),
        "conditions.1.options.n_references: Input should be less than or equal to 20",
    ),
    (
        DEMO.replace('source = "nmf"', 'source = "nmf"\noptions = { n_items = 4 }'),
        "conditions.1.options.n_items: Extra inputs are not permitted",
    ),
    (
        DEMO.replace('completion_code = "DEMO2AFC"', ""),
        "recruitment.completion_code: Field required",
    ),
    (
        DEMO.replace('completion_code = "DEMO2AFC"',
                     'completion_code = "DEMO2AFC"\nbonus_per_correct = 0.005'),
        "recruitment.bonus_per_correct: Decimal input should have no more than 2 decimal places",
    ),
    (
        DEMO.replace("catch_rate = 0.17", "catch_rate = 0.17\ncatchrate = 1"),
        "trials.catchrate: Extra inputs are not permitted",
    ),
    (
        DEMO.replace('block_by = "layer"', 'block_by = "colour"'),
        "trials.block_by must be 'layer' or 'source'",
    ),
    (DEMO.replace('name = "dictionary"', 'name = "neurons"'), "condition names must be unique"),
    (
        DEMO.replace('options = ["easy", "medium", "hard"]', 'options = ["easy"]'),
        "questionnaire.1: a choice question needs at least two options",
    ),
    (DEMO.replace("[trials]", "[trials\n"), "not valid TOML"),
]


@pytest.mark.parametrize("text,message", BROKEN)
def test_broken_study_files_name_the_problem(text, message):
    with pytest.raises(StudyFileError, match=re.escape(message)):
        parse_study(text, Path("study.toml"))


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(StudyFileError, match=r"nope\.toml: cannot read study file"):
        load_study(tmp_path / "nope.toml")


def test_demo_study_is_valid_and_digest_is_stable():
    a, b = parse_study(DEMO), parse_study(DEMO + "\n# a comment\n")
    assert a.digest() == b.digest()
    assert a.digest() != parse_study(DEMO.replace("main = 12", "main = 10")).digest()


LEGACY = """
slug = "legacy"
title = "A study file of before paradigms became plugins"
paradigm = "2afc_exemplar"
stimulus_set = "stimuli"

[[conditions]]
name = "neurons"
unit_kinds = ["neuron"]

[two_afc]
n_references = 5
max_side = "left"

[trials]
main = 4
block_by = "kind"

[texts]
consent = "ok?"
instructions = "do it"

[recruitment]
completion_code = "C"
"""


def test_study_files_of_before_paradigm_plugins_still_load():
    spec = parse_study(LEGACY)
    assert spec.paradigm.id == "2afc_exemplar"
    assert (spec.paradigm.n_references, spec.paradigm.max_side) == (5, "left")
    assert spec.conditions[0].source == ["neuron"]
    assert spec.conditions[0].method_for("max_refs") == "exemplars"
    assert spec.trials.block_by == "source"


def _view(trial):
    return TWO_AFC.view(trial.to_dict(), lambda d: d)


def test_plan_is_balanced_blocked_and_has_catch_trials(stimulus_dir):
    spec = parse_study(DEMO)
    manifest = load_stimulus_set(stimulus_dir).manifest
    all_cells = TWO_AFC.cells(spec, manifest)
    assert [c.key for c in all_cells] == [
        "neurons|block1,block2",
        "neurons|block2,block1",
        "dictionary|block1,block2",
        "dictionary|block2,block1",
    ]
    plan = TWO_AFC.plan(spec, manifest, all_cells[1], np.random.default_rng(0))
    assert [t.index for t in plan] == list(range(len(plan)))
    practice = [t for t in plan if t.kind == "practice"]
    assert len(practice) == spec.practice.trials * spec.practice.max_attempts
    main = [t for t in plan if t.kind == "main"]
    catch = [t for t in plan if t.kind == "catch"]
    assert len(main) == spec.trials.main and len(catch) == round(spec.trials.catch_rate * 12)
    assert all(t.source == "neuron" for t in plan)
    assert [t.layer for t in main if t.block == 1] == ["block2"] * 6  # order of cell 1
    assert {t.layer for t in main if t.block == 2} == {"block1"}
    for t in catch:  # the query is one of the references: the answer is obvious
        s = t.stimuli
        query_max = s["query_a"] if t.key == "a" else s["query_b"]
        assert query_max in s["ref_max"]
    for t in main:
        s = t.stimuli
        query_max = s["query_a"] if t.key == "a" else s["query_b"]
        assert query_max not in s["ref_max"] and len(s["ref_max"]) == 9
        assert _view(t) == {k: s[k] for k in ("ref_max", "ref_min", "ref_groups", "query_a",
                                              "query_b")}
        assert s["ref_groups"] == [[9, 9]] and s["references"] == "exemplars"
    pairs = {(t.unit_id, t.stimuli["query_a"], t.stimuli["query_b"]) for t in main}
    assert len(pairs) == len(main)  # no query pair twice
    sides = [t.key for t in main]
    assert 0 < sides.count("a") < len(sides)


def test_infeasible_study_is_refused(stimulus_dir):
    manifest = load_stimulus_set(stimulus_dir).manifest
    with pytest.raises(
        PlanError, match=r"condition 'neurons': the stimulus set has \d+ query pairs"
    ):
        TWO_AFC.check_feasible(parse_study(DEMO.replace("main = 12", "main = 500")), manifest)
    no_units = DEMO.replace('source = "nmf"', 'source = "sae"')
    with pytest.raises(
        PlanError, match=r"condition 'dictionary': the stimulus set has no units of source sae "
                         r"\(it has neuron, nmf\)"
    ):
        TWO_AFC.check_feasible(parse_study(no_units), manifest)
    no_method = DEMO.replace('source = "nmf"', 'source = "nmf"\nroles = { max_refs = "maco" }')
    with pytest.raises(PlanError, match=r"condition 'dictionary': role 'max_refs' asks for "
                                        r"method 'maco', which the stimulus set does not have"):
        TWO_AFC.check_feasible(parse_study(no_method), manifest)


def test_a_condition_without_references_is_the_no_explanation_baseline(stimulus_dir):
    """It has no catch trials, beside conditions that have them (Borowski et al. 2021)."""
    manifest = load_stimulus_set(stimulus_dir).manifest
    none = DEMO.replace('source = "nmf"',
                        'source = "nmf"\nroles = { max_refs = "none", min_refs = "none" }')
    spec = parse_study(none)
    TWO_AFC.check_feasible(spec, manifest)
    for cell in TWO_AFC.cells(spec, manifest):
        plan = TWO_AFC.plan(spec, manifest, cell, np.random.default_rng(1))
        kinds = [t.kind for t in plan]
        assert kinds.count("main") == 12
        if cell.condition == "dictionary":
            assert kinds.count("catch") == 0
            assert all(t.stimuli["ref_max"] == t.stimuli["ref_min"] == [] for t in plan)
            assert {t.stimuli["references"] for t in plan} == {"none"}
            assert {_view(t)["ref_groups"] == [] for t in plan} == {True}
        else:
            assert kinds.count("catch") == 2
    explicit = none.replace('min_refs = "none" }', 'min_refs = "none", catch = "exemplars" }')
    with pytest.raises(PlanError, match=r"condition 'dictionary': role 'catch' asks for method "
                                        r"'exemplars', whose images are not shown: the "
                                        r"condition has no references"):
        TWO_AFC.check_feasible(parse_study(explicit), manifest)
    half = none.replace('max_refs = "none", min_refs = "none"', 'max_refs = "none"')
    with pytest.raises(PlanError, match=r"max_refs and min_refs must name the same methods, or "
                                        r"both be 'none' \(max_refs: none, min_refs: exemplars\)"):
        TWO_AFC.check_feasible(parse_study(half), manifest)


def test_condition_options_override_the_study_s(stimulus_dir):
    manifest = load_stimulus_set(stimulus_dir).manifest
    spec = parse_study(DEMO.replace('source = "nmf"',
                                    'source = "nmf"\noptions = { n_references = 3 }'))
    assert spec.options_for("dictionary").n_references == 3
    assert spec.options_for("neurons").n_references == 9
    for cell in TWO_AFC.cells(spec, manifest):
        plan = TWO_AFC.plan(spec, manifest, cell, np.random.default_rng(0))
        sizes = {len(t.stimuli["ref_max"]) for t in plan}
        assert sizes == ({3} if cell.condition == "dictionary" else {9})


def test_catch_images_are_always_among_the_references_shown(stimulus_dir):
    loaded = load_stimulus_set(stimulus_dir).manifest

    def last_refs_as_catch(entry):
        roles = dict(entry.explanations["exemplars"])
        roles["catch"] = [Pair(max=roles["max_refs"][-1], min=roles["min_refs"][-1])]
        return entry.model_copy(update={"explanations": {"exemplars": roles}})

    # catch images are the last references, and only 2 of the 9 are shown
    manifest = loaded.model_copy(update={"entries": [last_refs_as_catch(e)
                                                     for e in loaded.entries]})
    spec = parse_study(DEMO.replace("n_references = 9", "n_references = 2"))
    for seed in range(5):
        cell = TWO_AFC.cells(spec, manifest)[0]
        plan = TWO_AFC.plan(spec, manifest, cell, np.random.default_rng(seed))
        for t in plan:
            s = t.stimuli
            assert len(s["ref_max"]) == len(s["ref_min"]) == 2
            if t.kind == "catch":
                query_max, query_min = (
                    (s["query_a"], s["query_b"]) if t.key == "a" else (s["query_b"], s["query_a"])
                )
                assert query_max in s["ref_max"] and query_min in s["ref_min"]
