"""Replicas: which process ran a pass, per-source period claims, and a shared request budget.

- ``sync_runs.host`` and ``sync_runs.pid``: the process that ran the pass (NULL for older runs).
- ``sync_claims``: one row per source, the latest schedule period a daemon claimed for it, so
  that N daemons sharing a database sync each source once per period. One row per source,
  overwritten each period: it never grows.
- ``rate_slots``: one row per (API key fingerprint, endpoint): the next request slot to hand
  out (``next_at``) and the earliest moment the next request may actually go (``send_at``),
  so that processes sharing a key share its rate limit. A fingerprint, never the key.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Plain ADD COLUMN (no batch copy): nullable columns, and other tables reference sync_runs.
    op.add_column("sync_runs", sa.Column("host", sa.Text))
    op.add_column("sync_runs", sa.Column("pid", sa.Integer))
    op.create_table(
        "sync_claims",
        sa.Column("cluster_id", sa.Text, primary_key=True),
        sa.Column("period_start", TS, nullable=False),
        sa.Column("claimed_at", TS, nullable=False),
        sa.Column("host", sa.Text),
        sa.Column("pid", sa.Integer),
    )
    op.create_table(
        "rate_slots",
        sa.Column("key_fingerprint", sa.String(64), primary_key=True),
        sa.Column("endpoint", sa.Text, primary_key=True),
        sa.Column("next_at", TS, nullable=False),
        sa.Column("send_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("rate_slots")
    op.drop_table("sync_claims")
    # Not a batch copy: SQLite would drop sync_runs, which other tables reference. Plain
    # DROP COLUMN needs SQLite 3.35 or newer.
    op.execute("ALTER TABLE sync_runs DROP COLUMN pid")
    op.execute("ALTER TABLE sync_runs DROP COLUMN host")
