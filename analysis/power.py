"""Power analysis by simulation (as simr does for lme4): simulate datasets from a study's
design under assumed fixed effects and random-effect SDs, fit the confirmatory GLMM to
each, and count how often its test of the effect rejects. Assay's GLMM is fast enough to
do this for a curve of participant numbers in minutes, on all cores.

The design: conditions between participants (assigned in turn), each participant sees
``trials`` units drawn without replacement from ``units`` (crossed random intercepts for
participants and units), and a share of participants is excluded before the fit, as the
pre-registered exclusions would. Letters: P participants, T trials per participant.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import stats
from tqdm import tqdm

from analysis.fit import glmm
from analysis.result import ConvergenceWarning, SingularFitWarning

FORMULA = "correct ~ condition + (1|participant) + (1|unit_id)"


@dataclass(frozen=True)
class PowerDesign:
    conditions: tuple[str, ...]  # the first is the reference level
    effects: dict[str, float]  # condition -> log-odds difference from the reference
    intercept: float  # log-odds of a correct answer in the reference condition
    trials: int  # trials per participant
    units: int  # units shown, each participant sees ``trials`` of them
    sd_participant: float = 0.0
    sd_unit: float = 0.0
    exclusion_rate: float = 0.0
    formula: str = FORMULA

    def __post_init__(self) -> None:
        if len(self.conditions) < 2:
            raise ValueError("conditions: at least two (a reference and one to compare)")
        unknown = set(self.effects) - set(self.conditions[1:])
        if unknown:
            raise ValueError(f"effects: {sorted(unknown)} are not conditions other than the "
                             f"reference {self.conditions[0]!r}")
        if not 1 <= self.trials <= self.units:
            raise ValueError(f"trials: between 1 and units ({self.units}), not {self.trials}")
        if min(self.sd_participant, self.sd_unit) < 0:
            raise ValueError("random-effect SDs must be >= 0")
        if not 0 <= self.exclusion_rate < 1:
            raise ValueError("exclusion_rate: in [0, 1)")


def simulate_trials(design: PowerDesign, n_participants: int,
                    rng: np.random.Generator) -> pd.DataFrame:
    """One dataset in the export's columns (participant, unit_id, condition, correct)."""
    kept = rng.random(n_participants) >= design.exclusion_rate
    participants = np.flatnonzero(kept)
    u_unit = rng.normal(0, design.sd_unit, design.units)
    u_part = rng.normal(0, design.sd_participant, n_participants)
    rows = []
    for p in participants:
        condition = design.conditions[p % len(design.conditions)]
        units = rng.choice(design.units, design.trials, replace=False)  # T
        eta = design.intercept + design.effects.get(condition, 0.0) + u_part[p] + u_unit[units]
        correct = rng.random(design.trials) < 1 / (1 + np.exp(-eta))
        rows.append(pd.DataFrame({"participant": f"p{p}", "unit_id": [f"u{u}" for u in units],
                                  "condition": condition, "correct": correct.astype(int)}))
    frame = pd.concat(rows, ignore_index=True)
    frame["condition"] = pd.Categorical(frame["condition"], categories=design.conditions)
    return frame


@dataclass(frozen=True)
class Simulation:
    rejected: bool | None  # None: the fit failed
    estimate: float
    singular: bool
    converged: bool


def run_one(design: PowerDesign, n_participants: int, term: str, alpha: float,
            one_sided: bool, seed: Sequence[int]) -> Simulation:
    """Simulate and fit one dataset; a warning of the fit is recorded, not raised."""
    data = simulate_trials(design, n_participants, np.random.default_rng(list(seed)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = glmm(design.formula, data)
        except (ValueError, np.linalg.LinAlgError, FloatingPointError):
            return Simulation(None, math.nan, False, False)
    kinds = {type(w.message) for w in caught}
    z, estimate = float(fit.zvalues[term]), float(fit.params[term])
    p = stats.norm.sf(z) if one_sided else 2 * stats.norm.sf(abs(z))
    return Simulation(bool(p < alpha), estimate, SingularFitWarning in kinds,
                      ConvergenceWarning not in kinds)


def power_curve(design: PowerDesign, participants: Sequence[int], *, n_sims: int = 200,
                alpha: float = 0.05, term: str | None = None, one_sided: bool = False,
                seed: int = 0, workers: int | None = None, progress: bool = True
                ) -> pd.DataFrame:
    """Power at each participant number, with its 95 % Monte Carlo (Wilson) interval.

    ``term`` is the tested fixed effect (default: the first condition's contrast with
    the reference, e.g. ``conditionB``); ``one_sided`` tests a positive effect."""
    term = term or f"condition{design.conditions[1]}"
    jobs = [(n, i) for n in participants for i in range(n_sims)]
    workers = workers or os.cpu_count() or 1
    args = [(design, n, term, alpha, one_sided, (seed, n, i)) for n, i in jobs]
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(run_one, *a) for a in args]
            results = [f.result() for f in tqdm(futures, desc="power", disable=not progress)]
    else:
        results = [run_one(*a) for a in tqdm(args, desc="power", disable=not progress)]
    rows = []
    for n in participants:
        sims = [r for (m, _), r in zip(jobs, results, strict=True) if m == n]
        done = [r for r in sims if r.rejected is not None]
        k = sum(r.rejected for r in done)
        lower, upper = wilson(k, len(done))
        rows.append({"participants": n, "power": k / len(done) if done else math.nan,
                     "lower": lower, "upper": upper, "n_sims": len(sims),
                     "failed": len(sims) - len(done),
                     "singular": sum(r.singular for r in done),
                     "not_converged": sum(not r.converged for r in done),
                     "mean_estimate": float(np.mean([r.estimate for r in done]))
                     if done else math.nan})
    return pd.DataFrame(rows)


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion k / n."""
    if n == 0:
        return math.nan, math.nan
    z = stats.norm.ppf(0.5 + level / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def analytic_power(design: PowerDesign, n_participants: int, alpha: float = 0.05) -> float:
    """Power of the Wald test of the first contrast for a logistic regression (no random
    effects, no exclusions): the reference for simulations with both SDs at zero."""
    per = n_participants // len(design.conditions) * design.trials  # trials per condition
    beta = design.effects.get(design.conditions[1], 0.0)
    p0 = 1 / (1 + math.exp(-design.intercept))
    p1 = 1 / (1 + math.exp(-(design.intercept + beta)))
    se = math.sqrt(1 / (per * p0 * (1 - p0)) + 1 / (per * p1 * (1 - p1)))
    z = stats.norm.ppf(1 - alpha / 2)
    return float(stats.norm.cdf(abs(beta) / se - z) + stats.norm.cdf(-abs(beta) / se - z))


def power_plot(curve: pd.DataFrame) -> Figure:
    """Power against participant numbers with its Monte Carlo intervals."""
    fig = Figure(figsize=(5, 3.2))
    ax = fig.add_subplot()
    ax.errorbar(curve["participants"], curve["power"],
                yerr=[curve["power"] - curve["lower"], curve["upper"] - curve["power"]],
                marker="o", capsize=3)
    ax.axhline(0.8, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("participants")
    ax.set_ylabel("power")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
