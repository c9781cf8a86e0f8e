"""An index of the finished jobs still owed a progress request.

Before a pass reads its list it reads what the database knows of the source's jobs to ask
about (``jobsync.storage.samples.load_known_jobs``): the open ones, through the partial index
of revision 0009, and the finished ones last asked about before they finished, each asked once
more. Those had no index, so the read went through every job the source ever had, and each
pass of a long-lived source cost more than the one before. This partial index holds only them:
a job enters it when it finishes with older details and leaves when a pass asks about it.

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

OWED_JOBS = "details_at < finished_at"


def upgrade() -> None:
    op.create_index(
        "ix_import_job_records_owed",
        "import_job_records",
        ["cluster_id", "job_id"],
        sqlite_where=sa.text(OWED_JOBS),
        postgresql_where=sa.text(OWED_JOBS),
    )


def downgrade() -> None:
    op.drop_index("ix_import_job_records_owed", table_name="import_job_records")
