"""Who may do what to which study: roles per study (owner, collaborator, viewer), admins
who see everything, and the audit log of what researchers did.

A study a researcher does not belong to does not exist for them (404, not 403): its slug
is not revealed. Within a study, an action the role does not allow is a 403.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.exceptions import Forbidden, NotFound

from server.catalog import now
from server.models import ROLES, AuditEntry, PlatformIdentity, Researcher, Study, StudyMember

PURGED = "purged-"  # the placeholder prefix of a purged platform ID

ALLOWED: dict[str, tuple[str, ...]] = {
    "view": ROLES,
    "download": ROLES,
    "set_state": ("owner", "collaborator"),
    "manage": ("owner",),
    "prolific": ("owner",),  # lists of platform IDs: personal data
}


def role_of(db: Session, researcher: Researcher, study: Study) -> str | None:
    """The researcher's role on the study; admins act as owners of every study."""
    if researcher.is_admin:
        return "owner"
    return db.scalar(select(StudyMember.role).where(StudyMember.study_id == study.id,
                                                    StudyMember.researcher_id == researcher.id))


def visible_studies(db: Session, researcher: Researcher) -> list[Study]:
    query = select(Study).order_by(Study.slug)
    if not researcher.is_admin:
        query = query.join(StudyMember).where(StudyMember.researcher_id == researcher.id)
    return list(db.scalars(query))


def require(db: Session, researcher: Researcher, slug: str, action: str) -> Study:
    """The study if the researcher may do ``action`` on it; else 404 (not theirs) or 403."""
    study = db.scalar(select(Study).where(Study.slug == slug))
    role = role_of(db, researcher, study) if study is not None else None
    if role is None:
        raise NotFound(f"no study {slug!r}")
    if role not in ALLOWED[action]:
        raise Forbidden(f"a {role} of {slug!r} may not {action.replace('_', ' ')}")
    return study


def add_member(db: Session, slug: str, username: str, role: str) -> StudyMember:
    """Give a researcher a role on a study (replacing any role they had)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    study = db.scalar(select(Study).where(Study.slug == slug))
    if study is None:
        raise ValueError(f"no study {slug!r}")
    researcher = db.scalar(select(Researcher).where(Researcher.username == username))
    if researcher is None:
        raise ValueError(f"no researcher {username!r} (create one: assay admin create-user)")
    member = db.scalar(select(StudyMember).where(StudyMember.study_id == study.id,
                                                 StudyMember.researcher_id == researcher.id))
    if member is None:
        member = StudyMember(study_id=study.id, researcher_id=researcher.id, role=role)
        db.add(member)
    member.role = role
    db.flush()
    return member


def audit(db: Session, actor: str, action: str, study: Study | None = None,
          **detail: Any) -> None:
    db.add(AuditEntry(at=now(), actor=actor, action=action,
                      study_id=study.id if study is not None else None, detail=detail))


def set_study_state(db: Session, study: Study, state: str, actor: str) -> bool:
    """Change whether new participants are let in, on the record; returns whether it
    changed. Closing stamps the time that the purge of platform IDs counts from."""
    if study.state == state:
        return False
    audit(db, actor, "set_state", study, before=study.state, after=state)
    study.state = state
    study.closed_at = now() if state == "closed" else None
    return True


def purge_platform_ids(db: Session, days: int, actor: str) -> int:
    """Replace the platform IDs of studies closed more than ``days`` days ago by
    placeholders (the keyed pseudonyms stay, so repeat participation is still flagged);
    returns how many were purged."""
    cutoff = now() - timedelta(days=days)
    purged = 0
    for study in db.scalars(select(Study).where(Study.state == "closed",
                                                Study.closed_at <= cutoff)):
        rows = db.scalars(select(PlatformIdentity).where(
            PlatformIdentity.study_id == study.id,
            ~PlatformIdentity.platform_pid.startswith(PURGED)))
        count = 0
        for row in rows:
            row.platform_pid = f"{PURGED}{row.id}"
            row.platform_session_id = row.platform_study_id = None
            count += 1
        if count:
            audit(db, actor, "purge_ids", study, purged=count, days=days)
            purged += count
    return purged
