"""Starting and resuming participant sessions, and assigning them to condition cells."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Literal

import numpy as np
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, defer

from experiments.study import StudySpec
from experiments.two_afc import Cell, plan_trials, trial_to_dict
from server.catalog import latest_version, now
from server.models import ParticipantSession, PlatformIdentity, Study, StudyVersion
from stimuli.stimulus_set import StimulusManifest

Mode = Literal["live", "pilot", "preview"]
# Parsed (spec, manifest) by (spec digest, stimulus-set digest): content-addressed, so safe
# to share between requests and databases.
_PARSED: dict[tuple[str, str], tuple[StudySpec, StimulusManifest]] = {}
# Sessions in these states no longer hold a place in their cell.
RELEASED = ("declined", "screened_out")


class UnknownStudy(LookupError):
    pass


def _cell_key(cell: dict) -> str:
    return Cell(cell["condition"], tuple(cell["block_order"])).key


def cell_counts(db: Session, version: StudyVersion, timeout_minutes: int) -> dict[str, int]:
    """Live sessions per cell: completed ones, plus ones started within the timeout."""
    cutoff = now() - timedelta(minutes=timeout_minutes)
    rows = db.execute(
        select(ParticipantSession.cell, func.count())
        .where(
            ParticipantSession.study_id == version.study_id,
            ParticipantSession.mode == "live",
            ParticipantSession.status.not_in(RELEASED),
            or_(
                ParticipantSession.status == "completed",
                ParticipantSession.started_at >= cutoff,
            ),
        )
        .group_by(ParticipantSession.cell)
    ).all()
    counts = {_cell_key(c): 0 for c in version.cells}
    counts.update({cell: n for cell, n in rows if cell in counts})
    return counts


def _choose_cell(db: Session, version: StudyVersion, spec: StudySpec) -> dict:
    counts = cell_counts(db, version, spec.recruitment.session_timeout_minutes)
    return min(version.cells, key=lambda c: counts[_cell_key(c)])  # ties: first in order


def _parsed(version: StudyVersion) -> tuple[StudySpec, StimulusManifest]:
    """Validated spec and manifest of a version; cached by content, as versions never change."""
    set_row = version.stimulus_set
    key = (version.spec_digest, set_row.digest)
    if key in _PARSED:
        return _PARSED[key]
    parsed = (
        StudySpec.model_validate(version.spec),
        StimulusManifest.model_validate(set_row.manifest),
    )
    if len(_PARSED) >= 32:
        _PARSED.pop(next(iter(_PARSED)))
    _PARSED[key] = parsed
    return parsed


def _find_by_pid(db: Session, study_id: int, pid: str) -> ParticipantSession | None:
    return db.scalar(
        select(ParticipantSession)
        .join(PlatformIdentity, PlatformIdentity.session_id == ParticipantSession.id)
        .where(PlatformIdentity.study_id == study_id, PlatformIdentity.platform_pid == pid)
    )


def start_session(
    db: Session,
    slug: str,
    *,
    mode: Mode,
    pid: str | None = None,
    pid_key: str | None = None,
    platform_study_id: str | None = None,
    platform_session_id: str | None = None,
    user_agent: str | None = None,
) -> ParticipantSession:
    """Resume the session of this platform ID, or assign a new one to the least-filled cell.

    The study row is locked for the assignment (FOR UPDATE on PostgreSQL; SQLite's
    immediate transactions serialize writers), so concurrent arrivals see each other.
    """
    version = latest_version(db, slug)
    if version is None:
        raise UnknownStudy(slug)
    if pid is not None:
        found = _find_by_pid(db, version.study_id, pid)
        if found is not None:
            return found
    spec, manifest = _parsed(version)  # before the lock: it is the slow part
    db.scalar(select(Study.id).where(Study.id == version.study_id).with_for_update())
    if pid is not None:  # re-check under the lock: a twin request may have just created it
        found = _find_by_pid(db, version.study_id, pid)
        if found is not None:
            return found
    cell = _choose_cell(db, version, spec)
    public_id = secrets.token_hex(16)
    rng = np.random.default_rng(int(public_id, 16))
    plan = plan_trials(spec, manifest, Cell(cell["condition"], tuple(cell["block_order"])), rng)
    session = ParticipantSession(
        public_id=public_id,
        study_id=version.study_id,
        study_version_id=version.id,
        mode=mode,
        condition=cell["condition"],
        cell=_cell_key(cell),
        status="consent",
        plan=[trial_to_dict(t) for t in plan],
        answer_key="".join(t.correct for t in plan),
        n_practice=spec.practice.trials,
        practice_attempts=0,
        started_at=now(),
        user_agent=(user_agent or "")[:400] or None,
    )
    db.add(session)
    db.flush()
    if pid is not None:
        db.add(
            PlatformIdentity(
                session_id=session.id,
                study_id=version.study_id,
                platform_pid=pid,
                pid_key=pid_key,
                platform_study_id=platform_study_id,
                platform_session_id=platform_session_id,
            )
        )
        db.flush()
    return session


def get_session(db: Session, public_id: str) -> ParticipantSession | None:
    """The session, without its plan (loaded on first use; most API calls never need it)."""
    return db.scalar(
        select(ParticipantSession)
        .where(ParticipantSession.public_id == public_id)
        .options(defer(ParticipantSession.plan))
    )
