"""test states, events, rollups, quarantine, webhooks, durations

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from testlens.server.models.base import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("test_cases", schema=None) as batch_op:
        for column in (
            sa.Column("state", sa.String(length=12), nullable=False, server_default="healthy"),
            sa.Column("flake_score", sa.Float(), nullable=False, server_default="0"),
            sa.Column("flake_score_low", sa.Float(), nullable=False, server_default="0"),
            sa.Column("flake_score_high", sa.Float(), nullable=False, server_default="0"),
            sa.Column("total_runs", sa.Integer(), nullable=False, server_default="0"),
            sa.Column("failed_runs", sa.Integer(), nullable=False, server_default="0"),
            sa.Column("flaky_runs", sa.Integer(), nullable=False, server_default="0"),
            sa.Column("first_flaky_at", UTCDateTime(timezone=True), nullable=True),
            sa.Column("last_flaky_at", UTCDateTime(timezone=True), nullable=True),
            sa.Column("last_run_id", sa.String(length=36), nullable=True),
            sa.Column("recent_flaky", sa.Text(), nullable=False, server_default="[]"),
        ):
            batch_op.add_column(column)
        batch_op.create_index("ix_test_cases_repo_flaky", ["repo_id", "first_flaky_at"])
        batch_op.create_index("ix_test_cases_repo_score", ["repo_id", "flake_score"])
        batch_op.create_index("ix_test_cases_repo_state", ["repo_id", "state"])
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("flaky_detected", sa.Integer(), nullable=False, server_default="0")
        )
    op.create_table(
        "server_secrets",
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_server_secrets")),
    )
    op.create_table(
        "duration_jobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("project", sa.String(length=300), nullable=False),
        sa.Column("commit_id", sa.String(length=64), nullable=False),
        sa.Column("shard_group_key", sa.String(length=250), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("report", sa.LargeBinary(), nullable=True),
        sa.Column("result", sa.LargeBinary(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_duration_jobs_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_duration_jobs")),
        sa.UniqueConstraint(
            "tenant_id",
            "commit_id",
            "shard_group_key",
            "project",
            name=op.f("uq_duration_jobs_tenant_id"),
        ),
    )
    op.create_table(
        "webhooks",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("events", sa.String(length=300), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_webhooks_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhooks")),
    )
    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_webhooks_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "daily_rollups",
        sa.Column("repo_id", sa.String(length=36), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("test_runs", sa.Integer(), nullable=False),
        sa.Column("failed_test_runs", sa.Integer(), nullable=False),
        sa.Column("flaky_test_runs", sa.Integer(), nullable=False),
        sa.Column("flaky_tests", sa.Integer(), nullable=False),
        sa.Column("flake_score_sum", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["repo_id"],
            ["repositories.id"],
            name=op.f("fk_daily_rollups_repo_id_repositories"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("repo_id", "day", name=op.f("pk_daily_rollups")),
    )
    op.create_table(
        "shard_plans",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=36), nullable=False),
        sa.Column("repo_id", sa.String(length=36), nullable=True),
        sa.Column("plan", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["repo_id"],
            ["repositories.id"],
            name=op.f("fk_shard_plans_repo_id_repositories"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_shard_plans_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shard_plans")),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("webhook_id", sa.String(length=36), nullable=False),
        sa.Column("event", sa.String(length=50), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("attempt_log", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["webhook_id"],
            ["webhooks.id"],
            name=op.f("fk_webhook_deliveries_webhook_id_webhooks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_webhook_deliveries_due", ["status", "next_attempt_at"], unique=False
        )
        batch_op.create_index(
            "ix_webhook_deliveries_webhook", ["webhook_id", "created_at"], unique=False
        )

    op.create_table(
        "quarantines",
        sa.Column("test_id", sa.String(length=32), nullable=False),
        sa.Column("repo_id", sa.String(length=36), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_by", sa.String(length=36), nullable=True),
        sa.ForeignKeyConstraint(
            ["repo_id"],
            ["repositories.id"],
            name=op.f("fk_quarantines_repo_id_repositories"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["test_id"],
            ["test_cases.id"],
            name=op.f("fk_quarantines_test_id_test_cases"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("test_id", name=op.f("pk_quarantines")),
    )
    op.create_table(
        "test_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("repo_id", sa.String(length=36), nullable=False),
        sa.Column("test_id", sa.String(length=32), nullable=False),
        sa.Column("environment", sa.String(length=200), nullable=False),
        sa.Column("from_state", sa.String(length=12), nullable=False),
        sa.Column("to_state", sa.String(length=12), nullable=False),
        sa.Column("at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("run_ids", sa.Text(), nullable=False),
        sa.Column("commit_sha", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["repo_id"],
            ["repositories.id"],
            name=op.f("fk_test_events_repo_id_repositories"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["test_id"],
            ["test_cases.id"],
            name=op.f("fk_test_events_test_id_test_cases"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_test_events")),
    )
    with op.batch_alter_table("test_events", schema=None) as batch_op:
        batch_op.create_index("ix_test_events_repo_at", ["repo_id", "at"], unique=False)
        batch_op.create_index("ix_test_events_test_at", ["test_id", "at"], unique=False)

    op.create_table(
        "test_states",
        sa.Column("test_id", sa.String(length=32), nullable=False),
        sa.Column("environment", sa.String(length=200), nullable=False),
        sa.Column("repo_id", sa.String(length=36), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("since", UTCDateTime(timezone=True), nullable=True),
        sa.Column("flake_score", sa.Float(), nullable=False),
        sa.Column("flake_score_low", sa.Float(), nullable=False),
        sa.Column("flake_score_high", sa.Float(), nullable=False),
        sa.Column("pass_rate", sa.Float(), nullable=True),
        sa.Column("total_runs", sa.Integer(), nullable=False),
        sa.Column("failed_runs", sa.Integer(), nullable=False),
        sa.Column("flaky_runs", sa.Integer(), nullable=False),
        sa.Column("first_flaky_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_flaky_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_run_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_run_id", sa.String(length=36), nullable=False),
        sa.Column("check_name", sa.String(length=300), nullable=True),
        sa.Column("durations", sa.Text(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["repo_id"],
            ["repositories.id"],
            name=op.f("fk_test_states_repo_id_repositories"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["test_id"],
            ["test_cases.id"],
            name=op.f("fk_test_states_test_id_test_cases"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("test_id", "environment", name=op.f("pk_test_states")),
    )


def downgrade() -> None:
    with op.batch_alter_table("test_cases", schema=None) as batch_op:
        for index in (
            "ix_test_cases_repo_flaky",
            "ix_test_cases_repo_score",
            "ix_test_cases_repo_state",
        ):
            batch_op.drop_index(index)
        for column in (
            "state",
            "flake_score",
            "flake_score_low",
            "flake_score_high",
            "total_runs",
            "failed_runs",
            "flaky_runs",
            "first_flaky_at",
            "last_flaky_at",
            "last_run_id",
            "recent_flaky",
        ):
            batch_op.drop_column(column)
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("flaky_detected")

    op.drop_table("test_states")
    with op.batch_alter_table("test_events", schema=None) as batch_op:
        batch_op.drop_index("ix_test_events_test_at")
        batch_op.drop_index("ix_test_events_repo_at")

    op.drop_table("test_events")
    op.drop_table("quarantines")
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_deliveries_webhook")
        batch_op.drop_index("ix_webhook_deliveries_due")

    op.drop_table("webhook_deliveries")
    op.drop_table("shard_plans")
    op.drop_table("daily_rollups")
    with op.batch_alter_table("webhooks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhooks_tenant_id"))

    op.drop_table("webhooks")
    op.drop_table("duration_jobs")
    op.drop_table("server_secrets")
