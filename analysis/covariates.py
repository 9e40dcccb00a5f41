"""Unit covariates as model predictors: standardized within source x layer.

Covariates (the export's ``cov_*`` columns: a unit's importance today, more later) live on
different scales for neurons and dictionary features and from layer to layer, so each one is
z-scored within every (source, layer) group over that group's units, each unit counted once
whatever its number of trials, before it enters a model as ``<name>_z``. The report plots
each unit's accuracy against these same values, with a least-squares line and Pearson's r per
condition (:func:`covariate_trends`), so the picture matches what the model is given.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from analysis.schema import COVARIATE_PREFIX

GROUP = ("source", "layer")
TRENDS = ["covariate", "condition", "n_units", "r", "p", "slope", "intercept"]


def numeric_covariates(trials: pd.DataFrame) -> list[str]:
    """Names (without the prefix) of the covariate columns that hold numbers."""
    return [
        c.removeprefix(COVARIATE_PREFIX) for c in trials.columns
        if c.startswith(COVARIATE_PREFIX) and pd.api.types.is_numeric_dtype(trials[c])
    ]


def standardize_covariates(trials: pd.DataFrame, names: list[str] | None = None
                           ) -> pd.DataFrame:
    """A copy of ``trials`` with ``<name>_z`` for each numeric covariate: (value - mean) / sd
    over the units of its source x layer group (sd with ddof=1; 0 where a group's units all
    share one value, NaN where the value is missing)."""
    names = numeric_covariates(trials) if names is None else names
    out = trials.copy()
    for name in names:
        col = COVARIATE_PREFIX + name
        if col not in trials:
            raise ValueError(f"no covariate column {col!r}")
        units = trials[["unit_id", *GROUP, col]].drop_duplicates("unit_id")
        stats = units.groupby(list(GROUP), observed=True)[col].agg(["mean", "std"])
        joined = trials[list(GROUP)].join(stats, on=list(GROUP))
        sd = joined["std"].to_numpy(dtype=float)
        centred = trials[col].to_numpy(dtype=float) - joined["mean"].to_numpy(dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.where(np.nan_to_num(sd) > 0, centred / sd, 0.0)
        out[f"{name}_z"] = np.where(np.isnan(centred), np.nan, z)
    return out


def covariate_trends(per_unit: pd.DataFrame, trials: pd.DataFrame, names: Sequence[str]
                     ) -> pd.DataFrame:
    """Per covariate and condition, over the units of ``per_unit`` (``cluster_accuracy`` by
    unit_id within condition): how their accuracy follows the standardized covariate
    ``<name>_z`` of ``trials``: n_units, Pearson's r and its two-sided p, and the
    least-squares line (slope, intercept). r, p and the line are NaN with fewer than three
    units with the value, or when the covariate or the accuracy does not vary."""
    rows = []
    for name in names:
        joined = unit_covariate(per_unit, trials, name)
        for condition, units in joined.groupby("condition", observed=True):
            x, y = units[f"{name}_z"].to_numpy(float), units["accuracy"].to_numpy(float)
            fit = [np.nan] * 4
            if len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
                line = stats.linregress(x, y)
                fit = [line.rvalue, line.pvalue, line.slope, line.intercept]
            rows.append([name, str(condition), len(x), *fit])
    return pd.DataFrame(rows, columns=TRENDS)


def unit_covariate(per_unit: pd.DataFrame, trials: pd.DataFrame, name: str) -> pd.DataFrame:
    """``per_unit`` with the unit's ``<name>_z`` beside it; units without the value left out."""
    col = f"{name}_z"
    if col not in trials:
        raise ValueError(f"no standardized covariate column {col!r}")
    values = trials[["unit_id", col]].drop_duplicates("unit_id")
    return per_unit.merge(values, on="unit_id", how="left").dropna(subset=[col])
