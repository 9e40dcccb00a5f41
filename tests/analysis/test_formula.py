"""Formula parsing and design coding (R's model.matrix and lme4's mkReTrms conventions)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import analysis
from analysis.design import build_design
from analysis.formula import parse_formula


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 120
    return pd.DataFrame({
        "y": rng.integers(0, 2, n), "succ": rng.integers(0, 5, n), "size": 5,
        "f": rng.choice(["c", "a", "b"], n), "g": rng.choice(["u", "v"], n),
        "x": rng.normal(size=n), "rt": rng.uniform(300, 900, n),
        "subj": np.repeat(np.arange(12), 10), "unit": np.tile(np.arange(10), 12),
    })


@pytest.mark.parametrize(("formula", "names"), [
    ("y ~ f + (1|subj)", ["(Intercept)", "fb", "fc"]),
    ("y ~ f*x + (1|subj)", ["(Intercept)", "fb", "fc", "x", "fb:x", "fc:x"]),
    ("y ~ x + x:f + (1|subj)", ["(Intercept)", "x", "x:fb", "x:fc"]),
    ("y ~ f*g + (1|subj)", ["(Intercept)", "fb", "fc", "gv", "fb:gv", "fc:gv"]),
    ("y ~ 0 + f + (1|subj)", ["fa", "fb", "fc"]),
    ("y ~ f - 1 + (1|subj)", ["fa", "fb", "fc"]),
    ("y ~ log(rt) + (1|subj)", ["(Intercept)", "log(rt)"]),
    ("y ~ 1 + (1|subj)", ["(Intercept)"]),
])
def test_fixed_effect_columns(frame: pd.DataFrame, formula: str, names: list[str]) -> None:
    assert list(build_design(formula, frame).fixef_names) == names


@pytest.mark.parametrize(("formula", "terms"), [
    ("y ~ x + (1|subj)", [("subj", ("(Intercept)",))]),
    ("y ~ x + (x|subj)", [("subj", ("(Intercept)", "x"))]),
    ("y ~ x + (1 + x|subj)", [("subj", ("(Intercept)", "x"))]),
    ("y ~ x + (0 + x|subj)", [("subj", ("x",))]),
    ("y ~ x + (x||subj)", [("subj", ("(Intercept)",)), ("subj", ("x",))]),
    ("y ~ x + (1|subj/g)", [("g:subj", ("(Intercept)",)), ("subj", ("(Intercept)",))]),
    ("y ~ x + (1|subj:g)", [("subj:g", ("(Intercept)",))]),
    ("y ~ x + (1|subj) + (1|unit)", [("subj", ("(Intercept)",)), ("unit", ("(Intercept)",))]),
])
def test_random_terms(frame: pd.DataFrame, formula: str, terms: list) -> None:
    design = build_design(formula, frame)
    assert [(t.group, t.names) for t in design.terms] == terms
    assert design.Z.shape == (len(frame), design.q)


def test_nested_levels_and_theta_template(frame: pd.DataFrame) -> None:
    design = build_design("y ~ x + (1 + x|subj) + (1|subj:g)", frame)
    assert design.terms[0].nlevels == 24  # subj:g has more levels, so it comes first
    np.testing.assert_array_equal(design.theta0, [1.0, 1.0, 0.0, 1.0])
    np.testing.assert_array_equal(design.theta_lower, [0.0, 0.0, -np.inf, 0.0])


def test_cbind_response(frame: pd.DataFrame) -> None:
    design = build_design("cbind(succ, size - succ) ~ x + (1|subj)", frame)
    np.testing.assert_allclose(design.trials, 5)
    np.testing.assert_allclose(design.y * design.trials, frame["succ"])


def test_parse_keeps_response_and_intercept() -> None:
    f = parse_formula("cbind(a, b) ~ 0 + x + (1|g)")
    assert f.response == ("a", "b") and not f.intercept and f.terms == (("x",),)


BAD_INPUTS = [
    ("correct ~ conditon + (1|participant)", r"^unknown column 'conditon' in formula$"),
    ("correct ~ condition + (1|participnt)", r"^unknown column 'participnt' in formula$"),
    ("corect ~ condition + (1|participant)", r"^unknown column 'corect' in formula$"),
    ("log(rtt) ~ condition + (1|participant)", r"^unknown column 'rtt' in formula$"),
    ("rt ~ condition + (1|participant)",
     r"^response 'rt' must be 0/1 for a binomial model \(or use cbind\(successes, failures\)\)$"),
    ("condition ~ 1 + (1|participant)", r"^response 'condition' must be 0/1"),
    ("cbind(correct, -1) ~ 1 + (1|participant)", r"^cbind\(\) counts must be non-negative"),
    ("correct condition + (1|participant)",
     r"^malformed formula: expected exactly one '~' in the formula$"),
    ("correct ~ ~ condition", r"^malformed formula: expected exactly one '~'"),
    ("~ condition + (1|participant)",
     r"^malformed formula: need a response and a right-hand side$"),
    ("correct ~ condition + (1|participant", r"^malformed formula: expected"),
    ("correct ~ condition + (1|)", r"^malformed formula: unexpected '\)' in"),
    ("correct ~ condition + (1|participant) +", r"^malformed formula: expected a term"),
    ("correct ~ condition $ item", r"^malformed formula: unexpected character '\$'"),
    ("correct ~ condition + (1|1)",
     r"^malformed formula: the grouping factor must be variables$"),
    ("correct ~ condition + (0|participant)",
     r"^malformed formula: empty random-effect term$"),
    ("correct ~ condition", r"^the formula has no random-effect term; use a GLM$"),
    ("correct ~ cbind(condition) + (1|participant)",
     r"^malformed formula: unknown function 'cbind'$"),
]


@pytest.mark.parametrize(("formula", "message"), BAD_INPUTS)
def test_bad_inputs(formula: str, message: str) -> None:
    data = pd.DataFrame({"correct": [0, 1, 1, 0], "condition": ["a", "b", "a", "b"],
                         "participant": ["p1", "p1", "p2", "p2"], "rt": [400., 500, 600, 700]})
    with pytest.raises(ValueError, match=message):
        analysis.glmm(formula, data)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"family": "poisson"}, r"^family must be 'binomial', not 'poisson'"),
    ({"link": "cloglog"}, r"^unknown link 'cloglog': use 'logit' or 'probit'$"),
])
def test_bad_options(kwargs: dict, message: str) -> None:
    data = pd.DataFrame({"y": [0, 1, 1, 0], "g": ["a", "a", "b", "b"]})
    with pytest.raises(ValueError, match=message):
        analysis.glmm("y ~ 1 + (1|g)", data, **kwargs)
