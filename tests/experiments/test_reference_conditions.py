"""Reference conditions of the 2AFC (natural, synthetic, both, none, accentuated), planned on
a hand-made manifest: the procedural set's exemplars plus synthetic methods whose images are
made-up digests (planning reads the manifest only)."""

from __future__ import annotations

import hashlib
import re
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from experiments.paradigms import PARADIGMS
from experiments.paradigms.base import PlanError
from experiments.paradigms.two_afc import references_label
from experiments.study import StudyFileError, parse_study
from stimuli.stimulus_set import Entry, ImageRef, Pair, StimulusManifest, load_stimulus_set

TWO_AFC = PARADIGMS["2afc_exemplar"]
ROOT = Path(__file__).resolve().parents[2]
DEMO = (ROOT / "experiments" / "demos" / "references.toml").read_text()
SYNTHETIC = ("maco", "accentuation")
LABELS = {"natural": "exemplars", "synthetic": "maco", "both": "exemplars+maco",
          "none": "none", "accentuated": "accentuation"}


def fake(*parts: object) -> str:
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()


def synthetic_roles(method: str, entry: Entry, n: int = 9) -> dict[str, list]:
    """What a feature-visualization method writes per unit: max_refs, min_refs (with meta)
    and catch pairs among them."""
    top = [ImageRef(image=fake(method, entry.id, "max", i),
                    meta={"relative_activation": 1.0 - 0.01 * i, "seed_distance": 0.1})
           for i in range(n)]
    low = [ImageRef(image=fake(method, entry.id, "min", i)) for i in range(n)]
    return {"max_refs": top, "min_refs": low, "catch": [Pair(max=top[-1], min=low[-1])]}


def with_methods(manifest: StimulusManifest, methods=SYNTHETIC,
                 skip: frozenset[str] = frozenset()) -> StimulusManifest:
    """The manifest with every method of ``methods`` added to each entry (not those in
    ``skip``)."""
    entries = [
        e if e.id in skip else e.model_copy(update={"explanations": {
            **e.explanations, **{m: synthetic_roles(m, e) for m in methods}}})
        for e in manifest.entries
    ]
    return manifest.model_copy(update={"entries": entries})


@cache
def _manifest(directory: str) -> StimulusManifest:
    return with_methods(load_stimulus_set(Path(directory)).manifest)


@pytest.fixture
def manifest(stimulus_dir) -> StimulusManifest:
    return _manifest(str(stimulus_dir))


def images(entry: Entry, method: str, role: str) -> list[str]:
    return [r.image for r in entry.role(method, role)]


def plans(spec, manifest, seed=0):
    return {cell.condition: TWO_AFC.plan(spec, manifest, cell, np.random.default_rng(seed))
            for cell in TWO_AFC.cells(spec, manifest)}


def test_each_reference_condition_shows_its_methods_images(manifest):
    spec = parse_study(DEMO)
    TWO_AFC.check_feasible(spec, manifest)
    units = {e.id: e for e in manifest.entries}
    for condition, plan in plans(spec, manifest).items():
        kinds = [t.kind for t in plan]
        assert kinds.count("main") == 10
        assert kinds.count("catch") == (0 if condition == "none" else 2)
        for t in plan:
            s, unit = t.stimuli, units[t.unit_id]
            assert s["references"] == LABELS[condition]
            assert t.source == "neuron"
            pair = {s["query_a"], s["query_b"]}
            if t.kind == "main":  # queries are always natural exemplars
                assert any(pair == {p.max.image, p.min.image}
                           for p in unit.role("exemplars", "queries"))
            methods = [] if condition == "none" else LABELS[condition].split("+")
            want_max = [d for m in methods for d in images(unit, m, "max_refs")[:9]]
            want_min = [d for m in methods for d in images(unit, m, "min_refs")[:9]]
            if t.kind == "catch":  # the catch pair is the last references: it takes a place
                assert pair <= set(s["ref_max"]) | set(s["ref_min"])
            else:
                assert (s["ref_max"], s["ref_min"]) == (want_max, want_min)
            assert s["ref_groups"] == [[9, 9]] * len(methods)
            view = TWO_AFC.view(t.to_dict(), lambda d: "/img/" + d)
            assert view["ref_groups"] == s["ref_groups"]
            assert view["ref_max"] == ["/img/" + d for d in s["ref_max"]]


def test_both_shows_natural_then_synthetic_and_catch_from_one_of_them(manifest):
    spec = parse_study(DEMO)
    units = {e.id: e for e in manifest.entries}
    for seed in range(3):
        for t in plans(spec, manifest, seed)["both"]:
            unit, s = units[t.unit_id], t.stimuli
            natural, synthetic = s["ref_max"][:9], s["ref_max"][9:]
            assert len(s["ref_max"]) == len(s["ref_min"]) == 18
            assert set(synthetic) == set(images(unit, "maco", "max_refs"))
            assert set(s["ref_min"][9:]) == set(images(unit, "maco", "min_refs"))
            if t.kind == "catch":  # the condition's method: natural exemplars
                query_max = s["query_a"] if t.key == "a" else s["query_b"]
                assert query_max in natural
                assert query_max in images(unit, "exemplars", "max_refs")
            else:
                assert natural == images(unit, "exemplars", "max_refs")[:9]


def test_synthetic_catch_pairs_are_among_the_synthetic_references(manifest):
    spec = parse_study(DEMO.replace("n_references = 9", "n_references = 3"))
    units = {e.id: e for e in manifest.entries}
    catch = [t for t in plans(spec, manifest)["synthetic"] if t.kind == "catch"]
    assert catch
    for t in catch:
        s = t.stimuli
        query_max, query_min = (s["query_a"], s["query_b"]) if t.key == "a" else \
            (s["query_b"], s["query_a"])
        assert query_max in s["ref_max"] and query_min in s["ref_min"]
        assert query_max in images(units[t.unit_id], "maco", "max_refs")[3:]  # beyond the 3
        assert len(s["ref_max"]) == 3


def test_units_without_a_reference_method_are_left_out_of_its_conditions(manifest):
    neurons = [e.id for e in manifest.entries if e.source == "neuron"]
    partial = with_methods(manifest.model_copy(update={"entries": [
        e.model_copy(update={"explanations": {"exemplars": e.explanations["exemplars"]}})
        for e in manifest.entries]}), skip=frozenset(neurons[:2]))
    spec = parse_study(DEMO)
    for condition, plan in plans(spec, partial).items():
        shown = {t.unit_id for t in plan}
        assert bool(shown & set(neurons[:2])) == (condition in ("natural", "none"))


def test_one_method_is_a_one_element_list():
    one = parse_study(DEMO.replace('max_refs = "maco", min_refs = "maco"',
                                   'max_refs = ["maco"], min_refs = ["maco"]'))
    assert one.digest() == parse_study(DEMO).digest()
    both = next(c for c in one.conditions if c.name == "both")
    assert both.methods_for("max_refs") == ["exemplars", "maco"]
    assert both.methods_for("queries") == ["exemplars"]
    assert next(c for c in one.conditions if c.name == "none").methods_for("max_refs") == []
    with pytest.raises(ValueError, match="role 'max_refs' combines exemplars, maco"):
        both.method_for("max_refs")
    assert references_label([]) == "none"


BOTH = 'roles = { max_refs = ["exemplars", "maco"], min_refs = ["exemplars", "maco"] }'
BAD_FILES = [
    (DEMO.replace(BOTH, 'roles = { max_refs = ["exemplars", "exemplars"] }'),
     "conditions.2.roles: 'max_refs' lists a method twice"),
    (DEMO.replace(BOTH, 'roles = { max_refs = ["exemplars", "none"] }'),
     "conditions.2.roles: 'max_refs' cannot combine 'none' with methods"),
    (DEMO.replace(BOTH, "roles = { max_refs = [] }"),
     "conditions.2.roles: 'max_refs' needs a method id or 'none'"),
    (DEMO.replace(BOTH, 'roles = { queries = ["exemplars", "maco"] }'),
     "conditions.2.roles.queries: 2afc_exemplar shows one method's queries, not exemplars + "
     "maco (roles that combine methods: max_refs, min_refs)"),
]


@pytest.mark.parametrize("text,message", BAD_FILES)
def test_bad_method_lists_name_the_condition_and_role(text, message):
    with pytest.raises(StudyFileError, match=re.escape(message)):
        parse_study(text)


def test_intruder_detection_takes_one_method_per_role():
    text = (ROOT / "experiments" / "demos" / "intruder.toml").read_text().replace(
        'source = "nmf"', 'source = "nmf"\nroles = { max_refs = ["exemplars", "maco"] }')
    with pytest.raises(StudyFileError, match=re.escape(
            "conditions.1.roles.max_refs: intruder shows one method's max_refs, not exemplars "
            "+ maco (roles that combine methods: none of its roles)")):
        parse_study(text)


BAD_PLANS = [
    (DEMO.replace(BOTH, 'roles = { max_refs = ["exemplars", "macco"], '
                        'min_refs = ["exemplars", "macco"] }'),
     "condition 'both': role 'max_refs' asks for method 'macco', which the stimulus set does "
     "not have (it has accentuation, exemplars, maco)"),
    (DEMO.replace(BOTH, 'roles = { max_refs = ["exemplars", "maco"], '
                        'min_refs = ["exemplars", "maco"], catch = "accentuation" }'),
     "condition 'both': role 'catch' asks for method 'accentuation', whose images are not "
     "among its references (exemplars, maco)"),
    (DEMO.replace(BOTH, 'roles = { max_refs = ["exemplars", "maco"], min_refs = "maco" }'),
     "condition 'both': max_refs and min_refs must name the same methods, or both be 'none' "
     "(max_refs: exemplars+maco, min_refs: maco)"),
    (DEMO.replace('roles = { max_refs = "none", min_refs = "none" }',
                  'roles = { max_refs = "none", min_refs = "none", catch = "exemplars" }'),
     "condition 'none': role 'catch' asks for method 'exemplars', whose images are not shown: "
     "the condition has no references (leave catch out of its roles)"),
    (DEMO.replace('roles = { max_refs = "maco", min_refs = "maco", catch = "maco" }',
                  'roles = { max_refs = "maco", min_refs = "maco" }'),
     "condition 'synthetic': role 'catch' asks for method 'exemplars', whose images are not "
     "among its references (maco)"),
]


@pytest.mark.parametrize("text,message", BAD_PLANS)
def test_infeasible_reference_conditions_name_condition_role_and_method(text, message,
                                                                        manifest):
    with pytest.raises(PlanError, match=re.escape(message)):
        TWO_AFC.check_feasible(parse_study(text), manifest)


def test_a_listed_method_that_lacks_the_role_is_refused(manifest):
    no_min = manifest.model_copy(update={"entries": [
        e.model_copy(update={"explanations": {
            **e.explanations,
            "maco": {k: v for k, v in e.explanations["maco"].items() if k == "max_refs"}}})
        for e in manifest.entries]})
    with pytest.raises(PlanError, match=re.escape(
            "condition 'synthetic': no unit has maco 'min_refs' images")):
        TWO_AFC.check_feasible(parse_study(DEMO), no_min)


def test_catch_trials_can_be_switched_off_for_a_condition_with_references(manifest):
    spec = parse_study(DEMO.replace('catch = "accentuation" }', 'catch = "none" }'))
    TWO_AFC.check_feasible(spec, manifest)
    counts = {c: sum(t.kind == "catch" for t in p) for c, p in plans(spec, manifest).items()}
    assert counts == {"natural": 2, "synthetic": 2, "both": 2, "none": 0, "accentuated": 0}


def test_export_rows_name_the_references_and_legacy_trials_still_export(manifest):
    spec = parse_study(DEMO)
    answer = {"choice": "a", "confidence": 2}
    for condition, plan in plans(spec, manifest).items():
        rows = {TWO_AFC.export_row(t.to_dict(), answer)["references"] for t in plan}
        assert rows == {LABELS[condition]}
    legacy = {"stimuli": {"ref_max": ["x"], "ref_min": ["y"], "query_a": "a", "query_b": "b"}}
    assert TWO_AFC.export_row(legacy, answer) == {"choice": "a", "confidence": 2,
                                                  "references": None}
    assert TWO_AFC.view(legacy, str)["ref_groups"] == [[1, 1]]
    bare = {"stimuli": {"ref_max": [], "ref_min": [], "query_a": "a", "query_b": "b"}}
    assert TWO_AFC.export_row(bare, answer)["references"] == "none"
    assert TWO_AFC.view(bare, str)["ref_groups"] == []
