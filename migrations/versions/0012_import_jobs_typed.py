"""A declared type for ``import_jobs.last_seen_at`` on SQLite.

SQLite declares a type for a view column only where the column is a plain column, and
``last_seen_at`` chooses between two (the source's latest snapshot while the job is listed, the
job's own last sighting otherwise): SQLAlchemy reflected it with no type, and pandas read it as
text. The reporting views solve this with a first ``UNION ALL`` arm of no rows (revision 0009),
but a compound view is not flattened into a query that joins it: SQLite then materializes every
job before the join, which doubled the cost of joining the history to ``import_jobs`` at
1,000,000 jobs. Here the choice is wrapped in a scalar subquery instead, ``(SELECT <choice>
UNION ALL SELECT r.last_seen_at WHERE 0)``: SQLite takes the type of a scalar subquery from its
last arm, which names the table's column and returns no row. The view stays a plain join, and a
query that does not read ``last_seen_at`` never evaluates it.

PostgreSQL types every expression itself: its view is unchanged.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHOICE = """CASE WHEN r.listed THEN COALESCE(s.last_snapshot_at, r.last_seen_at)
                 ELSE r.last_seen_at END"""
TYPED_CHOICE = f"""(SELECT {CHOICE}
             UNION ALL SELECT r.last_seen_at WHERE 0)"""


def _create_view(last_seen_at: str) -> None:
    op.execute(
        f"""
        CREATE VIEW import_jobs AS
        SELECT
            r.cluster_id,
            r.job_id,
            r.collection_name,
            r.state,
            r.raw_state,
            r.progress,
            r.reason,
            r.first_seen_at,
            r.state_since,
            {last_seen_at} AS last_seen_at,
            r.finished_at,
            r.vanished_at,
            r.total_rows,
            r.imported_rows,
            r.file_size,
            r.complete_time,
            r.details_at
        FROM import_job_records r
        LEFT JOIN sync_sources s ON s.cluster_id = r.cluster_id
        """
    )


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute("DROP VIEW import_jobs")
    _create_view(TYPED_CHOICE)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute("DROP VIEW import_jobs")
    _create_view(CHOICE)
