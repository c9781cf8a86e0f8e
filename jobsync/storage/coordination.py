"""What processes sharing one database agree on through it: who syncs a source in a period,
and when the next request with a shared API key may go.

- **Claims.** A daemon claims a source for a schedule period before syncing it: one row per
  source in ``sync_claims``, moved forward to the new period by one atomic
  ``INSERT ... ON CONFLICT DO UPDATE ... WHERE period_start < new`` that only one process can
  win. A replica that dies holds no claim on later periods, so the others take its sources
  from the next period on.
- **Request slots.** Each (API key fingerprint, endpoint) has one row in ``rate_slots``, on
  the database server's clock. A request first reserves a slot (``next_at`` moves one interval
  on): the processes' requests queue in order instead of all asking at once. At its slot it
  takes the right to go (``send_at``: a generic cell rate algorithm without burst, one
  conditional ``UPDATE``): if a late wake-up put it too close behind the request before, it
  waits the difference. So requests that share a key are spaced by at least one interval
  when they go, whoever sends them. Only a fingerprint of the key is stored.

Every public function here is a storage boundary: the database's errors leave as StorageError.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine

from jobsync.storage.backends import backend_for
from jobsync.storage.boundary import boundary
from jobsync.storage.schema import sync_claims
from jobsync.storage.store import process_identity

__all__ = ["claim_period", "replicas_possible", "reserve_slot", "take_send"]


def replicas_possible(engine: Engine) -> bool:
    """Whether daemons on several hosts may share this database (PostgreSQL, not SQLite)."""
    return backend_for(engine).shared_by_replicas


@boundary
def claim_period(engine: Engine, cluster_id: str, period_start: datetime, now: datetime) -> bool:
    """Claim the source for the period that began at ``period_start``; False if another
    process (or an earlier pass of this one) already claimed that period or a later one."""
    host, pid = process_identity()
    backend = backend_for(engine)
    stmt = backend.dialect_insert(sync_claims).values(
        cluster_id=cluster_id, period_start=period_start, claimed_at=now, host=host, pid=pid
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[sync_claims.c.cluster_id],
        set_={
            "period_start": stmt.excluded.period_start,
            "claimed_at": stmt.excluded.claimed_at,
            "host": stmt.excluded.host,
            "pid": stmt.excluded.pid,
        },
        where=sync_claims.c.period_start < stmt.excluded.period_start,
    ).returning(sync_claims.c.cluster_id)
    with engine.begin() as conn:
        return conn.execute(stmt).first() is not None


@boundary
def take_send(engine: Engine, fingerprint: str, endpoint: str, interval: float) -> float:
    """At the moment of sending: 0.0 if a request may go now (and the next may go ``interval``
    seconds later), else the seconds to wait before asking again. Counted when requests go,
    not when their slots were reserved, so a thread that wakes up late never bunches up
    requests: any ``1 / interval`` requests span at least a second."""
    with engine.begin() as conn:
        return max(0.0, backend_for(conn).take_send(conn, fingerprint, endpoint, interval))


@boundary
def reserve_slot(engine: Engine, fingerprint: str, endpoint: str, interval: float) -> float:
    """Reserve the next request slot of ``(fingerprint, endpoint)``, ``interval`` seconds
    after the one before; return the seconds to wait for it (0 or more)."""
    with engine.begin() as conn:
        return max(0.0, backend_for(conn).reserve_slot(conn, fingerprint, endpoint, interval))
