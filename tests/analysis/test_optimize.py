"""The optimizer wrapper: bounds, and a log shared by the stages of a fit."""

from __future__ import annotations

import numpy as np

from analysis.optimize import OptimizerLog, minimize


def test_a_log_shared_with_an_earlier_stage_does_not_lend_it_its_parameters():
    """A GLMM's stage 1 (covariance parameters only) and stage 2 (with the fixed effects)
    share one log; stage 1's values may be lower than any of stage 2's (its objective is
    another), and its shorter parameter vectors must not be taken for stage 2's optimum."""
    log = OptimizerLog()
    minimize(lambda x: float((x[0] - 1) ** 2 - 10), np.zeros(1), np.array([0.0]), trace=log)
    result = minimize(lambda x: float(((x - [0.5, -2]) ** 2).sum()), np.ones(2),
                      np.array([0.0, -np.inf]), trace=log)
    assert result.par.shape == (2,)
    np.testing.assert_allclose(result.par, [0.5, -2], atol=1e-4)
    assert min(log.values) < -9  # stage 1's values are still in the log
