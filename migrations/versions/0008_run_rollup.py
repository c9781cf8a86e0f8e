"""Bounded run metadata: a per-source, per-day rollup of pruned passes.

A new table ``sync_run_days``: ``jobsync db prune`` (and the daemon's ``retention``) adds the
passes it deletes from ``sync_runs`` to their source's row of the day they started, in the same
transaction as the delete. Indexes on the columns that point at a run, so that pruning finds
the runs that recorded something without reading whole tables.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT = sa.BigInteger()


def upgrade() -> None:
    op.create_table(
        "sync_run_days",
        sa.Column("cluster_id", sa.Text, primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("passes", sa.Integer, nullable=False, server_default="0"),
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("retries", BIGINT, nullable=False, server_default="0"),
        sa.Column("pages", BIGINT, nullable=False, server_default="0"),
        sa.Column("seconds", sa.Float, nullable=False, server_default="0"),
    )
    op.create_index("ix_import_job_transitions_run", "import_job_transitions", ["sync_run_id"])
    op.create_index("ix_import_job_progress_run", "import_job_progress", ["sync_run_id"])
    op.create_index("ix_notifications_run", "notifications", ["sync_run_id"])


def downgrade() -> None:
    op.drop_index("ix_notifications_run", table_name="notifications")
    op.drop_index("ix_import_job_progress_run", table_name="import_job_progress")
    op.drop_index("ix_import_job_transitions_run", table_name="import_job_transitions")
    op.drop_table("sync_run_days")
