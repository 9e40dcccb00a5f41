"""Storing trial responses exactly once, and where a session stands.

A trial is keyed by (session, trial index). Replaying a stored trial with the same answer is
a no-op; a replay with a different answer is a conflict. The session's paradigm validates
the answer and scores it against the session's answer keys; nothing here knows a paradigm.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StrictInt,
    ValidationError,
    model_validator,
)
from sqlalchemy import Dialect, Engine, bindparam, cast, exists, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from experiments.paradigms import PARADIGMS
from server.catalog import now
from server.db import DriverStatement, driver_cursor
from server.models import ParticipantSession, TrialResponse

TRIAL_STATUSES = ("instructions", "trials")
# Browser timestamps outside this range are a broken clock or a forged body; stored, they
# would break every export of the study (the year 1 does not fit a pandas timestamp).
EARLIEST = datetime(2020, 1, 1, tzinfo=UTC)
CLOCK_SKEW = timedelta(days=2)
# A float field that takes JSON numbers (900 or 900.5), never strings ("900") or booleans.
StrictNumber = Annotated[float, Strict()]


class FlowError(Exception):
    """A request that does not fit the session's state; ``status`` is the HTTP code."""

    def __init__(self, message: str, status: int = 409, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


class Event(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal[
        "blur",
        "focus",
        "fullscreenexit",
        "fullscreenenter",
        "visibilityhidden",
        "visibilityvisible",
        "offline",
        "online",
    ]
    t: StrictNumber = Field(ge=0, le=24 * 3_600_000, description="ms since the trial started")


class TrialIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    trial_index: StrictInt = Field(ge=0)
    answer: dict[str, Any] = Field(max_length=20)  # the paradigm's Answer validates it
    rt_ms: StrictNumber = Field(ge=0, le=3_600_000)
    presented_at: AwareDatetime
    responded_at: AwareDatetime
    events: list[Event] = Field(default_factory=list, max_length=200)

    @model_validator(mode="before")
    @classmethod
    def _answer_at_top_level(cls, data: Any) -> Any:
        """Bodies from pages loaded before answers were nested (answer fields at the top
        level, e.g. a 2AFC choice and confidence) are still in browsers' outboxes."""
        if isinstance(data, dict) and "answer" not in data:
            common = set(cls.model_fields) - {"answer"}
            answer = {k: v for k, v in data.items() if k not in common}
            return {**{k: v for k, v in data.items() if k in common}, "answer": answer}
        return data

    @model_validator(mode="after")
    def _plausible_times(self) -> TrialIn:
        latest = datetime.now(UTC) + CLOCK_SKEW
        for name in ("presented_at", "responded_at"):
            value = getattr(self, name)
            if not EARLIEST <= value <= latest:
                raise ValueError(f"{name}: {value.isoformat()} is not a plausible time "
                                 f"(between {EARLIEST.date()} and {latest.date()})")
        if self.responded_at < self.presented_at:
            raise ValueError("responded_at: earlier than presented_at")
        return self


# Dialects whose INSERT has ON CONFLICT DO NOTHING, which exactly-once storage relies on.
_INSERTS = {"postgresql": pg_insert, "sqlite": sqlite_insert}


@dataclass(frozen=True)
class Frozen:
    """What a session never changes once started: what trials are checked against."""

    id: int
    paradigm: str
    answer_keys: list[Any]


_FROZEN: OrderedDict[str, Frozen] = OrderedDict()  # by public id, most recent last
_FROZEN_MAX = 20_000
_FROZEN_LOCK = threading.Lock()


def frozen_session(engine: Engine, public_id: str) -> Frozen | None:
    """The session's frozen part, from this process's cache after its first trial: the
    answer keys are a plan's whole list, too costly to load and parse on every trial."""
    with _FROZEN_LOCK:
        found = _FROZEN.get(public_id)
        if found is not None:
            _FROZEN.move_to_end(public_id)
            return found
    with engine.connect() as conn:
        row = conn.execute(select(ParticipantSession.id, ParticipantSession.paradigm,
                                  ParticipantSession.answer_keys)
                           .where(ParticipantSession.public_id == public_id)).first()
    if row is None:
        return None
    found = Frozen(*row)
    with _FROZEN_LOCK:
        _FROZEN[public_id] = found
        while len(_FROZEN) > _FROZEN_MAX:
            _FROZEN.popitem(last=False)
    return found


FIELDS = ("session_id", "trial_index", "answer", "score", "rt_ms", "presented_at",
          "responded_at", "received_at", "events")


_STATEMENTS: dict[str, tuple[DriverStatement | None, DriverStatement]] = {}


def _statements(dialect: Dialect) -> tuple[DriverStatement | None, DriverStatement]:
    """The hot path's UPDATE and INSERT, compiled once per dialect (so that a trial costs no
    statement building). The INSERT selects its row only while the session accepts trials;
    PostgreSQL needs the values' types spelled out (untyped JSON text is not jsonb), SQLite
    must not get a CAST (CAST to DATETIME makes a number)."""
    found = _STATEMENTS.get(dialect.name)
    if found is not None:
        return found
    if dialect.name not in _INSERTS:
        raise ValueError(f"unsupported database {dialect.name!r}: use SQLite or PostgreSQL")
    sessions, columns = ParticipantSession.__table__, TrialResponse.__table__.c
    start = (update(sessions).where(sessions.c.id == bindparam("session_id"),
                                    sessions.c.status == "instructions")
             .values(status="trials"))

    def value(name: str):
        bound = bindparam(name, type_=columns[name].type)
        return cast(bound, columns[name].type) if dialect.name == "postgresql" else bound

    # "= a OR = b", not IN: an IN list is re-rendered for every execution (SQLAlchemy's
    # expanding parameters)
    accepting = exists().where(sessions.c.id == bindparam("session_id"),
                               or_(*(sessions.c.status == s for s in TRIAL_STATUSES)))
    row = select(*(value(name).label(name) for name in FIELDS)).where(accepting)
    insert = (_INSERTS[dialect.name](TrialResponse).from_select(list(FIELDS), row)
              .on_conflict_do_nothing(index_elements=["session_id", "trial_index"])
              .returning(TrialResponse.id))
    if dialect.name == "postgresql":  # one statement, one round trip: the UPDATE as a CTE
        found = None, DriverStatement.compile(insert.add_cte(start.cte("moved")), dialect)
    else:
        found = (DriverStatement.compile(start, dialect),
                 DriverStatement.compile(insert, dialect))
    _STATEMENTS[dialect.name] = found
    return found


def record_trial(engine: Engine, session: Frozen, trial: TrialIn) -> bool:
    """Store a trial once; returns True when it was already stored (a replay).

    The hot path is one transaction on the driver's cursor, no ORM and no read: a session
    still in instructions moves on to trials, and the row goes in only while the session
    accepts trials (checked in the INSERT itself). Only when no row went in (a replay, or a
    session that takes no more trials) is the stored trial read, to tell which."""
    keys = session.answer_keys
    if not 0 <= trial.trial_index < len(keys):
        raise FlowError(
            f"trial_index {trial.trial_index} is outside the plan (0..{len(keys) - 1})",
            status=400,
        )
    paradigm = PARADIGMS[session.paradigm]
    try:
        answer = paradigm.Answer.model_validate(trial.answer)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(["answer", *(str(p) for p in err["loc"])])
        raise FlowError(f"{where}: {err['msg']}", status=400) from None
    stored_answer = answer.model_dump(mode="json")
    values = {
        "session_id": session.id,
        "trial_index": trial.trial_index,
        "answer": stored_answer,
        "score": paradigm.score(keys[trial.trial_index], answer),
        "rt_ms": trial.rt_ms,
        "presented_at": trial.presented_at,
        "responded_at": trial.responded_at,
        "received_at": now(),
        "events": [e.model_dump() for e in trial.events],
    }
    start, insert = _statements(engine.dialect)
    with driver_cursor(engine) as cursor:
        if start is not None:
            cursor.execute(start.sql, start.parameters({"session_id": session.id}))
        cursor.execute(insert.sql, insert.parameters(values))
        if cursor.fetchone() is not None:
            return False
    with engine.connect() as conn:
        existing = conn.execute(select(TrialResponse.answer, TrialResponse.rt_ms).where(
            TrialResponse.session_id == session.id,
            TrialResponse.trial_index == trial.trial_index)).first()
        if existing is None:
            status = conn.scalar(select(ParticipantSession.status).where(
                ParticipantSession.id == session.id))
            raise FlowError(f"session is in state {status!r}; no new trials accepted")
    if (existing.answer, existing.rt_ms) != (stored_answer, trial.rt_ms):
        raise FlowError(
            f"trial {trial.trial_index} is already stored with a different answer", status=409
        )
    return True


def stored_indices(db: Session, session: ParticipantSession) -> dict[int, bool]:
    """Stored trial index -> correct."""
    rows = db.execute(
        select(TrialResponse.trial_index, TrialResponse.score).where(
            TrialResponse.session_id == session.id
        )
    )
    return {index: score >= 1.0 for index, score in rows}


@dataclass(frozen=True)
class Progress:
    practice_attempt: int  # the attempt in progress or last made (0 with no practice)
    practice_done: bool
    next_index: int | None  # first unanswered trial on the participant's path; None when done
    main_total: int
    main_done: int


def progress(session: ParticipantSession, stored: dict[int, bool]) -> Progress:
    """Where a participant stands, derived from the plan and stored trials alone."""
    plan = session.plan
    n_p = session.n_practice
    practice = [t for t in plan if t["kind"] == "practice"]
    max_attempts = len(practice) // n_p if n_p else 0
    attempt, done, next_index = 0, n_p == 0, None
    for a in range(1, max_attempts + 1):
        attempt = a
        indices = range((a - 1) * n_p, a * n_p)
        missing = [i for i in indices if i not in stored]
        if missing:
            next_index = missing[0]
            break
        if all(stored[i] for i in indices) or a == max_attempts:
            done = True
            break
    missing = missing_main(session, stored)
    main_total = len(plan) - len(practice)
    if done:
        next_index = missing[0] if missing else None
    return Progress(attempt, done, next_index, main_total, main_total - len(missing))


def missing_main(session: ParticipantSession, stored: dict[int, bool]) -> list[int]:
    return [
        t["index"] for t in session.plan if t["kind"] != "practice" and t["index"] not in stored
    ]


def catch_accuracy(session: ParticipantSession, stored: dict[int, bool]) -> float | None:
    catch = [t["index"] for t in session.plan if t["kind"] == "catch"]
    if not catch:
        return None
    return sum(stored.get(i, False) for i in catch) / len(catch)
