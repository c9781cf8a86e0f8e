"""Notifications: one row per event worth telling people, delivered once.

A new table ``notifications``. An event (a job failed, a job stuck, a source failing or
recovered) is recorded as due in the transaction that decides it, delivered after that commits,
and marked sent after delivery; ``event_key`` is unique, so deciding an event again adds
nothing. No foreign keys: a row outlives the runs and jobs it speaks of.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-10
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "notifications",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("event_key", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("cluster_id", sa.Text, nullable=False),
        sa.Column("job_id", sa.Text),
        sa.Column("sync_run_id", ID),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("sent_at", TS),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Column("delivered_to", sa.Text),
    )
    op.create_index("ux_notifications_event_key", "notifications", ["event_key"], unique=True)
    op.create_index("ix_notifications_sent_at", "notifications", ["sent_at"])
    op.create_index("ix_notifications_job", "notifications", ["cluster_id", "job_id"])


def downgrade() -> None:
    op.drop_index("ix_notifications_job", table_name="notifications")
    op.drop_index("ix_notifications_sent_at", table_name="notifications")
    op.drop_index("ux_notifications_event_key", table_name="notifications")
    op.drop_table("notifications")
