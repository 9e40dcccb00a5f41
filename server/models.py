"""The database schema. Platform IDs live in their own table, never beside responses."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Image(Base):
    """Stimulus image bytes, addressed by SHA-256 so every server instance can serve them."""

    __tablename__ = "images"
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class StimulusSetRow(Base):
    __tablename__ = "stimulus_sets"
    id: Mapped[int] = mapped_column(primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    manifest: Mapped[dict[str, Any]]
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


STUDY_STATES = ("open", "full", "paused", "closed")


class Study(Base):
    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Whether new participants are let in (STUDY_STATES); those inside may always finish.
    state: Mapped[str] = mapped_column(String(10), default="open", server_default="open")
    # when it was closed (None while not closed): platform IDs are purged some days after
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    versions: Mapped[list[StudyVersion]] = relationship(
        back_populates="study", order_by="StudyVersion.version"
    )


class StudyVersion(Base):
    """An immutable launched definition; sessions and responses point at the one they used."""

    __tablename__ = "study_versions"
    __table_args__ = (
        UniqueConstraint("study_id", "version"),
        UniqueConstraint("study_id", "spec_digest"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    version: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]]
    spec_digest: Mapped[str] = mapped_column(String(64))
    cells: Mapped[list[Any]]
    stimulus_set_id: Mapped[int] = mapped_column(ForeignKey("stimulus_sets.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    study: Mapped[Study] = relationship(back_populates="versions")
    stimulus_set: Mapped[StimulusSetRow] = relationship()


class ParticipantSession(Base):
    """One participant's run through a study version; ``public_id`` doubles as pseudonym."""

    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_version_cell", "study_version_id", "cell"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    study_version_id: Mapped[int] = mapped_column(ForeignKey("study_versions.id"))
    mode: Mapped[str] = mapped_column(String(10))  # live, pilot, preview
    paradigm: Mapped[str] = mapped_column(String(50))  # its id in experiments.paradigms
    condition: Mapped[str] = mapped_column(String(50))
    cell: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))  # see server.flow.STATUSES
    plan: Mapped[list[Any]]  # experiments.paradigms.base.Trial dicts, by trial index
    # Each trial's answer key, by trial index: all a trial POST needs of the plan.
    answer_keys: Mapped[list[Any]]
    n_practice: Mapped[int] = mapped_column(Integer)
    practice_attempts: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    consented_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    instructions_seconds: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # why a screened-out session was (server.flow.SCREEN_REASONS); None for any other
    screen_reason: Mapped[str | None] = mapped_column(String(40))
    questionnaire: Mapped[dict[str, Any] | None]
    user_agent: Mapped[str | None] = mapped_column(String(400))
    version: Mapped[StudyVersion | None] = relationship()


class PlatformIdentity(Base):
    """Personal data: the recruiting platform's IDs. Unique per study, so a PID resumes."""

    __tablename__ = "platform_identities"
    __table_args__ = (UniqueConstraint("study_id", "platform_pid"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id"), unique=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"))
    platform_pid: Mapped[str] = mapped_column(String(100))
    # A keyed hash of the PID (see server.tokens.participant_key): the same person gets the
    # same key in every study, so exports can flag repeat participation without the PID.
    pid_key: Mapped[str | None] = mapped_column(String(32), index=True)
    platform_study_id: Mapped[str | None] = mapped_column(String(100))
    platform_session_id: Mapped[str | None] = mapped_column(String(100))


class TrialResponse(Base):
    """One row per answered trial: the paradigm's answer as JSON and its score, which the
    server computes from the session's answer keys (1.0 correct, 0.0 wrong)."""

    __tablename__ = "trial_responses"
    __table_args__ = (UniqueConstraint("session_id", "trial_index"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id"))
    trial_index: Mapped[int] = mapped_column(Integer)
    answer: Mapped[dict[str, Any]]
    score: Mapped[float] = mapped_column(Float)
    rt_ms: Mapped[float] = mapped_column(Float)
    presented_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    responded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    events: Mapped[list[Any]]


class Researcher(Base):
    __tablename__ = "researchers"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    # in every session cookie; logging out bumps it, which revokes the cookies handed out
    login_generation: Mapped[int] = mapped_column(default=0, server_default="0")
    is_admin: Mapped[bool] = mapped_column(default=False, server_default=false())


ROLES = ("owner", "collaborator", "viewer")  # what each may do: server.access.ALLOWED


class StudyMember(Base):
    """A researcher's role on a study; researchers see only the studies they belong to."""

    __tablename__ = "study_members"
    __table_args__ = (UniqueConstraint("study_id", "researcher_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    researcher_id: Mapped[int] = mapped_column(ForeignKey("researchers.id"), index=True)
    role: Mapped[str] = mapped_column(String(20))


class AuditEntry(Base):
    """Who did what to a study, when: launches, state changes, exports, withdrawals."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    actor: Mapped[str] = mapped_column(String(100))  # a researcher's username, or "cli"
    action: Mapped[str] = mapped_column(String(50))
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id"), index=True)
    detail: Mapped[dict[str, Any]]
