"""proof across reruns from the runs of a commit: runs.outage and a (repo_id, tree_sha) index

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

Detection no longer keeps the recent commits of every test in its state: a failure and a pass
on the same code are found among the earlier runs of that commit or git tree, by index, only
for the tests that need it. ``runs.outage`` marks runs that failed too much of their tests to
count as evidence (they are left out of that lookup); runs stored before this revision are
taken as no outage. Commits already had an index; trees get one.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ADD COLUMN with a constant default: no table is rebuilt on either backend.
    op.add_column(
        "runs", sa.Column("outage", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.create_index("ix_runs_repo_tree", "runs", ["repo_id", "tree_sha"])


def downgrade() -> None:
    op.drop_index("ix_runs_repo_tree", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("outage")
