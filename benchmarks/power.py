"""Time of a power curve: `analysis.power.power_curve` (Assay's batched GLMM fits) against
the same loop of lme4 `glmer` refits in R (as simr runs it), when Rscript with lme4 is
installed. Both fit the same simulated datasets (written once as CSV for R; R's time is
its loop of read.csv and glmer, without starting R). R runs on one core (reference BLAS),
so Assay is timed twice: on every core and in one process.

    .venv/bin/python benchmarks/power.py [--quick]

Prints a table; the last line is one JSON object with `seconds` (all cores, `workers`),
`seconds_one_process`, `lme4_seconds` (one process), `speedup_vs_lme4` and
`speedup_one_process_vs_lme4` (null without R).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.power import FORMULA, PowerDesign, power_curve, simulate_trials

DESIGN = PowerDesign(conditions=("A", "B"), effects={"B": 0.4}, intercept=1.0, trials=24,
                     units=48, sd_participant=0.5, sd_unit=0.5)
R_LOOP = """
suppressMessages(library(lme4))
files <- list.files("{folder}", pattern = "\\\\.csv$", full.names = TRUE)
t <- system.time(for (f in files) {{
  d <- read.csv(f)
  d$condition <- factor(d$condition, levels = c("A", "B"))
  m <- suppressMessages(suppressWarnings(glmer({formula}, data = d, family = binomial)))
}})[["elapsed"]]
cat(sprintf("%.6f %d\\n", t, length(files)))
"""


def lme4_seconds(participants: list[int], n_sims: int) -> float | None:
    """The R loop over the same datasets; None without Rscript and lme4."""
    if shutil.which("Rscript") is None:
        return None
    with tempfile.TemporaryDirectory(prefix="assay-power-") as tmp:
        for n in participants:
            for i in range(n_sims):
                data = simulate_trials(DESIGN, n, np.random.default_rng([0, n, i]))
                data.to_csv(Path(tmp) / f"d{n}_{i}.csv", index=False)
        script = R_LOOP.format(folder=tmp, formula=FORMULA)
        out = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True,
                             check=False)
    if out.returncode != 0:
        print(f"lme4 loop failed: {out.stderr.strip()[:300]}")
        return None
    return float(out.stdout.split()[0])


def timed_curve(participants: list[int], n_sims: int, workers: int
                ) -> tuple[float, pd.DataFrame]:
    start = time.perf_counter()
    curve = power_curve(DESIGN, participants, n_sims=n_sims, seed=0, workers=workers,
                        progress=False)
    return time.perf_counter() - start, curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 sizes x 20 simulations")
    args = parser.parse_args()
    participants = [20, 40, 80] if args.quick else [20, 40, 80, 160, 320]
    n_sims = 20 if args.quick else 200
    workers = os.cpu_count() or 1
    ours, curve = timed_curve(participants, n_sims, workers)
    one, _ = timed_curve(participants, n_sims, 1)
    print(curve.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    r = lme4_seconds(participants, n_sims)
    fits = len(participants) * n_sims
    print(f"{fits} fits: Assay {ours:.2f} s on {workers} processes, {one:.2f} s in one"
          + (f"; lme4 glmer loop {r:.1f} s in one (as simr): {r / ours:.1f}x, "
             f"{r / one:.1f}x in one process" if r else
             "; lme4 not available (Rscript with lme4)"))
    print(json.dumps({"fits": fits, "participants": participants, "n_sims": n_sims,
                      "cpu_count": os.cpu_count(), "workers": workers,
                      "seconds": round(ours, 3), "seconds_one_process": round(one, 3),
                      "lme4_workers": 1, "lme4_seconds": None if r is None else round(r, 2),
                      "speedup_vs_lme4": None if r is None else round(r / ours, 2),
                      "speedup_one_process_vs_lme4": None if r is None else round(r / one, 2),
                      "power": [round(p, 3) for p in curve["power"]]}))


if __name__ == "__main__":
    main()
