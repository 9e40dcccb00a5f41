"""why a session was screened out: its device or window (before consent), or its catch trials

Sessions screened out before this revision all failed their catch trials.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("screen_reason", sa.String(length=40), nullable=True))
    op.execute("UPDATE sessions SET screen_reason = 'catch_accuracy' "
               "WHERE status = 'screened_out'")


def downgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("screen_reason")
