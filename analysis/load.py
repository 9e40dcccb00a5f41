"""Load tidy trial tables (the columns of ``server.export.COLUMNS``) with typed columns.

Two sources: an export file written by ``assay export`` (CSV or Parquet), or the study
database through ``server.export.trial_rows``, the one server function analysis uses.
Either way the result goes through :func:`tidy`, so that every later stage sees the same
dtypes: categoricals for labels, ``bool`` for ``correct``, ``float`` for ``rt_ms``, nullable
integers for counts, and UTC datetimes.

Session-level columns that a newer export may carry (``SESSION_COLUMNS``) are typed when
present; :func:`session_table` derives what it can when they are absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from server.export import COLUMNS, trial_rows

TRIAL_KINDS = ["practice", "main", "catch"]
CHOICES = ["a", "b"]
CATEGORICAL = ["study", "participant", "mode", "condition", "cell", "status", "unit_id",
               "unit_kind", "layer"]
INTEGER = ["study_version", "block", "trial_index", "attempt", "confidence", "n_events"]
DATETIME = ["presented_at", "responded_at"]
# Optional per-session columns (repeated on each of a session's rows) used by the exclusions.
SESSION_COLUMNS = ["started_at", "finished_at", "instructions_seconds", "practice_attempts",
                   "participant_key"]


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

    Extra columns are kept (session-level ones typed, others untouched). Raises
    ``ValueError`` naming the missing columns or the first bad value.
    """
    missing = [c for c in COLUMNS if c not in frame.columns and c not in SESSION_COLUMNS]
    if missing:
        raise ValueError(f"not a trial export: missing column(s) {', '.join(missing)}")
    out = frame.copy()
    for col in CATEGORICAL:
        values = out[col].astype("string") if not isinstance(
            out[col].dtype, pd.CategoricalDtype) else out[col]
        out[col] = values.astype("category")
    for col in INTEGER:
        out[col] = _integer(out[col], col)
    kinds = out["trial_kind"].astype("string")
    extra = sorted(set(kinds.dropna()) - set(TRIAL_KINDS))
    out["trial_kind"] = pd.Categorical(kinds, categories=TRIAL_KINDS + extra)
    choice = out["choice"].astype("string")
    bad = choice.notna() & ~choice.isin(CHOICES)
    if bad.any():
        raise ValueError(f"column 'choice': values must be 'a' or 'b' "
                         f"(first: {choice[bad].iloc[0]!r})")
    out["choice"] = pd.Categorical(choice, categories=CHOICES)
    out["correct"] = _boolean(out["correct"], "correct")
    rt = pd.to_numeric(out["rt_ms"], errors="coerce")
    if (out["rt_ms"].notna() & rt.isna()).any():
        raise ValueError("column 'rt_ms': values must be numbers")
    out["rt_ms"] = rt.astype(float)
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
        frame = pd.read_csv(path, dtype={"participant": str, "unit_id": str, "layer": str,
                                         "condition": str, "cell": str, "choice": str})
    else:
        raise ValueError(f"{path}: trial data must be a .csv or .parquet file")
    return tidy(frame)


def trials_from_db(url: str, slug: str, include_preview: bool = False) -> pd.DataFrame:
    """The study's trials straight from its database (SQLAlchemy URL), through the export."""
    engine = create_engine(url)
    try:
        with Session(engine) as db:
            frame = trial_rows(db, slug, include_preview=include_preview)
    finally:
        engine.dispose()
    if frame.empty:
        raise ValueError(f"study {slug!r}: no trials in the database")
    return tidy(frame)


def session_table(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per participant: what the exclusion rules look at.

    Columns: condition, status, mode, n_trials, n_main, n_catch, catch_accuracy,
    main_accuracy, practice_attempts, instructions_seconds, total_minutes, side_fraction,
    button_fraction, first_seen, participant_key (NA when the export lacks it) and
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
    side = responses.groupby(["participant", "choice"], observed=True).size()
    n_resp = responses.groupby("participant", observed=True).size()
    out["side_fraction"] = side.groupby(level=0).max() / n_resp
    button = responses.groupby(["participant", "choice", "confidence"], observed=True).size()
    out["button_fraction"] = button.groupby(level=0).max() / n_resp
    if "participant_key" in t:
        out["participant_key"] = g["participant_key"].first()
    else:
        out["participant_key"] = pd.Series(pd.NA, index=out.index, dtype="string")
    out["sources"] = "; ".join(derived)
    out.index.name = "participant"
    return out
