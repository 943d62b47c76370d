"""rate-limit buckets shared by every server process

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08

The database store of the API's rate limits (``TESTLENS_RATE_LIMIT_STORE=database``, the
default on PostgreSQL): one row per limited key, holding the time its bucket is full again.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_limits",
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("full_at", sa.BigInteger(), nullable=False),
        sa.Column("admitted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_limits")),
    )
    op.create_index(op.f("ix_rate_limits_full_at"), "rate_limits", ["full_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_rate_limits_full_at"), table_name="rate_limits")
    op.drop_table("rate_limits")
