"""A session's steps outside the trials: consent, instructions, questionnaire, finishing.

Status moves consent -> instructions -> trials -> questionnaire -> completed | screened_out,
or consent -> declined, or consent -> screened_out (the device or window does not fit).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import delete
from sqlalchemy.orm import Session

from experiments.paradigms import PARADIGMS
from experiments.study import StudySpec
from server.catalog import now
from server.models import ParticipantSession, TrialResponse
from server.trials import FlowError, catch_accuracy, missing_main, progress, stored_indices

PROLIFIC_COMPLETE = "https://app.prolific.com/submissions/complete?cc="
PROLIFIC_HOME = "https://app.prolific.com/"
# Why a session was screened out. Before consent nothing was done, so there is no code.
BeforeConsent = Literal["mobile", "window_too_small"]
BEFORE_CONSENT = get_args(BeforeConsent)
SCREEN_REASONS = (*BEFORE_CONSENT, "catch_accuracy")


class ConsentIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # "yes" or 1 is not an answer
    agree: bool


class InstructionsIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    seconds: float = Field(ge=0, le=24 * 3600)


def _clean_text(value: str) -> str:
    """Refuse what PostgreSQL's JSON cannot hold (NUL) or UTF-8 cannot encode (lone
    surrogates): stored, either breaks every later query on the column."""
    if "\x00" in value:
        raise ValueError("contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("contains an unpaired surrogate (not valid Unicode text)") from None
    return value


CleanText = Annotated[str, Field(max_length=5000), AfterValidator(_clean_text)]


class QuestionnaireIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    answers: dict[Annotated[CleanText, Field(max_length=100)], CleanText] = Field(max_length=100)


class ScreeningIn(BaseModel):
    """What the browser check measured, and the study requirement it failed."""

    model_config = ConfigDict(extra="forbid", strict=True)
    reason: BeforeConsent
    width: int = Field(ge=0, le=100_000)  # the window's inner size, CSS pixels
    height: int = Field(ge=0, le=100_000)
    mobile: bool  # a phone or tablet


def spec_of(session: ParticipantSession) -> StudySpec:
    return StudySpec.model_validate(session.version.spec)


@dataclass(frozen=True)
class Finished:
    status: str
    code: str | None
    redirect_url: str | None


def _expect(session: ParticipantSession, *statuses: str) -> None:
    if session.status not in statuses:
        raise FlowError(f"session is in state {session.status!r}, expected {' or '.join(statuses)}")


def consent(session: ParticipantSession, data: ConsentIn) -> None:
    """Declining is final; replaying the same answer (after a lost response) is a no-op.
    A session screened out before consent never consented: there is nothing to replay."""
    replay = (session.status == "declined") == (not data.agree)
    if replay and session.status != "consent" and session.screen_reason not in BEFORE_CONSENT:
        return
    _expect(session, "consent")
    session.status = "instructions" if data.agree else "declined"
    session.consented_at = now() if data.agree else None
    if not data.agree:
        session.finished_at = now()


def screen_out(session: ParticipantSession, data: ScreeningIn) -> Finished:
    """Before consent only. The browser's measurement is taken on trust, but it must fail
    the study's own requirements; replaying the same report is a no-op. No code is given:
    the participant returns the study on Prolific."""
    if not (session.status == "screened_out" and session.screen_reason == data.reason):
        _expect(session, "consent")
        need = spec_of(session).screening
        if need is None:
            raise FlowError("this study does not screen devices")
        if data.reason == "mobile" and (need.allow_mobile or not data.mobile):
            raise FlowError("reason: 'mobile' needs mobile = true, in a study that does not "
                            "allow phones and tablets", status=400)
        if data.reason == "window_too_small" and (
                data.width >= need.min_width and data.height >= need.min_height):
            raise FlowError(f"reason: a {data.width}x{data.height} window meets the study's "
                            f"minimum of {need.min_width}x{need.min_height}", status=400)
        session.status = "screened_out"
        session.screen_reason = data.reason
        session.finished_at = now()
    return Finished(session.status, None, return_url(session, spec_of(session)))


def return_url(session: ParticipantSession, spec: StudySpec) -> str | None:
    """Where a participant who cannot finish goes: Prolific, to return the study (no code)."""
    return (PROLIFIC_HOME
            if spec.recruitment.platform == "prolific" and session.mode != "preview" else None)


def instructions_read(session: ParticipantSession, data: InstructionsIn) -> None:
    if session.status == "trials":
        return
    _expect(session, "instructions")
    session.instructions_seconds = data.seconds
    session.status = "trials"


def answer_questionnaire(db: Session, session: ParticipantSession, data: QuestionnaireIn) -> None:
    """Accepted once every planned trial is stored; the server checks, not the client."""
    if session.status in ("questionnaire", "completed", "screened_out"):
        return
    _expect(session, "trials")
    missing = missing_main(session, stored_indices(db, session))
    if missing:
        raise FlowError(f"{len(missing)} trial(s) not stored yet", missing=missing[:50])
    questions = {q.id: q for q in spec_of(session).questionnaire}
    unknown = sorted(set(data.answers) - set(questions))
    if unknown:
        raise FlowError(f"unknown question {unknown[0]!r}", status=400)
    for q in questions.values():
        answer = data.answers.get(q.id, "").strip()
        if q.required and not answer:
            raise FlowError(f"question {q.id!r} needs an answer", status=400)
        if q.kind == "choice" and answer and answer not in q.options:
            raise FlowError(f"question {q.id!r}: {answer!r} is not one of its options", status=400)
        if len(answer) > 5000:
            raise FlowError(f"question {q.id!r}: answer longer than 5000 characters", status=400)
    session.questionnaire = {k: v.strip() for k, v in data.answers.items()}
    session.status = "questionnaire"


def finish(db: Session, session: ParticipantSession) -> Finished:
    """Close a session and hand out its code, only once every trial is confirmed stored."""
    spec = spec_of(session)
    if session.status not in ("completed", "screened_out"):
        _expect(session, "questionnaire", "trials")
        stored = stored_indices(db, session)
        missing = missing_main(session, stored)
        if missing:
            raise FlowError(f"{len(missing)} trial(s) not stored yet", missing=missing[:50])
        session.practice_attempts = progress(session, stored).practice_attempt
        rule = spec.exclusions
        accuracy = catch_accuracy(session, stored)
        failed = (
            rule.screen_out_on_catch
            and accuracy is not None
            and rule.catch_min_accuracy is not None
            and accuracy < rule.catch_min_accuracy
        )
        session.status = "screened_out" if failed else "completed"
        session.screen_reason = "catch_accuracy" if failed else None
        session.finished_at = now()
    code = (
        spec.recruitment.screenout_code
        if session.status == "screened_out"
        else spec.recruitment.completion_code
    )
    if session.mode == "preview" or session.screen_reason in BEFORE_CONSENT:
        code = None  # a preview's live code would let anyone claim a payment; before
        # consent nothing was done
    redirect = None
    if spec.recruitment.platform == "prolific" and session.mode != "preview" and code:
        redirect = PROLIFIC_COMPLETE + code
    return Finished(session.status, code, redirect)


def _placed(image_url: Callable[[str, int, int], str], index: int) -> Callable[[str], str]:
    """The trial's image namer: each call is the next place in the trial."""
    places = itertools.count()
    return lambda digest: image_url(digest, index, next(places))


def withdraw(db: Session, session: ParticipantSession) -> int:
    """Delete a participant's responses at their request (kept: that the session existed,
    so that its place is released and the withdrawal is on record); returns how many
    trials were deleted. Withdrawing twice is a no-op."""
    deleted = db.execute(delete(TrialResponse).where(
        TrialResponse.session_id == session.id)).rowcount
    session.questionnaire = None
    if session.status != "withdrawn":
        session.status = "withdrawn"
        session.finished_at = now()
    return deleted


def client_state(db: Session, session: ParticipantSession,
                 image_url: Callable[[str, int, int], str]) -> dict[str, Any]:
    """What the browser needs to (re)build its timeline; catch trials look like main ones.

    Each trial carries the paradigm's view of it; its answer key only where the participant
    gets feedback (practice always, main trials when the options ask for it). Images are
    named by ``image_url(digest, trial index, place in the trial)``: per place, so that a
    catch trial's answer does not share its reference's URL."""
    spec = spec_of(session)
    paradigm = PARADIGMS[session.paradigm]
    options = spec.options_for(session.condition)
    stored = stored_indices(db, session)
    p = progress(session, stored)

    def trial(t: dict) -> dict:
        practice = t["kind"] == "practice"
        out = {
            "index": t["index"],
            "phase": "practice" if practice else "main",
            "block": t["block"],
            "attempt": t["attempt"],
            "view": paradigm.view(t, _placed(image_url, t["index"])),
            "stored": t["index"] in stored,
        }
        if practice or options.feedback:
            out["correct"] = t["key"]
        return out

    return {
        "status": session.status,
        "mode": session.mode,
        "title": spec.title,
        "texts": spec.texts.model_dump(),
        "paradigm": options.model_dump(),
        "screening": spec.screening.model_dump() if spec.screening else None,
        "screen_reason": session.screen_reason,
        "return_url": return_url(session, spec),
        "practice": {"trials": spec.practice.trials, "max_attempts": spec.practice.max_attempts},
        "questionnaire": [q.model_dump() for q in spec.questionnaire],
        "progress": {
            "practice_attempt": p.practice_attempt,
            "practice_done": p.practice_done,
            "next_index": p.next_index,
            "main_total": p.main_total,
            "main_done": p.main_done,
        },
        "trials": [trial(t) for t in session.plan],
    }
