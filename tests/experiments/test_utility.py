"""The utility paradigm on a hand-built decision set (tests/experiments/decision_set.py):
its plans, what the browser is shown in each phase, its simulated learner and its report."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from experiments.paradigms import PARADIGMS
from experiments.paradigms.base import PlanError
from experiments.paradigms.utility_report import utility_scores, utility_section
from stimuli.stimulus_set import load_stimulus_set
from tests.experiments.test_paradigm_contract import small_spec

UTILITY = PARADIGMS["utility"]


@pytest.fixture(scope="module")
def decision_set(decision_dir):
    return load_stimulus_set(decision_dir)


def spec_with(**changes):
    spec = small_spec("utility", main=12, catch_rate=0.0)
    paradigm = spec.paradigm.model_copy(update=changes.pop("paradigm", {}))
    return spec.model_copy(update={"paradigm": paradigm, **changes})


def test_sessions_learn_then_evaluate_on_fresh_balanced_images(decision_set):
    spec = spec_with(paradigm={"sessions": 3, "learning": 6})
    manifest = decision_set.manifest
    UTILITY.check_feasible(spec, manifest)
    entries = {e.id: e for e in manifest.entries}
    for cell in UTILITY.cells(spec, manifest):
        plan = UTILITY.plan(spec, manifest, cell, np.random.default_rng(3))
        assert [t.block for t in plan] == sorted(t.block for t in plan)
        for session in (1, 2, 3):
            kinds = [t.kind for t in plan if t.block == session]
            assert kinds == ["learning"] * 6 + ["main"] * 4  # learning first, then evaluation
        ids = [t.unit_id for t in plan]
        assert len(ids) == len(set(ids)), "an image shown twice"
        for t in plan:
            phase = "learning" if t.kind == "learning" else "evaluation"
            assert entries[t.unit_id].covariates["phase"] == phase
        decisions = [t.stimuli["decision"] for t in plan if t.kind == "learning"]
        assert decisions.count(0) == decisions.count(1)  # stratified over the decisions
        assert all(t.key is None for t in plan if t.kind == "learning")
        assert all(t.key in (0, 1) for t in plan if t.kind == "main")


def test_learning_views_show_the_decision_and_map_evaluation_views_show_neither(decision_set):
    spec = spec_with()
    manifest = decision_set.manifest
    by_name = {c.condition: c for c in UTILITY.cells(spec, manifest)}
    for name, explained in (("baseline", False), ("gradcam", True)):
        plan = UTILITY.plan(spec, manifest, by_name[name], np.random.default_rng(0))
        for t in plan:
            view = UTILITY.view(t.to_dict(), lambda d: "/img/" + d)
            if t.kind == "learning":
                assert view["decision"] == t.stimuli["decision"]
                assert (view["explanation"] is not None) == explained
                assert (view["map"] is not None) == explained
            else:
                assert {"decision", "explanation", "map"}.isdisjoint(view)
                assert view["image"].startswith("/img/")


def test_practice_and_too_few_images_are_refused(decision_set):
    manifest = decision_set.manifest
    with pytest.raises(PlanError, match="practice.trials = 0"):
        UTILITY.check_feasible(small_spec("utility").model_copy(
            update={"practice": small_spec("2afc_exemplar").practice}), manifest)
    with pytest.raises(PlanError, match=r"has 48 learning images.*needs 60"):
        UTILITY.check_feasible(spec_with(paradigm={"sessions": 3, "learning": 20}), manifest)


def _run(decision_dir: Path, condition: str, n: int, skill: float) -> float:
    """Mean evaluation accuracy of n simulated learners of one condition."""
    spec = spec_with(paradigm={"sessions": 2, "learning": 4})
    stimulus_set = load_stimulus_set(decision_dir)
    pixels = {}
    for digest, data in stimulus_set.images.items():
        with Image.open(io.BytesIO(data)) as img:
            pixels[digest] = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    cell = next(c for c in UTILITY.cells(spec, stimulus_set.manifest) if c.condition == condition)
    options = spec.options_for(condition)
    scores = []
    for seed in range(n):
        rng = np.random.default_rng(seed)
        respond = UTILITY.participant(options, rng, skill, pixels.__getitem__)
        for t in UTILITY.plan(spec, stimulus_set.manifest, cell, rng):
            answer = UTILITY.Answer.model_validate(respond(UTILITY.view(t.to_dict(), str)))
            if t.kind == "main":
                scores.append(UTILITY.score(t.key, answer))
    return float(np.mean(scores))


def test_simulated_learners_gain_from_maps_of_what_the_model_uses(decision_dir):
    """Few learning images: maps of the decisive patch beat no maps, which beat maps of an
    irrelevant object; and the learner never sees the evaluation key (a blind one is at
    chance)."""
    explained = _run(decision_dir, "gradcam", 40, 2.0)
    baseline = _run(decision_dir, "baseline", 40, 2.0)
    misled = _run(decision_dir, "saliency", 40, 2.0)
    assert explained > baseline + 0.08
    assert baseline > misled
    assert abs(_run(decision_dir, "gradcam", 40, 0.0) - 0.5) < 0.08


def _trials(rows: list[tuple[str, str, int, bool]]) -> pd.DataFrame:
    return pd.DataFrame([
        {"participant": p, "explanation": m, "condition": m, "session": s, "correct": c,
         "trial_kind": "main", "excluded": False, "chance": 0.5, "unit_id": f"u{i}",
         "deletion": 0.2, "insertion": 0.7, "mufidelity": 0.3}
        for i, (p, m, s, c) in enumerate(rows)])


def test_utility_scores_are_ratios_to_the_baseline_with_intervals():
    rows = []
    for p, (method, accuracy) in enumerate([("none", 0.5), ("none", 0.6), ("none", 0.55),
                                            ("gradcam", 0.8), ("gradcam", 0.9),
                                            ("gradcam", 0.85)]):
        hits = round(accuracy * 20)
        rows += [(f"p{p}", method, 1 + j % 2, j < hits) for j in range(20)]
    scores = utility_scores(_trials(rows))
    row = scores.set_index("explanation").loc["gradcam"]
    assert row["utility"] == pytest.approx(0.85 / 0.55)
    assert row["lower"] < row["utility"] < row["upper"]
    assert row["lower"] > 1.2  # groups that far apart: clearly useful
    section = utility_section(_trials(rows))
    assert section is not None and [t for t, _ in section.tables][0] == "Utility scores"
    assert {t for t, _ in section.figures} == {"Accuracy by explanation",
                                               "Accuracy by session"}
