"""Property: on data simulated from known parameters, 95% Wald intervals cover the truth."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import analysis
from analysis import SingularFitWarning

TRUTH = {"(Intercept)": 0.6, "conditionb": 0.5}
SD_PARTICIPANT, SD_ITEM = 0.5, 0.5
N_SIM = 100


def simulate(rng: np.random.Generator, participants: int = 30, items: int = 20) -> pd.DataFrame:
    """Crossed 2AFC-like data: every participant sees every item in both conditions."""
    p = np.repeat(np.arange(participants), items * 2)
    i = np.tile(np.repeat(np.arange(items), 2), participants)
    cond = np.tile([0, 1], participants * items)
    eta = (TRUTH["(Intercept)"] + TRUTH["conditionb"] * cond
           + rng.normal(0, SD_PARTICIPANT, participants)[p] + rng.normal(0, SD_ITEM, items)[i])
    y = rng.random(len(eta)) < 1 / (1 + np.exp(-eta))
    return pd.DataFrame({"correct": y.astype(int), "condition": np.where(cond, "b", "a"),
                         "participant": p, "item": i})


@pytest.mark.slow
def test_wald_intervals_cover_the_truth_at_the_nominal_rate() -> None:
    rng = np.random.default_rng(20240605)
    hits = {k: 0 for k in TRUTH}
    sds = []
    for _ in range(N_SIM):
        with warnings.catch_warnings():
            # a simulated item SD can come out at zero; that is expected here
            warnings.simplefilter("ignore", SingularFitWarning)
            fit = analysis.glmm("correct ~ condition + (1 | participant) + (1 | item)",
                                simulate(rng), hessian=False)
        ci = fit.wald_ci(0.95)
        for k, v in TRUTH.items():
            hits[k] += bool(ci.loc[k, "lower"] <= v <= ci.loc[k, "upper"])
        sds.append([re.sd[0] for re in fit.random])
    # 95% nominal; with 100 simulations the binomial SD is about 2.2 percentage points
    for k, count in hits.items():
        assert 88 <= count <= 100, (k, count)
    mean_sd = np.mean(sds, axis=0)
    np.testing.assert_allclose(mean_sd, [SD_PARTICIPANT, SD_ITEM], atol=0.08)
