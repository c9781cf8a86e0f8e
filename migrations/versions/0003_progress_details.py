"""Progress details: the progress endpoint's figures on each job, and samples over time.

Adds ``total_rows``, ``imported_rows``, ``file_size``, ``complete_time`` (the API's own
``completeTime``, in UTC) and ``details_at`` to ``import_job_records`` and the ``import_jobs``
view; a new append-only table ``import_job_progress`` with one row per fetched sample that
differed from the job's previous figures; and two counters on ``sync_runs``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)

_VIEW_COLUMNS = """
            r.cluster_id,
            r.job_id,
            r.collection_name,
            r.state,
            r.raw_state,
            r.progress,
            r.reason,
            r.first_seen_at,
            r.state_since,
            CASE WHEN r.listed THEN COALESCE(s.last_snapshot_at, r.last_seen_at)
                 ELSE r.last_seen_at END AS last_seen_at,
            r.finished_at,
            r.vanished_at"""

_VIEW_DETAILS = """,
            r.total_rows,
            r.imported_rows,
            r.file_size,
            r.complete_time,
            r.details_at"""


def _create_view(columns: str) -> None:
    op.execute(
        f"""
        CREATE VIEW import_jobs AS
        SELECT{columns}
        FROM import_job_records r
        LEFT JOIN sync_sources s ON s.cluster_id = r.cluster_id
        """
    )


def upgrade() -> None:
    # Plain ADD COLUMN (no batch copy): SQLite supports it for nullable columns, and copying the
    # table would break the view that reads it.
    op.execute("DROP VIEW import_jobs")
    op.add_column("import_job_records", sa.Column("total_rows", sa.BigInteger))
    op.add_column("import_job_records", sa.Column("imported_rows", sa.BigInteger))
    op.add_column("import_job_records", sa.Column("file_size", sa.BigInteger))
    op.add_column("import_job_records", sa.Column("complete_time", TS))
    op.add_column("import_job_records", sa.Column("details_at", TS))
    op.add_column(
        "sync_runs",
        sa.Column("details_requested", sa.Integer, nullable=False, server_default="0"),
    )
    op.add_column(
        "sync_runs",
        sa.Column("details_failed", sa.Integer, nullable=False, server_default="0"),
    )
    op.create_table(
        "import_job_progress",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("cluster_id", sa.Text, nullable=False),
        sa.Column("job_id", sa.Text, nullable=False),
        sa.Column("sampled_at", TS, nullable=False),
        sa.Column("sync_run_id", ID, sa.ForeignKey("sync_runs.id"), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("raw_state", sa.Text),
        sa.Column("progress", sa.Integer),
        sa.Column("imported_rows", sa.BigInteger),
        sa.Column("total_rows", sa.BigInteger),
        sa.Column("file_size", sa.BigInteger),
        sa.Column("complete_time", TS),
        sa.Column("reason", sa.Text),
    )
    op.create_index(
        "ix_import_job_progress_job", "import_job_progress", ["cluster_id", "job_id", "sampled_at"]
    )
    _create_view(_VIEW_COLUMNS + _VIEW_DETAILS)


def downgrade() -> None:
    op.execute("DROP VIEW import_jobs")
    op.drop_index("ix_import_job_progress_job", table_name="import_job_progress")
    op.drop_table("import_job_progress")
    with op.batch_alter_table("sync_runs") as batch:
        batch.drop_column("details_failed")
        batch.drop_column("details_requested")
    with op.batch_alter_table("import_job_records") as batch:
        for name in ("details_at", "complete_time", "file_size", "imported_rows", "total_rows"):
            batch.drop_column(name)
    _create_view(_VIEW_COLUMNS)
