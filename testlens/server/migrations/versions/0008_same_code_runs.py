"""proof across reruns from the runs of a commit: runs.outage and a (repo_id, tree_sha) index;
runs.recovered_reason

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

Detection no longer keeps the recent commits of every test in its state: a failure and a pass
on the same code are found among the earlier runs of that commit or git tree, by index, only
for the tests that need it. ``runs.outage`` marks runs that failed too much of their tests to
count as evidence (they are left out of that lookup); runs stored before this revision are
taken as no outage. Commits already had an index; trees get one. ``runs.recovered_reason``
holds the first XML error of a report that was read by the recovering parser (not
well-formed), so whoever looks at the run knows part of it was read by guesswork.
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
    op.add_column("runs", sa.Column("recovered_reason", sa.Text(), nullable=True))
    op.create_index("ix_runs_repo_tree", "runs", ["repo_id", "tree_sha"])


def downgrade() -> None:
    op.drop_index("ix_runs_repo_tree", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("recovered_reason")
        batch.drop_column("outage")
