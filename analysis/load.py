"""Load tidy trial tables (the columns of ``analysis.schema``) with typed columns.

An export file written by ``assay export`` (CSV or Parquet), or a frame the server's export
produced, goes through :func:`tidy`, so that every later stage sees the same dtypes:
categoricals for labels, ``bool`` for ``correct``, ``float`` for ``rt_ms``, ``chance`` and
covariates, nullable integers for counts, and UTC datetimes.

Exports of before paradigms became plugins still load: ``unit_kind`` is read as ``source``,
and a missing ``paradigm`` / ``chance`` are the 2AFC's. Session-level columns
(``SESSION_COLUMNS``) are typed when present; :func:`session_table` derives what it can
when they are absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.schema import COMMON, COVARIATE_PREFIX, RENAMED

TRIAL_KINDS = ["practice", "main", "catch"]
CATEGORICAL = ["study", "paradigm", "participant", "mode", "condition", "cell", "status",
               "unit_id", "source", "layer"]
INTEGER = ["study_version", "block", "trial_index", "attempt", "n_events"]
DATETIME = ["presented_at", "responded_at"]
# Filled in for exports written before paradigms became plugins (all 2AFC).
LEGACY = {"paradigm": "2afc_exemplar", "chance": 0.5}


def _boolean(values: pd.Series, name: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(values) and not values.isna().any():
        return values.astype(bool)
    text = values.astype("string").str.strip().str.lower()
    mapped = text.map({"true": True, "false": False, "1": True, "0": False, "1.0": True,
                       "0.0": False})
    bad = values[mapped.isna()]
    if len(bad):
        raise ValueError(f"column {name!r}: {len(bad)} value(s) are not true/false "
                         f"(first: {bad.iloc[0]!r})")
    return mapped.astype(bool)


def _integer(values: pd.Series, name: str) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce")
    bad = values.notna() & (numbers.isna() | (numbers != np.round(numbers)))
    if bad.any():
        raise ValueError(f"column {name!r}: {int(bad.sum())} value(s) are not integers "
                         f"(first: {values[bad].iloc[0]!r})")
    return numbers.astype("Int64")


def tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """Check the export columns and give them their dtypes; returns a new frame.

    Extra columns are kept: session-level ones, ``choice`` and the 2AFC's ``references``
    (categories), ``confidence`` (an integer) and covariates (``cov_*``, numbers where they
    all are) typed, others untouched. Raises ``ValueError`` naming the missing columns or the
    first bad value.
    """
    out = frame.rename(columns={k: v for k, v in RENAMED.items() if v not in frame.columns})
    for col, value in LEGACY.items():
        if col not in out.columns:
            out[col] = value
    missing = [c for c in COMMON if c not in out.columns]
    if missing:
        raise ValueError(f"not a trial export: missing column(s) {', '.join(sorted(missing))}")
    out = out.copy()
    for col in CATEGORICAL:
        values = out[col].astype("string") if not isinstance(
            out[col].dtype, pd.CategoricalDtype) else out[col]
        out[col] = values.astype("category")
    for col in INTEGER:
        out[col] = _integer(out[col], col)
    kinds = out["trial_kind"].astype("string")
    extra = sorted(set(kinds.dropna()) - set(TRIAL_KINDS))
    out["trial_kind"] = pd.Categorical(kinds, categories=TRIAL_KINDS + extra)
    for col in ("choice", "references"):
        if col in out:
            values = out[col].astype("string")
            out[col] = pd.Categorical(values, categories=sorted(set(values.dropna())))
    if "confidence" in out:
        out["confidence"] = _integer(out["confidence"], "confidence")
    out["correct"] = _boolean(out["correct"], "correct")
    for col in ("rt_ms", "chance"):
        values = pd.to_numeric(out[col], errors="coerce")
        if (out[col].notna() & values.isna()).any():
            raise ValueError(f"column {col!r}: values must be numbers")
        out[col] = values.astype(float)
    for col in [c for c in out.columns if c.startswith(COVARIATE_PREFIX)]:
        numbers = pd.to_numeric(out[col], errors="coerce")
        if not (out[col].notna() & numbers.isna()).any():
            out[col] = numbers.astype(float)
    for col in DATETIME + [c for c in ("started_at", "finished_at") if c in out]:
        out[col] = pd.to_datetime(out[col], utc=True, format="ISO8601")
    if "instructions_seconds" in out:
        out["instructions_seconds"] = pd.to_numeric(out["instructions_seconds"]).astype(float)
    if "practice_attempts" in out:
        out["practice_attempts"] = _integer(out["practice_attempts"], "practice_attempts")
    if "participant_key" in out:
        out["participant_key"] = out["participant_key"].astype("string")
    return out.reset_index(drop=True)


def read_trials(path: str | Path) -> pd.DataFrame:
    """An export file (``.csv`` or ``.parquet``) as a typed trial table."""
    path = Path(path)
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif path.suffix == ".csv":
        text = ["participant", "unit_id", "layer", "condition", "cell", "choice", "source",
                "references"]
        frame = pd.read_csv(path, dtype=dict.fromkeys(text, str))
    else:
        raise ValueError(f"{path}: trial data must be a .csv or .parquet file")
    return tidy(frame)


def session_table(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per participant: what the exclusion rules look at.

    Columns: condition, status, mode, n_trials, n_main, n_catch, catch_accuracy,
    main_accuracy, practice_attempts, instructions_seconds, total_minutes, side_fraction (the
    largest share of one choice: a side in 2AFC, a position in intruder detection),
    button_fraction (of one choice and confidence), first_seen, participant_key (NA when
    the export lacks it) and
    ``sources``, a note of which values were derived rather than exported.

    When the export lacks the session columns: practice attempts are the largest
    ``attempt`` among practice rows (0 without practice rows), total time is the span from
    the first ``presented_at`` to the last ``responded_at`` (it misses consent, instructions
    and questionnaire, so it underestimates), and instructions time is unknown (NA).
    """
    t = trials
    g = t.groupby("participant", observed=True, sort=True)
    out = g[["condition", "status", "mode"]].first()
    out["n_trials"] = g.size()
    kind = t["trial_kind"].astype("string")
    responses = t[kind.isin(["main", "catch"])]
    main = t[kind == "main"]
    catch = t[kind == "catch"]
    out["n_main"] = main.groupby("participant", observed=True).size().reindex(out.index,
                                                                              fill_value=0)
    out["n_catch"] = catch.groupby("participant", observed=True).size().reindex(
        out.index, fill_value=0)
    out["main_accuracy"] = main.groupby("participant", observed=True)["correct"].mean()
    out["catch_accuracy"] = catch.groupby("participant", observed=True)["correct"].mean()
    derived = []
    if "practice_attempts" in t:
        out["practice_attempts"] = g["practice_attempts"].max()
    else:
        practice = t[kind == "practice"]
        attempts = practice.groupby("participant", observed=True)["attempt"].max()
        out["practice_attempts"] = attempts.reindex(out.index).fillna(0).astype("Int64")
        derived.append("practice_attempts from trial attempts")
    if "instructions_seconds" in t:
        out["instructions_seconds"] = g["instructions_seconds"].first()
    else:
        out["instructions_seconds"] = np.nan
    if "started_at" in t and "finished_at" in t:
        span = g["finished_at"].max() - g["started_at"].min()
        out["first_seen"] = g["started_at"].min()
    else:
        span = g["responded_at"].max() - g["presented_at"].min()
        out["first_seen"] = g["presented_at"].min()
        derived.append("total time from trial timestamps")
    out["total_minutes"] = span.dt.total_seconds() / 60
    n_resp = responses.groupby("participant", observed=True).size()
    out["side_fraction"] = out["button_fraction"] = np.nan
    if "choice" in t:
        side = responses.groupby(["participant", "choice"], observed=True).size()
        out["side_fraction"] = side.groupby(level=0).max() / n_resp
        if "confidence" in t:
            button = responses.groupby(["participant", "choice", "confidence"],
                                       observed=True).size()
            out["button_fraction"] = button.groupby(level=0).max() / n_resp
    if "participant_key" in t:
        out["participant_key"] = g["participant_key"].first()
    else:
        out["participant_key"] = pd.Series(pd.NA, index=out.index, dtype="string")
    out["sources"] = "; ".join(derived)
    out.index.name = "participant"
    return out
