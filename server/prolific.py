"""Prolific's bulk lists: platform IDs by session status (approve, return) and bonuses per
correct main trial, as the files Prolific's bulk tools take. They hold personal data, so the
dashboard offers them to owners only and audits each download; nothing here logs an ID."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from experiments.study import StudySpec
from server.access import PURGED
from server.models import ParticipantSession, PlatformIdentity, Study, StudyVersion, TrialResponse

LISTS: dict[str, tuple[str, ...]] = {"approve": ("completed",),
                                     "return": ("screened_out", "declined", "withdrawn")}
BONUSED = "completed"  # bonuses go to those Prolific is asked to approve
CENT = Decimal("0.01")
MAX_PER_CORRECT = Decimal(100)  # as recruitment.bonus_per_correct allows


def per_correct_amount(text: str) -> Decimal:
    """A bonus per correct trial typed by a researcher: more than 0, at most 100, in whole
    pence or cents (Prolific pays no fractions of them)."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{text!r} is not an amount such as 0.05") from None
    if not (value.is_finite() and 0 < value <= MAX_PER_CORRECT and value == value.quantize(CENT)):
        raise ValueError(f"the bonus per correct trial must be more than 0 and at most "
                         f"{MAX_PER_CORRECT}, in whole pence or cents, not {text!r}")
    return value


def _identities(slug: str, statuses: tuple[str, ...]) -> Select:
    """Live sessions of the study in these statuses whose platform ID is not yet purged."""
    return (select(PlatformIdentity.platform_pid, ParticipantSession)
            .join(ParticipantSession, ParticipantSession.id == PlatformIdentity.session_id)
            .join(Study, Study.id == PlatformIdentity.study_id)
            .where(Study.slug == slug, ParticipantSession.mode == "live",
                   ParticipantSession.status.in_(statuses),
                   ~PlatformIdentity.platform_pid.startswith(PURGED))
            .order_by(PlatformIdentity.id))


def platform_ids(db: Session, slug: str, which: str) -> list[str]:
    """The platform IDs of list ``which`` (approve or return), in order of arrival."""
    return [pid for pid, _ in db.execute(_identities(slug, LISTS[which]))]


def _rate(db: Session, version_id: int, cache: dict[int, Decimal | None]) -> Decimal | None:
    if version_id not in cache:
        spec = StudySpec.model_validate(db.get(StudyVersion, version_id).spec)
        cache[version_id] = spec.recruitment.bonus_per_correct
    return cache[version_id]


def bonuses(db: Session, slug: str,
            per_correct: Decimal | None = None) -> list[tuple[str, Decimal]]:
    """(platform ID, amount) for each completed participant owed a bonus: ``per_correct``
    times their correct main trials (practice and catch trials earn nothing; nobody is
    listed with 0). Without an explicit amount each session takes the rule of the version
    it ran, so a later change to the study file does not alter what was promised."""
    rates: dict[int, Decimal | None] = {}
    owed: dict[str, Decimal] = {}
    for pid, psession in db.execute(_identities(slug, (BONUSED,))):
        rate = per_correct or _rate(db, psession.study_version_id, rates)
        if rate is None:
            raise ValueError(f"{slug}'s study file sets no recruitment.bonus_per_correct: "
                             "give the amount per correct trial")
        scores = db.execute(select(TrialResponse.trial_index, TrialResponse.score)
                            .where(TrialResponse.session_id == psession.id))
        correct = sum(1 for index, score in scores
                      if psession.plan[index]["kind"] == "main" and score >= 1.0)
        owed[pid] = owed.get(pid, Decimal(0)) + rate * correct
    return [(pid, amount.quantize(CENT)) for pid, amount in owed.items() if amount > 0]


def ids_csv(ids: list[str]) -> str:
    """The approve / return file: a ``participant_id`` header, one ID a line."""
    return "participant_id\n" + "".join(f"{pid}\n" for pid in ids)


def bonus_csv(rows: list[tuple[str, Decimal]]) -> str:
    """The bulk bonus file: ``PARTICIPANT_ID,AMOUNT`` lines, two decimals, no header."""
    return "".join(f"{pid},{amount:.2f}\n" for pid, amount in rows)
