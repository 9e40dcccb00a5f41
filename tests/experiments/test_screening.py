"""A study file's [screening] table: optional, checked, and absent from the digest when
left out (so that studies launched before it keep their version)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from experiments.study import StudyFileError, parse_study

DEMO = (Path(__file__).resolve().parents[2] / "experiments" / "demos" / "2afc.toml").read_text()


def test_without_the_table_nothing_is_screened_and_the_digest_leaves_it_out():
    spec = parse_study(DEMO)
    assert spec.screening is None
    assert "screening" not in json.loads(spec.canonical_json())


def test_the_table_has_defaults_and_changes_the_digest():
    spec = parse_study(DEMO + "\n[screening]\n")
    assert spec.screening.model_dump() == {"min_width": 800, "min_height": 600,
                                           "allow_mobile": False}
    assert spec.digest() != parse_study(DEMO).digest()
    wider = parse_study(DEMO + "\n[screening]\nmin_width = 1200\nallow_mobile = true\n")
    assert (wider.screening.min_width, wider.screening.allow_mobile) == (1200, True)
    assert wider.digest() != spec.digest()


@pytest.mark.parametrize("table, message", [
    ("min_width = -1", "screening.min_width: Input should be greater than or equal to 0"),
    ("min_height = 20000", "screening.min_height: Input should be less than or equal to 10000"),
    ("allow_mobile = 'maybe'", "screening.allow_mobile: Input should be a valid boolean"),
    ("min_widht = 900", "screening.min_widht: Extra inputs are not permitted"),
])
def test_a_broken_table_names_the_field(table, message):
    with pytest.raises(StudyFileError, match=re.escape(message)):
        parse_study(DEMO + f"\n[screening]\n{table}\n", Path("study.toml"))
