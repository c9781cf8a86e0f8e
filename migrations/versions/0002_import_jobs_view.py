"""The import_jobs view: job rows with an exact last_seen_at.

Jobs listed by a source's latest pass take last_seen_at from sync_sources, so a pass does not
have to rewrite every listed job's row just to move a timestamp.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
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
            CASE WHEN r.listed THEN COALESCE(s.last_snapshot_at, r.last_seen_at)
                 ELSE r.last_seen_at END AS last_seen_at,
            r.finished_at,
            r.vanished_at
        FROM import_job_records r
        LEFT JOIN sync_sources s ON s.cluster_id = r.cluster_id
        """
    )


def downgrade() -> None:
    op.execute("DROP VIEW import_jobs")
