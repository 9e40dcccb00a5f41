"""paradigms as plugins: answers as JSON with a score, a paradigm per session, study state

Trial responses keep the paradigm's answer as JSON plus a score instead of 2AFC columns
(choice, confidence, correct); sessions name their paradigm and keep their answer keys as a
JSON list; plans become paradigm-neutral trials ({..., stimuli, key}); studies get a state.
Every existing row is backfilled: a 2AFC session under way before the upgrade finishes on
its frozen plan.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TWO_AFC = "2afc_exemplar"
STIMULI = ("ref_max", "ref_min", "query_a", "query_b")

sessions = sa.table(
    "sessions",
    sa.column("id", sa.Integer),
    sa.column("plan", sa.JSON),
    sa.column("paradigm", sa.String),
    sa.column("answer_key", sa.Text),
    sa.column("answer_keys", sa.JSON),
)


def _trial_v2(t: dict) -> dict:
    """A 2AFC plan trial of revision 0003 in the paradigm-neutral shape."""
    common = {k: t[k] for k in ("index", "kind", "block", "attempt", "unit_id", "layer")}
    return {**common, "source": t["unit_kind"], "stimuli": {k: t[k] for k in STIMULI},
            "key": t["correct"]}


def _trial_v1(t: dict) -> dict:
    common = {k: t[k] for k in ("index", "kind", "block", "attempt", "unit_id", "layer")}
    return {**common, "unit_kind": t["source"], **t["stimuli"], "correct": t["key"]}


def _answer_sql(dialect: str) -> str:
    build = "json_build_object" if dialect == "postgresql" else "json_object"
    return (
        f"UPDATE trial_responses SET answer = {build}('choice', choice, 'confidence', "
        "confidence), score = CASE WHEN correct THEN 1.0 ELSE 0.0 END"
    )


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(
            sa.Column("state", sa.String(length=10), server_default="open", nullable=False)
        )
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("paradigm", sa.String(length=50), nullable=True))
        batch.add_column(sa.Column("answer_keys", sa.JSON(), nullable=True))
    conn = op.get_bind()
    for session_id, plan in conn.execute(sa.select(sessions.c.id, sessions.c.plan)).all():
        trials = [_trial_v2(t) for t in plan]
        conn.execute(
            sessions.update()
            .where(sessions.c.id == session_id)
            .values(plan=trials, paradigm=TWO_AFC, answer_keys=[t["key"] for t in trials])
        )
    with op.batch_alter_table("sessions") as batch:
        batch.alter_column("paradigm", existing_type=sa.String(length=50), nullable=False)
        batch.alter_column("answer_keys", existing_type=sa.JSON(), nullable=False)
        batch.drop_column("answer_key")

    with op.batch_alter_table("trial_responses") as batch:
        batch.add_column(sa.Column("answer", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("score", sa.Float(), nullable=True))
    conn.execute(sa.text(_answer_sql(conn.dialect.name)))
    with op.batch_alter_table("trial_responses") as batch:
        batch.alter_column("answer", existing_type=sa.JSON(), nullable=False)
        batch.alter_column("score", existing_type=sa.Float(), nullable=False)
        batch.drop_column("choice")
        batch.drop_column("confidence")
        batch.drop_column("correct")


def downgrade() -> None:
    conn = op.get_bind()
    others = conn.execute(
        sa.select(sa.func.count()).select_from(sessions).where(sessions.c.paradigm != TWO_AFC)
    ).scalar()
    if others:
        raise RuntimeError(f"{others} session(s) of other paradigms than 2AFC: revision 0003 "
                           "cannot hold them")
    with op.batch_alter_table("trial_responses") as batch:
        batch.add_column(sa.Column("choice", sa.String(length=1), nullable=True))
        batch.add_column(sa.Column("confidence", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("correct", sa.Boolean(), nullable=True))
    responses = sa.table(
        "trial_responses", sa.column("id", sa.Integer), sa.column("answer", sa.JSON),
        sa.column("score", sa.Float), sa.column("choice", sa.String),
        sa.column("confidence", sa.Integer), sa.column("correct", sa.Boolean),
    )
    for row_id, answer, score in conn.execute(
        sa.select(responses.c.id, responses.c.answer, responses.c.score)
    ).all():
        conn.execute(
            responses.update().where(responses.c.id == row_id).values(
                choice=answer["choice"], confidence=answer["confidence"], correct=score >= 1.0
            )
        )
    with op.batch_alter_table("trial_responses") as batch:
        for name, kind in (("choice", sa.String(length=1)), ("confidence", sa.Integer()),
                           ("correct", sa.Boolean())):
            batch.alter_column(name, existing_type=kind, nullable=False)
        batch.drop_column("answer")
        batch.drop_column("score")

    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("answer_key", sa.Text(), nullable=True))
    for session_id, plan in conn.execute(sa.select(sessions.c.id, sessions.c.plan)).all():
        trials = [_trial_v1(t) for t in plan]
        conn.execute(
            sessions.update()
            .where(sessions.c.id == session_id)
            .values(plan=trials, answer_key="".join(t["correct"] for t in trials))
        )
    with op.batch_alter_table("sessions") as batch:
        batch.alter_column("answer_key", existing_type=sa.Text(), nullable=False)
        batch.drop_column("answer_keys")
        batch.drop_column("paradigm")
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("state")
