"""Initial tables: sync_runs, sync_sources, import_job_records, import_job_transitions.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "sync_runs",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("cluster_id", sa.Text, nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("complete", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("pages", sa.Integer, nullable=False, server_default="0"),
        sa.Column("records", sa.Integer, nullable=False, server_default="0"),
        sa.Column("distinct_jobs", sa.Integer, nullable=False, server_default="0"),
        sa.Column("duplicates", sa.Integer, nullable=False, server_default="0"),
        sa.Column("invalid_records", sa.Integer, nullable=False, server_default="0"),
        sa.Column("reported_count", sa.BigInteger),
        sa.Column("new_jobs", sa.Integer, nullable=False, server_default="0"),
        sa.Column("changed_jobs", sa.Integer, nullable=False, server_default="0"),
        sa.Column("vanished_jobs", sa.Integer, nullable=False, server_default="0"),
        sa.Column("retries", sa.Integer, nullable=False, server_default="0"),
        sa.Column("rows_written", sa.Integer, nullable=False, server_default="0"),
        sa.Column("snapshot_started_at", TS),
        sa.Column("snapshot_finished_at", TS),
        sa.Column("error", sa.Text),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed', 'abandoned')", name="ck_sync_runs_status"
        ),
    )
    op.create_index("ix_sync_runs_cluster_started", "sync_runs", ["cluster_id", "started_at"])

    op.create_table(
        "sync_sources",
        sa.Column("cluster_id", sa.Text, primary_key=True),
        sa.Column("last_run_id", ID, sa.ForeignKey("sync_runs.id")),
        sa.Column("last_snapshot_started_at", TS),
        sa.Column("last_snapshot_at", TS),
        sa.Column("last_complete_run_id", ID, sa.ForeignKey("sync_runs.id")),
        sa.Column("last_complete_started_at", TS),
    )

    op.create_table(
        "import_job_records",
        sa.Column("cluster_id", sa.Text, primary_key=True),
        sa.Column("job_id", sa.Text, primary_key=True),
        sa.Column("collection_name", sa.Text),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("raw_state", sa.Text),
        sa.Column("progress", sa.Integer),
        sa.Column("reason", sa.Text),
        sa.Column("first_seen_at", TS, nullable=False),
        sa.Column("state_since", TS, nullable=False),
        sa.Column("last_seen_at", TS, nullable=False),
        sa.Column("last_seen_started_at", TS, nullable=False),
        sa.Column("finished_at", TS),
        sa.Column("vanished_at", TS),
        sa.Column("listed", sa.Boolean, nullable=False),
        sa.Column("missed_snapshots", sa.Integer, nullable=False, server_default="0"),
        sa.Column("missing_since", TS),
    )

    op.create_table(
        "import_job_transitions",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("cluster_id", sa.Text, nullable=False),
        sa.Column("job_id", sa.Text, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("from_state", sa.String(16)),
        sa.Column("to_state", sa.String(16)),
        sa.Column("raw_from_state", sa.Text),
        sa.Column("raw_to_state", sa.Text),
        sa.Column("window_start", TS),
        sa.Column("observed_at", TS, nullable=False),
        sa.Column("sync_run_id", ID, sa.ForeignKey("sync_runs.id"), nullable=False),
        sa.Column("reason", sa.Text),
        sa.CheckConstraint(
            "kind IN ('first_seen', 'change', 'vanished', 'reappeared')",
            name="ck_import_job_transitions_kind",
        ),
    )
    op.create_index(
        "ix_import_job_transitions_job", "import_job_transitions", ["cluster_id", "job_id", "id"]
    )


def downgrade() -> None:
    op.drop_table("import_job_transitions")
    op.drop_table("import_job_records")
    op.drop_table("sync_sources")
    op.drop_table("sync_runs")
