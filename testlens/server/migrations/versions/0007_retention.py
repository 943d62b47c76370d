"""per-tenant retention; indexes the retention sweep and repository deletion use

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

``retention_policies`` holds a tenant's own retention in days, a null column meaning the
server's default (``TESTLENS_RETENTION_*``). The sweep walks each repository's runs by
(repo_id, created_at) and its state changes by (repo_id, at), which indexes already serve;
deleting a repository deletes its test states and shard plans by repo_id, which no index
served (each batch would scan the whole table), so both get one.
"""

import sqlalchemy as sa
from alembic import op

from testlens.server.models.base import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retention_policies",
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("results_days", sa.Integer(), nullable=True),
        sa.Column("runs_days", sa.Integer(), nullable=True),
        sa.Column("events_days", sa.Integer(), nullable=True),
        sa.Column("deliveries_days", sa.Integer(), nullable=True),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_retention_policies_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_retention_policies")),
    )
    # Plain CREATE INDEX on both backends: no table is rebuilt.
    op.create_index("ix_test_states_repo_id", "test_states", ["repo_id"])
    op.create_index("ix_shard_plans_repo_id", "shard_plans", ["repo_id"])


def downgrade() -> None:
    op.drop_index("ix_shard_plans_repo_id", table_name="shard_plans")
    op.drop_index("ix_test_states_repo_id", table_name="test_states")
    op.drop_table("retention_policies")
