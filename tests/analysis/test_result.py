"""The result object: lme4-like summary, JSON dictionary, tables, LRT and profile intervals."""

from __future__ import annotations

import json

import numpy as np
import pytest

import analysis


def test_to_dict_is_json_with_required_keys(fitted) -> None:
    d = json.loads(json.dumps(fitted("sim2afc_slope").to_dict()))
    assert {"fixef", "se", "random", "loglik", "converged", "singular"} <= set(d)
    assert d["singular"] is True
    participant = d["random"][0]
    assert participant["group"] == "participant"
    assert set(participant["sd"]) == {"(Intercept)", "conditiondictionary"}
    assert participant["corr"]["(Intercept):conditiondictionary"] == pytest.approx(-1.0)


def test_summary_reads_like_lme4(fitted) -> None:
    text = fitted("cbpp").summary()
    for needle in ("Generalized linear mixed model fit by maximum likelihood (Laplace",
                   " Family: binomial  ( logit )", "Random effects:", "Fixed effects:",
                   "Number of obs: 56, groups:  herd, 15", "Pr(>|z|)", "period4"):
        assert needle in text
    lmm_text = fitted("sleepstudy_reml").summary()
    assert "Linear mixed model fit by REML" in lmm_text and "Residual" in lmm_text


def test_to_frame_and_wald_interval(fitted) -> None:
    fit = fitted("cbpp")
    frame = fit.to_frame()
    assert list(frame["term"]) == list(fit.fixef.index)
    np.testing.assert_allclose(frame["ci_upper"] - frame["estimate"], 1.959964 * frame["se"],
                               rtol=1e-6)
    assert fit.aic == pytest.approx(-2 * fit.loglik + 2 * 5)
    assert fit.bic == pytest.approx(-2 * fit.loglik + np.log(56) * 5)


def test_likelihood_ratio_test(fitted) -> None:
    small, big = fitted("sim2afc_crossed"), fitted("sim2afc_slope")
    table = analysis.anova(big, small)
    row = table.iloc[1]
    assert row["Df"] == 2
    assert row["Chisq"] == pytest.approx(2 * (big.loglik - small.loglik))
    assert 0 < row["Pr(>Chisq)"] <= 1


def test_anova_refuses_reml(fitted) -> None:
    with pytest.raises(ValueError, match="refit with reml=False"):
        analysis.anova(fitted("sleepstudy_reml"), fitted("sleepstudy_ml"))


def test_profile_interval_brackets_the_estimate_and_is_near_wald(fitted) -> None:
    fit = fitted("cbpp")
    prof = fit.profile_ci(which=["period2"])
    wald = fit.wald_ci().loc["period2"]
    lo, hi = prof.loc["period2"]
    assert lo < fit.fixef["period2"] < hi
    assert lo == pytest.approx(wald["lower"], abs=0.1)
    assert hi == pytest.approx(wald["upper"], abs=0.1)
