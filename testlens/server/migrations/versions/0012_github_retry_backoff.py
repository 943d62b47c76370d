"""GitHub deliveries that failed wait before their next try

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

from testlens.server.models.base import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "github_deliveries",
        sa.Column("next_attempt_at", UTCDateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    with op.batch_alter_table("github_deliveries") as batch:
        batch.drop_column("next_attempt_at")
