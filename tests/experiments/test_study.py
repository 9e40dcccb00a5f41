"""Study files: a broken one gets an error naming the field and what is wrong."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from experiments.study import StudyFileError, load_study, parse_study
from experiments.two_afc import PlanError, cells, check_feasible, plan_trials
from stimuli.stimulus_set import QueryPair, load_stimulus_set

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
        "two_afc.response_lock_ms: Input should be greater than or equal to 0",
    ),
    (
        DEMO.replace('completion_code = "DEMO2AFC"', ""),
        "recruitment.completion_code: Field required",
    ),
    (
        DEMO.replace("catch_rate = 0.17", "catch_rate = 0.17\ncatchrate = 1"),
        "trials.catchrate: Extra inputs are not permitted",
    ),
    (
        DEMO.replace('block_by = "layer"', 'block_by = "colour"'),
        "trials.block_by must be 'layer' or 'kind'",
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


def test_plan_is_balanced_blocked_and_has_catch_trials(stimulus_dir):
    spec = parse_study(DEMO)
    manifest = load_stimulus_set(stimulus_dir).manifest
    all_cells = cells(spec, manifest)
    assert [c.key for c in all_cells] == [
        "neurons|block1,block2",
        "neurons|block2,block1",
        "dictionary|block1,block2",
        "dictionary|block2,block1",
    ]
    plan = plan_trials(spec, manifest, all_cells[1], np.random.default_rng(0))
    assert [t.index for t in plan] == list(range(len(plan)))
    practice = [t for t in plan if t.kind == "practice"]
    assert len(practice) == spec.practice.trials * spec.practice.max_attempts
    main = [t for t in plan if t.kind == "main"]
    catch = [t for t in plan if t.kind == "catch"]
    assert len(main) == spec.trials.main and len(catch) == round(spec.trials.catch_rate * 12)
    assert all(t.unit_kind == "neuron" for t in plan)
    assert [t.layer for t in main if t.block == 1] == ["block2"] * 6  # order of cell 1
    assert {t.layer for t in main if t.block == 2} == {"block1"}
    for t in catch:  # the query is one of the references: the answer is obvious
        query_max = t.query_a if t.correct == "a" else t.query_b
        assert query_max in t.ref_max
    for t in main:
        query_max = t.query_a if t.correct == "a" else t.query_b
        assert query_max not in t.ref_max and len(t.ref_max) == 9
    pairs = {(t.unit_id, t.query_a, t.query_b) for t in main}
    assert len(pairs) == len(main)  # no query pair twice
    sides = [t.correct for t in main]
    assert 0 < sides.count("a") < len(sides)


def test_infeasible_study_is_refused(stimulus_dir):
    manifest = load_stimulus_set(stimulus_dir).manifest
    with pytest.raises(
        PlanError, match=r"condition 'neurons': the stimulus set has \d+ query pairs"
    ):
        check_feasible(parse_study(DEMO.replace("main = 12", "main = 500")), manifest)
    no_units = DEMO.replace('unit_kinds = ["nmf"]', 'unit_kinds = ["sae"]')
    with pytest.raises(
        PlanError, match="condition 'dictionary': the stimulus set has no units of kind sae"
    ):
        check_feasible(parse_study(no_units), manifest)


def test_catch_images_are_always_among_the_references_shown(stimulus_dir):
    loaded = load_stimulus_set(stimulus_dir).manifest
    # catch images are the last references, and only 2 of the 9 are shown
    manifest = loaded.model_copy(
        update={
            "units": [
                u.model_copy(
                    update={
                        "catch": [QueryPair(max=u.references.max[-1], min=u.references.min[-1])]
                    }
                )
                for u in loaded.units
            ]
        }
    )
    spec = parse_study(DEMO.replace("n_references = 9", "n_references = 2"))
    for seed in range(5):
        plan = plan_trials(spec, manifest, cells(spec, manifest)[0], np.random.default_rng(seed))
        for t in plan:
            assert len(t.ref_max) == len(t.ref_min) == 2
            if t.kind == "catch":
                query_max, query_min = (
                    (t.query_a, t.query_b) if t.correct == "a" else (t.query_b, t.query_a)
                )
                assert query_max in t.ref_max and query_min in t.ref_min
