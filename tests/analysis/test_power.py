"""Power analysis by simulation: with no random effects the simulated power of the GLMM's
Wald test matches the analytic power of a logistic regression within Monte Carlo error;
the simulated design is the study's; the command writes its table and plot."""

from __future__ import annotations

import math
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from analysis.power import (
    FORMULA,
    PowerDesign,
    analytic_power,
    power_curve,
    run_batch,
    run_one,
    simulate_trials,
    wilson,
)
from tests.cli.test_cli import run

DESIGN = PowerDesign(conditions=("A", "B"), effects={"B": 0.5}, intercept=0.5, trials=20,
                     units=40)


@pytest.fixture(scope="module")
def curve() -> pd.DataFrame:
    return power_curve(DESIGN, [20, 40], n_sims=50, workers=2, progress=False, seed=1)


def test_zero_variance_power_matches_logistic_regression(curve):
    for row in curve.itertuples():
        expected = analytic_power(DESIGN, row.participants)
        mc_se = math.sqrt(expected * (1 - expected) / row.n_sims)
        assert abs(row.power - expected) < 3 * mc_se + 0.02, (row, expected)
        assert row.failed == 0 and row.lower <= row.power <= row.upper
    assert curve["power"].iloc[1] > curve["power"].iloc[0]  # more participants, more power
    assert curve["mean_estimate"].between(0.3, 0.7).all()  # the effect is recovered


def test_no_effect_rejects_at_about_alpha():
    null = PowerDesign(conditions=("A", "B"), effects={}, intercept=0.5, trials=20, units=40,
                       sd_participant=0.5, sd_unit=0.5)
    row = power_curve(null, [30], n_sims=40, workers=2, progress=False).iloc[0]
    assert row.power <= 0.2 and row.lower <= 0.05


def test_simulated_data_follow_the_design():
    design = PowerDesign(conditions=("A", "B", "C"), effects={"C": 1.0}, intercept=0.0,
                         trials=12, units=30, sd_participant=1.0, exclusion_rate=0.25)
    data = simulate_trials(design, 400, np.random.default_rng(0))
    per = data.groupby("participant")
    assert (per.size() == 12).all() and (per["unit_id"].nunique() == 12).all()
    assert 250 < data["participant"].nunique() < 350  # about a quarter excluded
    counts = per["condition"].first().value_counts()
    assert counts.max() - counts.min() < 40
    means = data.groupby("condition", observed=True)["correct"].mean()
    assert means["C"] > means["A"] + 0.1


@pytest.mark.parametrize("bad, match", [
    ({"conditions": ("A",)}, "at least two"),
    ({"effects": {"A": 1.0}}, "not conditions other than the reference"),
    ({"trials": 50}, "trials: between 1 and units"),
    ({"sd_unit": -1.0}, "SDs must be >= 0"),
])
def test_bad_designs_name_the_problem(bad, match):
    settings = dict(conditions=("A", "B"), effects={}, intercept=0.0, trials=10, units=20)
    with pytest.raises(ValueError, match=match):
        PowerDesign(**{**settings, **bad})


def test_wilson_interval():
    assert wilson(0, 10)[0] == 0 and 0 < wilson(0, 10)[1] < 0.35
    low, high = wilson(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)


def test_the_power_command_writes_table_and_plot(tmp_path):
    study = "experiments/demos/2afc.toml"
    result = run("power", study, "--effect", "dictionary=0.8", "--units", 24,
                 "--participants", "8,16", "--sims", 6, "--workers", 1, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(tmp_path / "power.csv")
    assert list(table["participants"]) == [8, 16] and (table["n_sims"] == 6).all()
    assert (tmp_path / "power.png").stat().st_size > 5000
    assert "test of conditiondictionary" in result.output
    bad = run("power", study, "--effect", "dictionary:0.8", "--units", 24)
    assert bad.exit_code != 0 and "expected CONDITION=LOG_ODDS" in bad.output


def test_the_single_fit_fallback_agrees_with_the_batch():
    """run_one (``glmm``, for a batch member that does not converge) finds the same test."""
    design = PowerDesign(conditions=("A", "B"), effects={"B": 0.5}, intercept=0.5,
                         trials=20, units=40, sd_participant=0.6, sd_unit=0.4)
    seeds = [(4, 24, i) for i in range(3)]
    batch = run_batch(design, 24, "conditionB", 0.05, False, seeds)
    for seed, fit in zip(seeds, batch, strict=True):
        one = run_one(design, 24, "conditionB", 0.05, False, seed)
        assert one.p_value == pytest.approx(fit.p_value, rel=1e-3)
        assert (one.rejected, one.singular) == (fit.rejected, fit.singular)


LME4_P_VALUES = """
suppressMessages(library(lme4))
tight <- glmerControl(tolPwrss = 1e-12)
files <- sort(list.files("{folder}", pattern = "\\\\.csv$", full.names = TRUE))
for (f in files) {{
  d <- read.csv(f)
  d$condition <- factor(d$condition, levels = c("A", "B"))
  p <- sapply(list(glmerControl(), tight), function(control) {{
    m <- suppressMessages(suppressWarnings(
      glmer({formula}, data = d, family = binomial, control = control)))
    c(coef(summary(m))["conditionB", "Pr(>|z|)"], isSingular(m))
  }})
  cat(sprintf("%s %.12g %.12g %d\\n", basename(f), p[1, 1], p[1, 2], p[2, 2]))
}}
"""


def lme4_available() -> bool:
    if shutil.which("Rscript") is None:
        return False
    check = subprocess.run(["Rscript", "-e", "library(lme4)"], capture_output=True)
    return check.returncode == 0


@pytest.mark.skipif(not lme4_available(), reason="Rscript with lme4 not installed")
def test_power_matches_lme4_refits_of_the_same_datasets(tmp_path):
    """Our p-values are lme4's at a tight PIRLS tolerance (the same Laplace optimum);
    lme4's default (tolPwrss = 1e-7) moves SEs by up to about 1 % on designs this small,
    so against it only the decisions are compared."""
    design = PowerDesign(conditions=("A", "B"), effects={"B": 0.5}, intercept=0.5,
                         trials=20, units=40, sd_participant=0.6, sd_unit=0.4)
    n, sims = 30, 30
    for i in range(sims):
        data = simulate_trials(design, n, np.random.default_rng([3, n, i]))
        data.to_csv(tmp_path / f"d{i:03d}.csv", index=False)
    script = LME4_P_VALUES.format(folder=tmp_path, formula=FORMULA)
    out = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True, check=True)
    lme4 = np.array([line.split()[1:] for line in out.stdout.splitlines()], dtype=float)
    ours = run_batch(design, n, "conditionB", 0.05, False, [(3, n, i) for i in range(sims)])
    np.testing.assert_allclose([r.p_value for r in ours], lme4[:, 1], rtol=1e-3)
    assert [r.singular for r in ours] == list(lme4[:, 2] == 1)
    agree = sum((p < 0.05) == r.rejected for p, r in zip(lme4[:, 0], ours, strict=True))
    assert agree >= sims - 1  # a p-value right at alpha may fall either side
    row = power_curve(design, [n], n_sims=sims, seed=3, workers=1, progress=False).iloc[0]
    assert abs(row.power - float(np.mean(lme4[:, 0] < 0.05))) <= 1 / sims + 1e-9
