"""An index of the jobs a source still lists (not vanished).

Before a pass reads its list it reads what the database knows of the source's jobs to ask
about (``jobsync.storage.samples.load_known_jobs``), and the pass itself reads every job the
source still lists to compare with the snapshot (``jobsync.storage.scan``). Both went through
the primary key, that is through every job the source ever had, vanished ones included, so
each pass of a long-lived source cost more than the one before. This partial index holds only
the jobs not vanished: about what the API lists, however long the history.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# ``listed`` is never NULL: the second term only keeps this index out of the plans that want
# the open jobs (their condition implies the first term too, and SQLite, without statistics,
# would then read every job present instead of the few open ones).
PRESENT_JOBS = "vanished_at IS NULL AND listed IS NOT NULL"


def upgrade() -> None:
    op.create_index(
        "ix_import_job_records_present",
        "import_job_records",
        ["cluster_id", "job_id"],
        sqlite_where=sa.text(PRESENT_JOBS),
        postgresql_where=sa.text(PRESENT_JOBS),
    )


def downgrade() -> None:
    op.drop_index("ix_import_job_records_present", table_name="import_job_records")
