"""Tidy trial-level export: one row per stored trial, participants as pseudonyms only."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.models import (
    ParticipantSession,
    PlatformIdentity,
    Study,
    StudyVersion,
    TrialResponse,
)

COLUMNS = [
    "study",
    "study_version",
    "participant",
    "mode",
    "condition",
    "cell",
    "status",
    "block",
    "trial_index",
    "attempt",
    "trial_kind",
    "unit_id",
    "unit_kind",
    "layer",
    "choice",
    "confidence",
    "correct",
    "rt_ms",
    "presented_at",
    "responded_at",
    "n_events",
    # per session, repeated on each of its rows (for the exclusion rules)
    "started_at",
    "finished_at",
    "instructions_seconds",
    "practice_attempts",
    "participant_key",
]


def pseudonym(public_id: str) -> str:
    """Sessions get random public ids at creation, so this reveals nothing about the person."""
    return "P-" + public_id[:12]


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
    rows = []
    for response, psession, version, pid_key in db.execute(query):
        planned = psession.plan[response.trial_index]
        rows.append(
            {
                "study": slug,
                "study_version": version,
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
                "unit_kind": planned["unit_kind"],
                "layer": planned["layer"],
                "choice": response.choice,
                "confidence": response.confidence,
                "correct": response.correct,
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
        )
    frame = pd.DataFrame(rows, columns=COLUMNS)
    for col in ("presented_at", "responded_at", "started_at", "finished_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    return frame


def write_export(frame: pd.DataFrame, out: Path) -> None:
    """CSV, or Parquet when the file name ends in .parquet."""
    out = Path(out)
    if out.suffix == ".parquet":
        frame.to_parquet(out, index=False)
    elif out.suffix == ".csv":
        frame.to_csv(out, index=False)
    else:
        raise ValueError(f"{out}: export format must be .csv or .parquet")
