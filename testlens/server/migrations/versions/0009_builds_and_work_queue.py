"""builds (one CI execution of a suite), the work queue of orchestrated builds (work_items,
leases), and each run's build

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06

Runs stored before this revision belong to no build: ``GET /api/v1/runs`` lists builds made
from uploads from now on.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "builds",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("repo_id", sa.String(36), nullable=True),
        sa.Column("build_key", sa.String(64), nullable=True),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("branch", sa.String(300), nullable=True),
        sa.Column("commit_sha", sa.String(64), nullable=True),
        sa.Column("environment", sa.String(200), nullable=False),
        sa.Column("workflow_run_id", sa.String(100), nullable=True),
        sa.Column("meta", sa.Text(), nullable=False),
        sa.Column("worker_count", sa.Integer(), nullable=False),
        sa.Column("tests_hash", sa.String(64), nullable=True),
        sa.Column("planned_tests", sa.Integer(), nullable=False),
        sa.Column("tests", sa.Integer(), nullable=False),
        sa.Column("passed", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("flaky", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("overhead_ms", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("active_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name="fk_builds_tenant_id_tenants", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["repo_id"],
            ["repositories.id"],
            name="fk_builds_repo_id_repositories",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_builds"),
        sa.UniqueConstraint("tenant_id", "build_key", name="uq_builds_tenant_id"),
    )
    op.create_index("ix_builds_tenant_created", "builds", ["tenant_id", "created_at"])
    op.create_index("ix_builds_status", "builds", ["status"])
    op.create_table(
        "work_items",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("build_id", sa.String(36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("file", sa.Text(), nullable=False),
        sa.Column("tests", sa.Text(), nullable=True),
        sa.Column("test_count", sa.Integer(), nullable=False),
        sa.Column("p50_ms", sa.Float(), nullable=False),
        sa.Column("p90_ms", sa.Float(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("front", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("requeues", sa.Integer(), nullable=False),
        sa.Column("lease_id", sa.String(36), nullable=True),
        sa.Column("copy_lease_id", sa.String(36), nullable=True),
        sa.Column("node_index", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["build_id"], ["builds.id"], name="fk_work_items_build_id_builds", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_work_items"),
    )
    op.create_index(
        "ix_work_items_queue", "work_items", ["build_id", "status", "front", "position"]
    )
    op.create_table(
        "leases",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("build_id", sa.String(36), nullable=False),
        sa.Column("batch_id", sa.String(100), nullable=False),
        sa.Column("worker", sa.String(200), nullable=False),
        sa.Column("node_index", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("speculative", sa.Boolean(), nullable=False),
        sa.Column("rerun", sa.Boolean(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("items", sa.Text(), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["build_id"], ["builds.id"], name="fk_leases_build_id_builds", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_leases"),
        sa.UniqueConstraint("build_id", "batch_id", name="uq_leases_build_id"),
    )
    op.create_index("ix_leases_state_expires", "leases", ["state", "expires_at"])
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("build_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("lease_id", sa.String(36), nullable=True))
        batch.add_column(
            sa.Column("speculative", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.create_foreign_key(
            "fk_runs_build_id_builds", "builds", ["build_id"], ["id"], ondelete="SET NULL"
        )
        batch.create_index("ix_runs_build", ["build_id"])


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_index("ix_runs_build")
        batch.drop_constraint("fk_runs_build_id_builds", type_="foreignkey")
        batch.drop_column("speculative")
        batch.drop_column("lease_id")
        batch.drop_column("build_id")
    op.drop_index("ix_leases_state_expires", table_name="leases")
    op.drop_table("leases")
    op.drop_index("ix_work_items_queue", table_name="work_items")
    op.drop_table("work_items")
    op.drop_index("ix_builds_status", table_name="builds")
    op.drop_index("ix_builds_tenant_created", table_name="builds")
    op.drop_table("builds")
