"""answer key: the correct query per trial index, so a trial POST need not load the plan

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

sessions = sa.table(
    "sessions",
    sa.column("id", sa.Integer),
    sa.column("plan", sa.JSON),
    sa.column("answer_key", sa.Text),
)


def upgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("answer_key", sa.Text(), nullable=True))
    conn = op.get_bind()
    for session_id, plan in conn.execute(sa.select(sessions.c.id, sessions.c.plan)).all():
        key = "".join(trial["correct"] for trial in plan)
        conn.execute(sessions.update().where(sessions.c.id == session_id).values(answer_key=key))
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.alter_column("answer_key", existing_type=sa.Text(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_column("answer_key")
