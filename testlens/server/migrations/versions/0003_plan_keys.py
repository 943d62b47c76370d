"""shard plans keyed by CI run; the shard a run's node ran

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("shard_plans", schema=None) as batch_op:
        batch_op.add_column(sa.Column("plan_key", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("tests_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("environment", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("workflow_run_id", sa.String(length=100), nullable=True))
        batch_op.create_unique_constraint(
            batch_op.f("uq_shard_plans_tenant_id"), ["tenant_id", "plan_key"]
        )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("shard", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("shard")
    with op.batch_alter_table("shard_plans", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_shard_plans_tenant_id"), type_="unique")
        batch_op.drop_column("workflow_run_id")
        batch_op.drop_column("environment")
        batch_op.drop_column("tests_hash")
        batch_op.drop_column("plan_key")
