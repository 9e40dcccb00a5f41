"""Starting and resuming participant sessions, and assigning them to condition cells.

Assignment balances conditions first, then block orders within the chosen condition,
counting the sessions that hold a place (completed, or started within the timeout), so that
conditions stay within one participant of each other. A study that is not open (full,
paused, closed) lets no new live participant in; those already inside may finish.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Literal

import numpy as np
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, defer

from experiments.paradigms.base import Cell
from experiments.study import StudySpec
from server.catalog import latest_version, now
from server.models import ParticipantSession, PlatformIdentity, Study, StudyVersion
from stimuli.stimulus_set import StimulusManifest

Mode = Literal["live", "pilot", "preview"]
# Parsed (spec, manifest) by (spec digest, stimulus-set digest): content-addressed, so safe
# to share between requests and databases.
_PARSED: dict[tuple[str, str], tuple[StudySpec, StimulusManifest]] = {}
# Sessions in these states no longer hold a place in their cell.
RELEASED = ("declined", "screened_out", "withdrawn")


class UnknownStudy(LookupError):
    pass


class SessionElsewhere(LookupError):
    """A platform ID that has a session, arriving without proof that it is its owner (the
    browser's signed cookie, or the platform's SESSION_ID of that session)."""

    def __init__(self, slug: str, title: str) -> None:
        super().__init__(f"study {slug!r}: this platform ID's session was started elsewhere")
        self.title = title


class StudyNotOpen(LookupError):
    """A new participant arrived at a study that is full, paused or closed."""

    def __init__(self, slug: str, state: str, title: str) -> None:
        super().__init__(f"study {slug!r} is {state}")
        self.state = state
        self.title = title


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


def _choose_cell(db: Session, version: StudyVersion, spec: StudySpec) -> dict | None:
    """The least-filled block order of the least-filled condition below its target (ties:
    the first in the study's order); None when every condition has reached its target."""
    counts = cell_counts(db, version, spec.recruitment.session_timeout_minutes)
    by_condition: dict[str, list[dict]] = {}
    for cell in version.cells:
        by_condition.setdefault(cell["condition"], []).append(cell)
    totals = {c: sum(counts[_cell_key(cell)] for cell in cells)
              for c, cells in by_condition.items()}
    target = spec.recruitment.target_per_condition
    open_conditions = [c for c in by_condition if target is None or totals[c] < target]
    if not open_conditions:
        return None
    condition = min(open_conditions, key=totals.__getitem__)
    return min(by_condition[condition], key=lambda cell: counts[_cell_key(cell)])


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


def _find_by_pid(db: Session, study_id: int, pid: str
                 ) -> tuple[ParticipantSession, PlatformIdentity] | None:
    row = db.execute(
        select(ParticipantSession, PlatformIdentity)
        .join(PlatformIdentity, PlatformIdentity.session_id == ParticipantSession.id)
        .where(PlatformIdentity.study_id == study_id, PlatformIdentity.platform_pid == pid)
    ).first()
    return None if row is None else (row[0], row[1])


def _resume(found: tuple[ParticipantSession, PlatformIdentity], slug: str, title: str,
            remembered: str | None, platform_session_id: str | None) -> ParticipantSession:
    """The found session, if the request proves it is its owner's: the browser that
    started it (its signed cookie remembers it) or the platform's link to that session
    (the same SESSION_ID, which only the participant and Prolific know). Knowing the
    platform ID alone is not enough: it would hand anyone the participant's session."""
    session, identity = found
    if session.public_id == remembered or (
            platform_session_id is not None
            and identity.platform_session_id == platform_session_id):
        return session
    raise SessionElsewhere(slug, title)


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
    remembered: str | None = None,
) -> ParticipantSession:
    """Resume the session of this platform ID, or assign a new one to the least-filled cell.

    ``remembered`` is the session the browser's signed cookie names for this study; a
    platform ID's session resumes only with it or with its SESSION_ID (else
    :class:`SessionElsewhere`).

    The study row is locked for the assignment (FOR UPDATE on PostgreSQL; SQLite's
    immediate transactions serialize writers), so concurrent arrivals see each other.
    """
    version = latest_version(db, slug)
    if version is None:
        raise UnknownStudy(slug)
    title = version.spec["title"]
    if pid is not None:
        found = _find_by_pid(db, version.study_id, pid)
        if found is not None:
            return _resume(found, slug, title, remembered, platform_session_id)
    spec, manifest = _parsed(version)  # before the lock: it is the slow part
    study = db.scalar(select(Study).where(Study.id == version.study_id).with_for_update())
    if pid is not None:  # re-check under the lock: a twin request may have just created it
        found = _find_by_pid(db, version.study_id, pid)
        if found is not None:
            return _resume(found, slug, title, remembered, platform_session_id)
    counted = mode == "live"
    if counted and study.state not in ("open", "full"):
        raise StudyNotOpen(slug, study.state, spec.title)
    cell = _choose_cell(db, version, spec)
    if cell is None and counted:
        study.state = "full"
        raise StudyNotOpen(slug, "full", spec.title)
    if counted and study.state == "full":  # places freed (timed out) since it filled up
        study.state = "open"
    if cell is None:  # a pilot or preview of a full study: the least-filled cell
        counts = cell_counts(db, version, spec.recruitment.session_timeout_minutes)
        cell = min(version.cells, key=lambda c: counts[_cell_key(c)])
    public_id = secrets.token_hex(16)
    rng = np.random.default_rng(int(public_id, 16))
    paradigm = spec.paradigm_class
    plan = paradigm.plan(spec, manifest, Cell(cell["condition"], tuple(cell["block_order"])), rng)
    session = ParticipantSession(
        public_id=public_id,
        study_id=version.study_id,
        study_version_id=version.id,
        mode=mode,
        paradigm=paradigm.id,
        condition=cell["condition"],
        cell=_cell_key(cell),
        status="consent",
        plan=[t.to_dict() for t in plan],
        answer_keys=[t.key for t in plan],
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
