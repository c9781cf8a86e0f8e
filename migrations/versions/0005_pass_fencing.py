"""Fencing and honest snapshots: what a pass built on, and why its snapshot was incomplete.

Adds two columns to ``sync_runs``:

- ``base_run_id``: the source's latest applied pass (``sync_sources.last_run_id``) when this
  pass began. A pass may write only while that is still the latest: if another pass of the
  source was applied in between (a lost lock), this one is recorded ``superseded`` and writes
  nothing. No foreign key: it is a number to compare, and must not keep old runs alive.
- ``incomplete_reason``: why a pass's snapshot could not be proven complete; NULL when it was.

A pass that may not write is recorded ``failed``, its ``error`` starting with "superseded".

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # Plain ADD COLUMN on both backends (nullable, no default): SQLite needs no table copy,
    # so the reporting views that read sync_runs' neighbours need not be dropped.
    op.add_column("sync_runs", sa.Column("base_run_id", ID))
    op.add_column("sync_runs", sa.Column("incomplete_reason", sa.Text))


def downgrade() -> None:
    # Not a batch copy: SQLite would drop sync_runs, which other tables reference. Plain
    # DROP COLUMN needs SQLite 3.35 or newer.
    op.execute("ALTER TABLE sync_runs DROP COLUMN incomplete_reason")
    op.execute("ALTER TABLE sync_runs DROP COLUMN base_run_id")
