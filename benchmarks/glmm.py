"""Fit time of analysis.glmm against lme4's glmer (when Rscript + lme4 are installed) and
statsmodels' BinomialBayesMixedGLM, on simulated crossed 2AFC data at two sizes.

    .venv/bin/python benchmarks/glmm.py [--quick]

Prints a table, then as its last line one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os

# One BLAS thread, as R's reference BLAS: a fair comparison, and threads only spin when the
# machine is shared (set these variables yourself to override).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import analysis  # noqa: E402

FORMULA = "correct ~ condition + (1 | participant) + (1 | item)"
R_SCRIPT = """
suppressMessages(library(lme4))
d <- read.csv("{csv}")
d$participant <- factor(d$participant); d$item <- factor(d$item)
d$condition <- factor(d$condition, levels = c("a", "b"))
t <- system.time(m <- glmer({formula}, data = d, family = binomial))[["elapsed"]]
cat(sprintf("%.6f %.10f %.10f %.10f %.10f\\n", t, fixef(m)[1], fixef(m)[2],
    attr(VarCorr(m)$participant, "stddev"), attr(VarCorr(m)$item, "stddev")))
"""


def simulate(participants: int, items: int, reps: int, seed: int) -> pd.DataFrame:
    """Crossed 2AFC: logit intercept 0.6, condition 0.5, participant SD 0.5, item SD 0.8."""
    rng = np.random.default_rng(seed)
    p = np.repeat(np.arange(participants), items * reps)
    i = np.tile(np.repeat(np.arange(items), reps), participants)
    cond = (np.tile(np.arange(reps), participants * items) + p) % 2 if reps > 1 else (i + p) % 2
    eta = 0.6 + 0.5 * cond + rng.normal(0, 0.5, participants)[p] + rng.normal(0, 0.8, items)[i]
    y = (rng.random(len(eta)) < 1 / (1 + np.exp(-eta))).astype(int)
    return pd.DataFrame(
        {"participant": p, "item": i, "condition": np.where(cond, "b", "a"), "correct": y}
    )


def fit_ours(data: pd.DataFrame) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = analysis.glmm(FORMULA, data)
    elapsed = time.perf_counter() - start
    return elapsed, np.r_[fit.fixef.to_numpy(), [re.sd[0] for re in fit.random]]


def fit_statsmodels(data: pd.DataFrame) -> tuple[float, np.ndarray]:
    from statsmodels.genmod.bayes_mixed_glm import BinomialBayesMixedGLM

    start = time.perf_counter()
    model = BinomialBayesMixedGLM.from_formula(
        "correct ~ condition", {"participant": "0 + C(participant)", "item": "0 + C(item)"}, data
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = model.fit_vb()
    elapsed = time.perf_counter() - start
    return elapsed, np.r_[res.fe_mean, np.exp(res.vcp_mean)]


def fit_lme4(data: pd.DataFrame) -> tuple[float, np.ndarray] | None:
    if shutil.which("Rscript") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "d.csv"
        data.to_csv(csv, index=False)
        script = R_SCRIPT.format(csv=csv, formula=FORMULA)
        out = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return None
    values = [float(v) for v in out.stdout.split()]
    return values[0], np.array(values[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip statsmodels at 200k")
    args = parser.parse_args()
    sizes = {"8k": (100, 40, 2), "200k": (1000, 200, 1)}
    results: dict[str, dict] = {}
    for label, (participants, items, reps) in sizes.items():
        data = simulate(participants, items, reps, seed=1)
        ours_t, ours = fit_ours(data)
        row: dict = {"n": len(data), "ours_s": round(ours_t, 3)}
        lme4 = fit_lme4(data)
        if lme4 is not None:
            row["lme4_s"] = round(lme4[0], 3)
            row["speedup_vs_lme4"] = round(lme4[0] / ours_t, 2)
            row["max_abs_diff_vs_lme4"] = float(np.max(np.abs(ours - lme4[1])))
        if not (args.quick and label == "200k"):
            sm_t, sm = fit_statsmodels(data)
            row["statsmodels_vb_s"] = round(sm_t, 3)
            row["speedup_vs_statsmodels"] = round(sm_t / ours_t, 2)
            row["max_abs_diff_statsmodels_vs_lme4"] = (
                float(np.max(np.abs(sm - lme4[1]))) if lme4 is not None else None
            )
        results[label] = row
    print(
        f"{'size':>6} {'n':>8} {'ours s':>8} {'lme4 s':>8} {'x lme4':>7} "
        f"{'sm-vb s':>8} {'x sm':>6} {'max|ours-lme4|':>15}"
    )
    for label, r in results.items():
        print(
            f"{label:>6} {r['n']:>8} {r['ours_s']:>8.2f} {r.get('lme4_s', float('nan')):>8.2f}"
            f" {r.get('speedup_vs_lme4', float('nan')):>7.2f}"
            f" {r.get('statsmodels_vb_s', float('nan')):>8.2f}"
            f" {r.get('speedup_vs_statsmodels', float('nan')):>6.2f}"
            f" {r.get('max_abs_diff_vs_lme4', float('nan')):>15.2e}"
        )
    print("estimates compared: fixed effects and the two random-intercept SDs")
    print(
        json.dumps(
            {
                "benchmark": "glmm",
                "formula": FORMULA,
                "quick": args.quick,
                "lme4": shutil.which("Rscript") is not None,
                "sizes": results,
            }
        )
    )


if __name__ == "__main__":
    main()
