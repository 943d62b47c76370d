"""run_events: the log of every build's live events, and builds.event_seq

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column(
        "builds", sa.Column("event_seq", sa.Integer(), server_default="0", nullable=False)
    )
    op.create_table(
        "run_events",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("build_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name="fk_run_events_tenant_id_tenants",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["build_id"], ["builds.id"], name="fk_run_events_build_id_builds", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_run_events"),
        sa.UniqueConstraint("build_id", "seq", name="uq_run_events_build_id"),
    )
    op.create_index("ix_run_events_tenant", "run_events", ["tenant_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_run_events_tenant", table_name="run_events")
    op.drop_table("run_events")
    with op.batch_alter_table("builds") as batch:
        batch.drop_column("event_seq")
