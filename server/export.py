"""Tidy trial-level export: one row per stored trial, participants as pseudonyms only.

The columns are the analysis's (``analysis.schema``): the common ones, then each paradigm's
own columns, then one ``cov_<name>`` column per covariate of the units (importance, ...),
read from the stimulus set each study version was launched on.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from analysis.schema import COLUMNS, COVARIATE_PREFIX
from experiments.paradigms import PARADIGMS
from experiments.study import StudySpec
from server.models import (
    ParticipantSession,
    PlatformIdentity,
    StimulusSetRow,
    Study,
    StudyVersion,
    TrialResponse,
)
from stimuli.stimulus_set import StimulusManifest

DATETIMES = ("presented_at", "responded_at", "started_at", "finished_at")


def pseudonym(public_id: str) -> str:
    """Sessions get random public ids at creation, so this reveals nothing about the person."""
    return "P-" + public_id[:12]


class _Versions:
    """Per study version: its spec and its units' covariates, each parsed once."""

    def __init__(self, db: Session):
        self.db = db
        self.specs: dict[int, StudySpec] = {}
        self.covariates: dict[int, dict[str, dict[str, Any]]] = {}

    def load(self, version_id: int) -> None:
        if version_id in self.specs:
            return
        version = self.db.get(StudyVersion, version_id)
        self.specs[version_id] = StudySpec.model_validate(version.spec)
        manifest = StimulusManifest.model_validate(
            self.db.scalar(select(StimulusSetRow.manifest).where(
                StimulusSetRow.id == version.stimulus_set_id))
        )
        self.covariates[version_id] = {e.id: e.covariates for e in manifest.entries}


def trial_rows(db: Session, slug: str, include_preview: bool = False) -> pd.DataFrame:
    query = (
        select(TrialResponse, ParticipantSession, StudyVersion.version, PlatformIdentity.pid_key)
        .join(ParticipantSession, TrialResponse.session_id == ParticipantSession.id)
        .outerjoin(PlatformIdentity, PlatformIdentity.session_id == ParticipantSession.id)
        .join(StudyVersion, ParticipantSession.study_version_id == StudyVersion.id)
        .join(Study, StudyVersion.study_id == Study.id)
        .where(Study.slug == slug)
        .order_by(ParticipantSession.id, TrialResponse.trial_index)
    )
    if not include_preview:
        query = query.where(ParticipantSession.mode != "preview")
    versions = _Versions(db)
    chance: dict[tuple[int, str], float] = {}
    paradigm_columns: list[str] = []
    covariate_names: dict[str, None] = {}
    rows = []
    for response, psession, version, pid_key in db.execute(query):
        versions.load(psession.study_version_id)
        paradigm = PARADIGMS[psession.paradigm]
        key = (psession.study_version_id, psession.condition)
        if key not in chance:
            spec = versions.specs[key[0]]
            chance[key] = paradigm.chance(spec.options_for(psession.condition))
        planned = psession.plan[response.trial_index]
        row = {
            "study": slug,
            "study_version": version,
            "paradigm": paradigm.id,
            "participant": pseudonym(psession.public_id),
            "mode": psession.mode,
            "condition": psession.condition,
            "cell": psession.cell,
            "status": psession.status,
            "block": planned["block"],
            "trial_index": response.trial_index,
            "attempt": planned["attempt"],
            "trial_kind": planned["kind"],
            "unit_id": planned["unit_id"],
            "source": planned["source"],
            "layer": planned["layer"],
            "correct": response.score >= 1.0,
            "chance": chance[key],
            "rt_ms": response.rt_ms,
            "presented_at": response.presented_at,
            "responded_at": response.responded_at,
            "n_events": len(response.events),
            "started_at": psession.started_at,
            "finished_at": psession.finished_at,
            "instructions_seconds": psession.instructions_seconds,
            "practice_attempts": psession.practice_attempts,
            "participant_key": pid_key,
        }
        for name in paradigm.export_columns:
            if name not in paradigm_columns:
                paradigm_columns.append(name)
        row.update(paradigm.export_row(planned, response.answer))
        covariates = versions.covariates[psession.study_version_id].get(planned["unit_id"], {})
        for name, value in covariates.items():
            covariate_names[COVARIATE_PREFIX + name] = None
            row[COVARIATE_PREFIX + name] = value
        rows.append(row)
    frame = pd.DataFrame(rows, columns=[*COLUMNS, *paradigm_columns, *sorted(covariate_names)])
    for col in DATETIMES:
        frame[col] = pd.to_datetime(frame[col], utc=True)
    return frame


MEDIA_TYPES = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}


def export_bytes(frame: pd.DataFrame, fmt: str) -> bytes:
    """The table as a CSV or Parquet file's bytes (the dashboard's downloads, and files)."""
    if fmt == "csv":
        return frame.to_csv(index=False).encode()
    if fmt == "parquet":
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        return buffer.getvalue()
    raise ValueError(f"export format must be {' or '.join(MEDIA_TYPES)}, not {fmt!r}")


def write_export(frame: pd.DataFrame, out: Path) -> None:
    """CSV, or Parquet when the file name ends in .parquet."""
    out = Path(out)
    if out.suffix not in (".csv", ".parquet"):
        raise ValueError(f"{out}: export format must be .csv or .parquet")
    out.write_bytes(export_bytes(frame, out.suffix[1:]))
