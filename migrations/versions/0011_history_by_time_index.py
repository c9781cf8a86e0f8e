"""An index of the history by the time each change was observed.

The reports of a period (``jobsync report summary``, ``failures``, the HTML report's jobs per
day) read the transitions observed in it. They found them through the period's passes, whose
ids they first looked up in ``sync_runs`` by scanning it: a retention window keeps hundreds of
thousands of passes (a year of 10 sources every 5 minutes: 490,000 at its end), and that scan
alone took a quarter of a second on PostgreSQL, three times for the HTML report. With this
index they read the period's transitions directly.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_import_job_transitions_observed", "import_job_transitions", ["observed_at"])


def downgrade() -> None:
    op.drop_index("ix_import_job_transitions_observed", table_name="import_job_transitions")
