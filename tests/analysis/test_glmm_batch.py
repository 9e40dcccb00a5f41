"""The batched Laplace fit behind power analysis (``glmm_batch``): the known answer of lme4
at a tight PIRLS tolerance, the same answers as ``glmm`` dataset by dataset, and the pieces
it rests on (the rows' entries of A⁻¹ and the analytic gradient) against brute force."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from analysis.design import build_design
from analysis.fit import glmm, glmm_batch
from analysis.linalg import BlockSystem
from analysis.pirls import InterceptBatch
from analysis.power import FORMULA, PowerDesign, fixed_effects, simulate, simulate_trials

CROSSED = "correct ~ condition + (1 | participant) + (1 | item)"


def test_one_dataset_matches_lme4_at_tight_pirls_tolerance(datasets, tight_reference):
    """sim2afc (8000 trials) as a batch of one, from lme4's own start (θ = 1, β = 0)."""
    design = build_design(CROSSED, datasets["sim2afc.csv"])
    fit = glmm_batch(design.X, [t.codes[None] for t in design.terms],
                     [t.nlevels for t in design.terms], design.y[None], design.trials[None],
                     np.ones((1, 2)), np.zeros((1, design.p)))
    ref = tight_reference["sim2afc_crossed"]
    assert fit.converged[0] and not fit.singular[0]
    np.testing.assert_allclose(fit.fixef[0], list(ref["fixef"].values()), rtol=1e-5)
    np.testing.assert_allclose(fit.se[0], list(ref["se"].values()), rtol=1e-4)
    sds = {r["grp"]: r["sdcor"] for r in ref["random"]}
    np.testing.assert_allclose(fit.theta[0], [sds[t.group] for t in design.terms], rtol=1e-4)


def _fits(design: PowerDesign, n: int, seeds: list[list[int]]) -> list:
    out = []
    for seed in seeds:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out.append(glmm(FORMULA, simulate_trials(design, n, np.random.default_rng(seed)),
                            tol_pwrss=None))
    return out


def _batch(design: PowerDesign, n: int, seeds: list[list[int]]) -> dict:
    """Inputs of glmm_batch for simulated datasets, excluded participants as padding."""
    sims = [simulate(design, n, np.random.default_rng(s)) for s in seeds]
    X, names = fixed_effects(design, n)
    units = np.stack([s.units.ravel() for s in sims])
    participant = np.broadcast_to(np.repeat(np.arange(n), design.trials), units.shape)
    return {"X": X, "codes": [participant, units], "nlevels": [n, design.units],
            "y": np.stack([s.correct.ravel() for s in sims]).astype(float),
            "trials": np.stack([np.repeat(s.kept, design.trials) for s in sims]).astype(float)}


@pytest.mark.parametrize("design", [
    PowerDesign(conditions=("A", "B", "C"), effects={"B": 0.3, "C": 0.8}, intercept=0.5,
                trials=12, units=30, sd_participant=0.8, sd_unit=0.4, exclusion_rate=0.2),
    PowerDesign(conditions=("A", "B"), effects={"B": 0.5}, intercept=0.5, trials=20,
                units=40),  # no random-effect variance: mostly singular fits
], ids=["exclusions-3-conditions", "zero-sds"])
def test_batch_fits_equal_glmm_fits_one_by_one(design):
    n, seeds = 24, [[7, i] for i in range(8)]
    inputs = _batch(design, n, seeds)
    start = np.tile([0.5, 0.5], (len(seeds), 1)), np.zeros((len(seeds), inputs["X"].shape[1]))
    fit = glmm_batch(**inputs, theta0=start[0], beta0=start[1])
    assert fit.converged.all()
    for i, ref in enumerate(_fits(design, n, seeds)):
        np.testing.assert_allclose(fit.fixef[i], ref.fixef.to_numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(fit.se[i], ref.se.to_numpy(), rtol=1e-3)
        assert fit.singular[i] == ref.singular
        sds = pd.Series([r.sd[0] for r in ref.random], [r.group for r in ref.random])
        np.testing.assert_allclose(fit.theta[i], sds[["participant", "unit_id"]], atol=2e-3)


def test_gradient_is_the_derivative_of_the_deviance():
    design = PowerDesign(conditions=("A", "B"), effects={"B": 0.4}, intercept=1.0, trials=10,
                         units=20, sd_participant=0.5, sd_unit=0.5, exclusion_rate=0.3)
    obj = InterceptBatch(**_batch(design, 16, [[1, i] for i in range(3)]))
    par = np.array([[0.6, 0.3, 0.9, 0.5], [0.2, 1.1, 1.2, -0.3], [0.9, 0.05, 0.4, 0.8]])
    _, grad = obj.gradient(par)
    step = 1e-5
    numeric = np.stack([(obj.deviance(par + e) - obj.deviance(par - e)) / (2 * step)
                        for e in np.eye(4) * step], axis=1)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-4)


def test_row_inverse_is_the_inverse_at_each_rows_columns():
    rng = np.random.default_rng(0)
    nb, n1, n2, n = 3, 7, 5, 21
    codes = [rng.integers(0, n1, (nb, n)), rng.integers(0, n2, (nb, n))]
    system = BlockSystem(codes, [1, 1], [n1, n2])
    vdata, w = rng.random((nb, n, 2)), rng.random((nb, n))
    factor = system.factor(vdata, w)
    for b, rows in enumerate(system.row_inverse(factor)):
        v = np.zeros((n, n1 + n2))
        cols = np.stack([codes[0][b], n1 + codes[1][b]], axis=1)
        np.put_along_axis(v, cols, vdata[b], axis=1)
        inverse = np.linalg.inv(v.T @ (w[b, :, None] * v) + np.eye(n1 + n2))
        np.testing.assert_allclose(rows, inverse[cols[:, :, None], cols[:, None, :]],
                                   atol=1e-12)
        assert factor.logdet[b] == pytest.approx(np.linalg.slogdet(inverse)[1] * -1)
