"""Researcher accounts (hashed passwords) and the per-condition progress they see."""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass
from datetime import UTC

import numpy as np
from flask_login import UserMixin
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from experiments.study import StudySpec
from server.models import ParticipantSession, Researcher, Study, StudyVersion, TrialResponse


class ResearcherUser(UserMixin):
    """The logged-in researcher; its id names the login generation too, so that a cookie
    saved before a logout no longer loads a user after it."""

    def __init__(self, researcher_id: int, username: str, generation: int) -> None:
        self.id = f"{researcher_id}.{generation}"
        self.researcher_id = researcher_id
        self.username = username

    @staticmethod
    def load(db: Session, user_id: str) -> ResearcherUser | None:
        researcher_id, _, generation = user_id.partition(".")
        if not (researcher_id.isdigit() and generation.isdigit()):
            return None
        row = db.get(Researcher, int(researcher_id))
        if row is None or row.login_generation != int(generation):
            return None
        return ResearcherUser(row.id, row.username, row.login_generation)


def revoke_logins(db: Session, researcher_id: int) -> None:
    """Invalidate every session cookie of this researcher (logout)."""
    row = db.get(Researcher, researcher_id)
    if row is not None:
        row.login_generation += 1


def create_researcher(db: Session, username: str, password: str, *,
                      is_admin: bool = False) -> Researcher:
    if not username or len(username) > 100:
        raise ValueError("username must be 1-100 characters")
    if len(password) < 10:
        raise ValueError("password must be at least 10 characters")
    if db.scalar(select(Researcher).where(Researcher.username == username)):
        raise ValueError(f"researcher {username!r} already exists")
    row = Researcher(username=username, password_hash=generate_password_hash(password),
                     is_admin=is_admin)
    db.add(row)
    db.flush()
    return row


@functools.cache
def _decoy_hash() -> str:
    """A hash of nothing anyone knows, checked for unknown users."""
    return generate_password_hash(secrets.token_hex(16))


def authenticate(db: Session, username: str, password: str) -> Researcher | None:
    """The researcher, or None; an unknown username costs one hash check as a known one
    does, so that the time taken does not tell which usernames exist."""
    row = db.scalar(select(Researcher).where(Researcher.username == username))
    if row is None:
        check_password_hash(_decoy_hash(), password)
        return None
    return row if check_password_hash(row.password_hash, password) else None


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
    screen_reasons: dict[str, int]  # live screen-outs by reason (server.flow.SCREEN_REASONS)


def study_progress(db: Session, studies: list[Study]) -> list[StudyProgress]:
    """Live sessions per study and condition (pilot and preview sessions left out)."""
    out = []
    for study in studies:
        latest: StudyVersion = study.versions[-1]
        counts = {c["condition"]: {} for c in latest.cells}
        rows = db.execute(
            select(ParticipantSession.condition, ParticipantSession.status, func.count())
            .where(ParticipantSession.study_id == study.id, ParticipantSession.mode == "live")
            .group_by(ParticipantSession.condition, ParticipantSession.status)
        )
        for condition, status, n in rows:
            counts.setdefault(condition, {})[status] = n
        reasons = db.execute(
            select(ParticipantSession.screen_reason, func.count())
            .where(ParticipantSession.study_id == study.id, ParticipantSession.mode == "live",
                   ParticipantSession.status == "screened_out")
            .group_by(ParticipantSession.screen_reason)
        )
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
                screen_reasons={reason or "unrecorded": n for reason, n in reasons},
            )
        )
    return out


def progress_series(db: Session, study: Study) -> dict:
    """A study's live sessions over time, for the dashboard's plots: per condition, the
    cumulative arrivals, completions and screen-outs at each event (minutes since the study
    was created); pilot and preview counts; the median duration of completed sessions; and
    the accuracy so far per condition (shown with a warning against peeking)."""
    origin = study.created_at
    rows = db.execute(
        select(ParticipantSession.condition, ParticipantSession.mode, ParticipantSession.status,
               ParticipantSession.started_at, ParticipantSession.finished_at)
        .where(ParticipantSession.study_id == study.id)).all()
    series: dict[str, dict[str, list[tuple[float, str]]]] = {}
    modes = {"live": 0, "pilot": 0, "preview": 0}
    durations = []
    for condition, mode, status, started, finished in rows:
        modes[mode] = modes.get(mode, 0) + 1
        if mode != "live":
            continue
        events = series.setdefault(condition, {"arrivals": [], "completed": [],
                                               "screened_out": []})
        events["arrivals"].append(_minutes(started, origin))
        if status in ("completed", "screened_out") and finished is not None:
            events[status].append(_minutes(finished, origin))
            if status == "completed":
                durations.append(_minutes(finished, started))
    accuracy = dict(db.execute(
        select(ParticipantSession.condition, func.avg(TrialResponse.score))
        .join(TrialResponse, TrialResponse.session_id == ParticipantSession.id)
        .where(ParticipantSession.study_id == study.id, ParticipantSession.mode == "live")
        .group_by(ParticipantSession.condition)).all())
    return {
        "slug": study.slug,
        "conditions": {c: {k: [[t, i + 1] for i, t in enumerate(sorted(v))]
                           for k, v in events.items()} for c, events in sorted(series.items())},
        "sessions": modes,
        "median_minutes": float(np.median(durations)) if durations else None,
        "accuracy": {c: round(float(a), 4) for c, a in sorted(accuracy.items())},
    }


def _minutes(later, earlier) -> float:
    later, earlier = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (later, earlier))
    return round((later - earlier).total_seconds() / 60, 3)
