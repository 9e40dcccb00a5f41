"""accounts: study ownership and roles, an admin flag, an audit log, and when a study closed

Existing studies are owned by an admin after the upgrade: the first researcher (lowest id)
becomes an admin if none is, and owner of every study. Without researchers the studies stay
without members (admins, once created, see them all).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("researchers") as batch:
        batch.add_column(sa.Column("is_admin", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
    op.create_table(
        "study_members",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("researcher_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.ForeignKeyConstraint(["researcher_id"], ["researchers.id"],
                                name=op.f("fk_study_members_researcher_id_researchers")),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"],
                                name=op.f("fk_study_members_study_id_studies")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_study_members")),
        sa.UniqueConstraint("study_id", "researcher_id",
                            name=op.f("uq_study_members_study_id_researcher_id")),
    )
    op.create_index(op.f("ix_study_members_study_id"), "study_members", ["study_id"])
    op.create_index(op.f("ix_study_members_researcher_id"), "study_members", ["researcher_id"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=50), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"],
                                name=op.f("fk_audit_log_study_id_studies")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"])
    op.create_index(op.f("ix_audit_log_study_id"), "audit_log", ["study_id"])
    conn = op.get_bind()
    first = conn.execute(sa.text("SELECT min(id) FROM researchers")).scalar()
    if first is not None:
        admins = conn.execute(sa.text("SELECT count(*) FROM researchers WHERE is_admin")).scalar()
        if not admins:
            conn.execute(sa.text("UPDATE researchers SET is_admin = :t WHERE id = :id"),
                         {"t": True, "id": first})
        conn.execute(sa.text("INSERT INTO study_members (study_id, researcher_id, role) "
                             "SELECT id, :rid, 'owner' FROM studies"), {"rid": first})


def downgrade() -> None:
    op.drop_index(op.f("ix_audit_log_study_id"), table_name="audit_log")
    op.drop_index(op.f("ix_audit_log_at"), table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_index(op.f("ix_study_members_researcher_id"), table_name="study_members")
    op.drop_index(op.f("ix_study_members_study_id"), table_name="study_members")
    op.drop_table("study_members")
    with op.batch_alter_table("researchers") as batch:
        batch.drop_column("is_admin")
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("closed_at")
