"""Researcher accounts (hashed passwords) and the per-condition progress they see."""

from __future__ import annotations

from dataclasses import dataclass

from flask_login import UserMixin
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from experiments.study import StudySpec
from server.models import ParticipantSession, Researcher, Study, StudyVersion


class ResearcherUser(UserMixin):
    def __init__(self, researcher_id: int, username: str) -> None:
        self.id = str(researcher_id)
        self.username = username


def create_researcher(db: Session, username: str, password: str) -> Researcher:
    if not username or len(username) > 100:
        raise ValueError("username must be 1-100 characters")
    if len(password) < 10:
        raise ValueError("password must be at least 10 characters")
    if db.scalar(select(Researcher).where(Researcher.username == username)):
        raise ValueError(f"researcher {username!r} already exists")
    row = Researcher(username=username, password_hash=generate_password_hash(password))
    db.add(row)
    db.flush()
    return row


def authenticate(db: Session, username: str, password: str) -> Researcher | None:
    row = db.scalar(select(Researcher).where(Researcher.username == username))
    if row is None or not check_password_hash(row.password_hash, password):
        return None
    return row


@dataclass(frozen=True)
class ConditionProgress:
    condition: str
    started: int
    completed: int
    screened_out: int
    declined: int


@dataclass(frozen=True)
class StudyProgress:
    slug: str
    title: str
    version: int
    paradigm: str
    state: str  # open, full, paused or closed (server.models.STUDY_STATES)
    conditions: list[ConditionProgress]


def study_progress(db: Session) -> list[StudyProgress]:
    """Live sessions per study and condition (pilot and preview sessions left out)."""
    out = []
    for study in db.scalars(select(Study).order_by(Study.slug)):
        latest: StudyVersion = study.versions[-1]
        counts = {c["condition"]: {} for c in latest.cells}
        rows = db.execute(
            select(ParticipantSession.condition, ParticipantSession.status, func.count())
            .where(ParticipantSession.study_id == study.id, ParticipantSession.mode == "live")
            .group_by(ParticipantSession.condition, ParticipantSession.status)
        )
        for condition, status, n in rows:
            counts.setdefault(condition, {})[status] = n
        out.append(
            StudyProgress(
                slug=study.slug,
                title=latest.spec["title"],
                version=latest.version,
                paradigm=StudySpec.model_validate(latest.spec).paradigm.id,
                state=study.state,
                conditions=[
                    ConditionProgress(
                        condition=name,
                        started=sum(c.values()),
                        completed=c.get("completed", 0),
                        screened_out=c.get("screened_out", 0),
                        declined=c.get("declined", 0),
                    )
                    for name, c in counts.items()
                ],
            )
        )
    return out
