"""Unit covariates as model predictors: standardized within source x layer.

Covariates (the export's ``cov_*`` columns: a unit's importance today, more later) live on
different scales for neurons and dictionary features and from layer to layer, so each one is
z-scored within every (source, layer) group over that group's units, each unit counted once
whatever its number of trials, before it enters a model as ``<name>_z``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.schema import COVARIATE_PREFIX

GROUP = ("source", "layer")


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
