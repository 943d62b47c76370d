"""failure signatures, root causes, the GitHub App's installations, deliveries and CI jobs,
fix attempts; live events numbered per tenant in commit order

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(
            sa.Column("event_seq", sa.BigInteger(), server_default="0", nullable=False)
        )
    op.add_column("run_events", sa.Column("tenant_seq", sa.BigInteger(), nullable=True))
    # Events logged before: numbered in id order, the best order known for them.
    op.execute(
        "UPDATE run_events SET tenant_seq = numbered.position FROM (SELECT id, row_number()"
        " OVER (PARTITION BY tenant_id ORDER BY id) AS position FROM run_events) AS numbered"
        " WHERE run_events.id = numbered.id"
    )
    op.execute(
        "UPDATE tenants SET event_seq = (SELECT count(*) FROM run_events"
        " WHERE run_events.tenant_id = tenants.id)"
    )
    op.drop_index("ix_run_events_tenant", table_name="run_events")
    op.create_index("ix_run_events_tenant_seq", "run_events", ["tenant_id", "tenant_seq"])
    with op.batch_alter_table("repositories") as batch:
        batch.add_column(sa.Column("github_id", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("installation_id", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("installed_at", _TIME, nullable=True))
        batch.add_column(sa.Column("default_branch", sa.String(300), nullable=True))
    with op.batch_alter_table("test_cases") as batch:
        batch.add_column(sa.Column("root_cause_category", sa.String(40), nullable=True))
        batch.add_column(sa.Column("root_cause_confidence", sa.Float(), nullable=True))
        batch.add_column(sa.Column("root_cause_explanation", sa.Text(), nullable=True))
        batch.add_column(sa.Column("ai_model_used", sa.String(200), nullable=True))
        batch.add_column(sa.Column("last_analyzed_at", _TIME, nullable=True))
        batch.add_column(sa.Column("analysis_due_at", _TIME, nullable=True))
        batch.create_index("ix_test_cases_analysis_due", ["analysis_due_at"])
    op.add_column("test_results", sa.Column("signature", sa.String(32), nullable=True))
    op.create_table(
        "failure_signatures",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("repo_id", sa.String(36), nullable=False),
        sa.Column("test_id", sa.String(32), nullable=False),
        sa.Column("key", sa.String(32), nullable=False),
        sa.Column("error_type", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("frames", sa.Text(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("first_seen_at", _TIME, nullable=False),
        sa.Column("last_seen_at", _TIME, nullable=False),
        sa.Column("last_run_id", sa.String(36), nullable=True),
        sa.ForeignKeyConstraint(
            ["repo_id"],
            ["repositories.id"],
            name="fk_failure_signatures_repo_id_repositories",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["test_id"],
            ["test_cases.id"],
            name="fk_failure_signatures_test_id_test_cases",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_failure_signatures"),
        sa.UniqueConstraint("test_id", "key", name="uq_failure_signatures_test_key"),
    )
    op.create_index("ix_failure_signatures_repo_key", "failure_signatures", ["repo_id", "key"])
    op.create_table(
        "github_installations",
        sa.Column("id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("tenant_id", sa.String(36), nullable=True),
        sa.Column("account_login", sa.String(300), nullable=False),
        sa.Column("account_type", sa.String(40), nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("removed_at", _TIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name="fk_github_installations_tenant_id_tenants",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_github_installations"),
    )
    op.create_index("ix_github_installations_tenant_id", "github_installations", ["tenant_id"])
    op.create_table(
        "github_deliveries",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("event", sa.String(60), nullable=False),
        sa.Column("action", sa.String(60), nullable=True),
        sa.Column("installation_id", sa.BigInteger(), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("received_at", _TIME, nullable=False),
        sa.Column("processed_at", _TIME, nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_github_deliveries"),
    )
    op.create_index(
        "ix_github_deliveries_due", "github_deliveries", ["processed_at", "received_at"]
    )
    op.create_table(
        "ci_jobs",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("repo_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("external_id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("workflow_run_id", sa.String(100), nullable=True),
        sa.Column("run_attempt", sa.Integer(), nullable=False),
        sa.Column("head_sha", sa.String(64), nullable=True),
        sa.Column("head_branch", sa.String(300), nullable=True),
        sa.Column("conclusion", sa.String(40), nullable=True),
        sa.Column("started_at", _TIME, nullable=True),
        sa.Column("completed_at", _TIME, nullable=True),
        sa.ForeignKeyConstraint(
            ["repo_id"],
            ["repositories.id"],
            name="fk_ci_jobs_repo_id_repositories",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_ci_jobs"),
        sa.UniqueConstraint("repo_id", "kind", "external_id", "run_attempt", name="uq_ci_jobs_job"),
    )
    op.create_index("ix_ci_jobs_repo_completed", "ci_jobs", ["repo_id", "completed_at"])
    op.create_table(
        "fix_attempts",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("tenant_id", sa.String(36), nullable=False),
        sa.Column("repo_id", sa.String(36), nullable=False),
        sa.Column("test_id", sa.String(32), nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("pr_url", sa.Text(), nullable=True),
        sa.Column("pr_number", sa.Integer(), nullable=True),
        sa.Column("branch_name", sa.String(300), nullable=True),
        sa.Column("root_cause_category", sa.String(40), nullable=True),
        sa.Column("ai_explanation", sa.Text(), nullable=True),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("merged", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("merged_at", _TIME, nullable=True),
        sa.Column("merge_commit_sha", sa.String(64), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("model_used", sa.String(200), nullable=True),
        sa.Column("files_changed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("lines_added", sa.Integer(), server_default="0", nullable=False),
        sa.Column("lines_removed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("verdict", sa.String(12), server_default="pending", nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name="fk_fix_attempts_tenant_id_tenants",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["repo_id"],
            ["repositories.id"],
            name="fk_fix_attempts_repo_id_repositories",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["test_id"],
            ["test_cases.id"],
            name="fk_fix_attempts_test_id_test_cases",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_fix_attempts"),
    )
    op.create_index("ix_fix_attempts_tenant_created", "fix_attempts", ["tenant_id", "created_at"])
    op.create_index("ix_fix_attempts_repo_pr", "fix_attempts", ["repo_id", "pr_number"])
    op.create_index("ix_fix_attempts_test", "fix_attempts", ["test_id"])


def downgrade() -> None:
    op.drop_index("ix_run_events_tenant_seq", table_name="run_events")
    op.create_index("ix_run_events_tenant", "run_events", ["tenant_id", "id"])
    with op.batch_alter_table("run_events") as batch:
        batch.drop_column("tenant_seq")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("event_seq")
    op.drop_table("fix_attempts")
    op.drop_table("ci_jobs")
    op.drop_table("github_deliveries")
    op.drop_table("github_installations")
    op.drop_table("failure_signatures")
    op.drop_column("test_results", "signature")
    with op.batch_alter_table("test_cases") as batch:
        batch.drop_index("ix_test_cases_analysis_due")
        for column in (
            "analysis_due_at",
            "last_analyzed_at",
            "ai_model_used",
            "root_cause_explanation",
            "root_cause_confidence",
            "root_cause_category",
        ):
            batch.drop_column(column)
    with op.batch_alter_table("repositories") as batch:
        for column in ("default_branch", "installed_at", "installation_id", "github_id"):
            batch.drop_column(column)
