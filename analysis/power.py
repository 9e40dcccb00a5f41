"""Power analysis by simulation (as simr does for lme4): simulate datasets from a study's
design under assumed fixed effects and random-effect SDs, fit the confirmatory GLMM to
each, and count how often its test of the effect rejects. All datasets of one size have
one shape, so they are fitted together (``glmm_batch``: the exact Laplace fit, Newton's
method over a batch axis, from the assumed parameters), in batches on all cores; a curve
of participant numbers takes seconds to a minute.

The design: conditions between participants (assigned in turn), each participant sees
``trials`` units drawn without replacement from ``units`` (crossed random intercepts for
participants and units), and a share of participants is excluded before the fit, as the
pre-registered exclusions would. Letters: P participants, T trials per participant.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import special, stats
from tqdm import tqdm

from analysis.design import model_matrix
from analysis.fit import glmm, glmm_batch
from analysis.formula import parse_formula
from analysis.result import ConvergenceWarning, SingularFitWarning

FORMULA = "correct ~ condition + (1|participant) + (1|unit_id)"
BATCH = 50  # datasets fitted together: large enough to amortize Python's overhead
_THETA_FLOOR = 0.2  # smallest start of a random-effect SD


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


@dataclass(frozen=True)
class Simulated:
    """One simulated study as arrays, every participant included (P, T)."""

    kept: np.ndarray  # (P,) bool: not excluded
    condition: np.ndarray  # (P,) index into the design's conditions
    units: np.ndarray  # (P, T) units shown, without replacement
    correct: np.ndarray  # (P, T) bool


def simulate(design: PowerDesign, n_participants: int, rng: np.random.Generator) -> Simulated:
    """Draw exclusions, random intercepts, each participant's units and their answers."""
    kept = rng.random(n_participants) >= design.exclusion_rate
    u_unit = rng.normal(0, design.sd_unit, design.units)
    u_part = rng.normal(0, design.sd_participant, n_participants)
    condition = np.arange(n_participants) % len(design.conditions)  # assigned in turn
    # the first T of a random permutation of the units, for each participant
    units = np.argsort(rng.random((n_participants, design.units)), axis=1)[:, :design.trials]
    effect = np.array([design.effects.get(c, 0.0) for c in design.conditions])
    eta = design.intercept + (effect[condition] + u_part)[:, None] + u_unit[units]
    correct = rng.random(units.shape) < special.expit(eta)
    return Simulated(kept, condition, units, correct)


def simulate_trials(design: PowerDesign, n_participants: int,
                    rng: np.random.Generator) -> pd.DataFrame:
    """One dataset in the export's columns (participant, unit_id, condition, correct),
    excluded participants left out."""
    sim = simulate(design, n_participants, rng)
    rows = np.flatnonzero(np.repeat(sim.kept, design.trials))
    frame = pd.DataFrame({
        "participant": np.char.add("p", np.repeat(np.arange(n_participants),
                                                  design.trials).astype(str))[rows],
        "unit_id": np.char.add("u", sim.units.ravel().astype(str))[rows],
        "condition": np.array(design.conditions)[np.repeat(sim.condition, design.trials)][rows],
        "correct": sim.correct.ravel().astype(int)[rows]})
    frame["condition"] = pd.Categorical(frame["condition"], categories=design.conditions)
    return frame


@dataclass(frozen=True)
class Simulation:
    rejected: bool | None  # None: the fit failed
    estimate: float
    p_value: float
    singular: bool
    converged: bool


def _test(z: float, one_sided: bool) -> float:
    return float(stats.norm.sf(z) if one_sided else 2 * stats.norm.sf(abs(z)))


def run_one(design: PowerDesign, n_participants: int, term: str, alpha: float,
            one_sided: bool, seed: Sequence[int]) -> Simulation:
    """Simulate and fit one dataset with ``glmm`` (lme4's algorithm, its checks and
    refits); a warning of the fit is recorded, not raised."""
    data = simulate_trials(design, n_participants, np.random.default_rng(list(seed)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = glmm(FORMULA, data, tol_pwrss=None)
            z, estimate = float(fit.zvalues[term]), float(fit.params[term])
        except (ValueError, KeyError, np.linalg.LinAlgError, FloatingPointError):
            return Simulation(None, math.nan, math.nan, False, False)
    kinds = {type(w.message) for w in caught}
    p = _test(z, one_sided)
    return Simulation(bool(p < alpha), estimate, p, SingularFitWarning in kinds,
                      ConvergenceWarning not in kinds)


def fixed_effects(design: PowerDesign, n_participants: int) -> tuple[np.ndarray, list[str]]:
    """X (P·T, p) of FORMULA for every participant's trials, rows participant-major, and
    its column names: the same for every simulated dataset of a size."""
    condition = np.repeat(np.arange(n_participants) % len(design.conditions), design.trials)
    labels = pd.Series(pd.Categorical.from_codes(condition, categories=design.conditions))
    formula = parse_formula(FORMULA)
    return model_matrix(formula.terms, formula.intercept, {"condition": labels},
                        len(condition))


def run_batch(design: PowerDesign, n_participants: int, term: str, alpha: float,
              one_sided: bool, seeds: Sequence[Sequence[int]]) -> list[Simulation]:
    """Simulate and fit the datasets of ``seeds`` together (``glmm_batch``), started at
    the assumed parameters; a fit that does not converge there is redone by ``run_one``.

    Excluded participants stay in the arrays with zero trials, so that all datasets of a
    size share one shape (and X); that leaves every deviance as it is without them."""
    X, names = fixed_effects(design, n_participants)
    if term not in names:
        raise KeyError(term)
    sims = [simulate(design, n_participants, np.random.default_rng(list(s))) for s in seeds]
    nb, trials = len(sims), design.trials
    participant = np.repeat(np.arange(n_participants), trials)
    units = np.stack([s.units.ravel() for s in sims])  # (B, P·T)
    y = np.stack([s.correct.ravel() for s in sims]).astype(float)
    weight = np.stack([np.repeat(s.kept, trials) for s in sims]).astype(float)
    # start at the assumed SDs and effects; never at θ = 0, a stationary point of the
    # deviance (it is even in θ) that Newton's method would not leave
    theta0 = np.tile([max(design.sd_participant, _THETA_FLOOR),
                      max(design.sd_unit, _THETA_FLOOR)], (nb, 1))
    truth = [design.intercept] + [design.effects.get(c, 0.0) for c in design.conditions[1:]]
    beta0 = np.tile(truth, (nb, 1))
    fit = glmm_batch(X, [np.broadcast_to(participant, units.shape), units],
                     [n_participants, design.units], y, weight, theta0, beta0)
    j = names.index(term)
    out = []
    for i, seed in enumerate(seeds):
        if not fit.converged[i]:
            out.append(run_one(design, n_participants, term, alpha, one_sided, seed))
            continue
        p = _test(fit.fixef[i, j] / fit.se[i, j], one_sided)
        out.append(Simulation(bool(p < alpha), float(fit.fixef[i, j]), p,
                              bool(fit.singular[i]), True))
    return out


def power_curve(design: PowerDesign, participants: Sequence[int], *, n_sims: int = 200,
                alpha: float = 0.05, term: str | None = None, one_sided: bool = False,
                seed: int = 0, workers: int | None = None, progress: bool = True
                ) -> pd.DataFrame:
    """Power at each participant number, with its 95 % Monte Carlo (Wilson) interval.

    ``term`` is the tested fixed effect (default: the first condition's contrast with
    the reference, e.g. ``conditionB``); ``one_sided`` tests a positive effect. Dataset
    i of size n is seeded by (seed, n, i); batches of at most ``BATCH`` datasets of one
    size are fitted together, largest sizes first, on ``workers`` processes."""
    term = term or f"condition{design.conditions[1]}"
    workers = workers or os.cpu_count() or 1
    jobs = [(n, list(range(i, min(i + BATCH, n_sims))))
            for n in sorted(participants, reverse=True) for i in range(0, n_sims, BATCH)]
    args = [(design, n, term, alpha, one_sided, [(seed, n, i) for i in ids])
            for n, ids in jobs]
    results: dict[int, list[Simulation]] = {n: [] for n in participants}
    with tqdm(total=len(participants) * n_sims, desc="power", disable=not progress) as bar:
        for (n, ids), batch in zip(jobs, _run_all(args, workers), strict=True):
            results[n].extend(batch)
            bar.update(len(ids))
    rows = []
    for n in participants:
        sims = results[n]
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


def _run_all(args: list[tuple], workers: int) -> Iterator[list[Simulation]]:
    """``run_batch`` over ``args``, in order, on ``workers`` processes."""
    if workers == 1:
        yield from (run_batch(*a) for a in args)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(run_batch, *zip(*args, strict=True))


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
