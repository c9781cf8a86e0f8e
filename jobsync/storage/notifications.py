"""The database side of notifications: what is due, what was sent, and the reads that decide.

Events (``jobsync.domain.notifications``) are recorded as due in the transaction that decides
them, which is the pass's own write transaction for job events and recoveries, and are marked
sent after delivery. ``event_key`` is unique and :func:`record_events` skips the keys already
there, so deciding an event twice records it once. Everything here is SQLAlchemy Core on the
``notifications`` table, the same statements on SQLite and PostgreSQL.

Payloads are the events' facts as JSON, every string run through ``redact`` first: a secret
(the API key, a notification URL) that found its way into a reason never reaches the table.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    case,
    func,
    insert,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from jobsync.domain.notifications import JOB_STUCK, Event, FailedStreak, streak_events
from jobsync.domain.states import TERMINAL_STATES
from jobsync.errors import Cancelled
from jobsync.observability.redact import redact
from jobsync.storage.boundary import boundary
from jobsync.storage.schema import import_job_records, notifications, sync_runs

__all__ = [
    "Due",
    "count_attempt",
    "delivery_status",
    "failed_streak",
    "first_pass",
    "load_due",
    "record_delivery",
    "record_events",
    "record_failure",
    "record_streak",
    "stuck_jobs",
]

_CHUNK = 500
# Failed passes that say nothing about the source: another pass wrote instead (its lock was
# lost), or the process was asked to stop. Neither starts, extends nor breaks a streak.
_NOT_THE_SOURCE = ("superseded", Cancelled().args[0])


@dataclass(frozen=True)
class Due:
    """A recorded event not yet delivered to every target."""

    id: int
    event: Event
    attempts: int
    delivered_to: frozenset[str]


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def record_events(
    conn: Connection, events: Iterable[Event], *, created_at: datetime, run_id: int | None
) -> int:
    """Record the events whose keys are new as due; returns how many were new.

    Call inside the transaction that decided them, under the source's write lock (the pass's
    ``BEGIN IMMEDIATE`` or advisory lock), so that no other writer records the same key between
    the check and the insert.
    """
    wanted = {event.key: event for event in events}
    if not wanted:
        return 0
    keys = list(wanted)
    n = notifications.c
    existing: set[str] = set()
    for chunk in _chunks(keys):
        existing.update(conn.execute(select(n.event_key).where(n.event_key.in_(chunk))).scalars())
    rows = [
        {
            "event_key": key,
            "kind": event.kind,
            "cluster_id": event.source,
            "job_id": event.job_id,
            "sync_run_id": run_id,
            "payload": _payload(event),
            "created_at": created_at,
            "attempts": 0,
        }
        for key, event in wanted.items()
        if key not in existing
    ]
    if rows:
        conn.execute(insert(notifications), rows)
    return len(rows)


def _payload(event: Event) -> str:
    facts = {k: redact(v) if isinstance(v, str) else v for k, v in event.facts.items()}
    return json.dumps(facts, ensure_ascii=False, sort_keys=True)


def first_pass(conn: Connection, cluster_id: str, run_id: int) -> bool:
    """Whether run ``run_id`` is the source's first pass to succeed (its backlog is no news)."""
    r = sync_runs.c
    earlier = conn.execute(
        select(r.id)
        .where(r.cluster_id == cluster_id, r.status == "succeeded", r.id < run_id)
        .limit(1)
    ).first()
    return earlier is None


def stuck_jobs(conn: Connection, cluster_id: str, cutoff: datetime) -> list[Any]:
    """Jobs the latest pass listed in an open state that they entered at or before ``cutoff``,
    and that were not announced stuck since they entered it.

    An announcement for the current stay was recorded after the job entered its state (a pass
    that sees a change is later than any pass before it), one for an earlier stay before: so
    each pass reads only the jobs that are news, however many stay stuck for days.
    """
    j = import_job_records.c
    n = notifications.c
    announced = (
        select(n.id)
        .where(
            n.cluster_id == j.cluster_id,
            n.job_id == j.job_id,
            n.kind == JOB_STUCK,
            n.created_at >= j.state_since,
        )
        .exists()
    )
    return list(
        conn.execute(
            select(
                j.job_id, j.collection_name, j.state, j.raw_state, j.state_since, j.progress
            ).where(
                j.cluster_id == cluster_id,
                j.listed.is_(True),
                j.vanished_at.is_(None),
                j.state.not_in(sorted(TERMINAL_STATES)),
                j.state_since <= cutoff,
                ~announced,
            )
        )
    )


def _counted_failure() -> ColumnElement[bool]:
    r = sync_runs.c
    about_the_source = and_(*(not_(r.error.startswith(p)) for p in _NOT_THE_SOURCE))
    return and_(r.status == "failed", or_(r.error.is_(None), about_the_source))


def failed_streak(
    conn: Connection,
    cluster_id: str,
    *,
    before_run: int | None = None,
    recovered_at: datetime | None = None,
) -> FailedStreak | None:
    """The source's failed passes in a row, or None when there are none.

    Without ``before_run``: the streak since the latest successful pass (still going on).
    With it (the pass ``before_run`` is succeeding): the streak that pass ends, between it and
    the success before it; ``recovered_at`` says when it ended.
    """
    r = sync_runs.c
    ok = select(func.max(r.id)).where(r.cluster_id == cluster_id, r.status == "succeeded")
    if before_run is not None:
        ok = ok.where(r.id < before_run)
    last_ok = conn.execute(ok).scalar()
    bounds = [r.cluster_id == cluster_id, _counted_failure()]
    if last_ok is not None:
        bounds.append(r.id > last_ok)
    if before_run is not None:
        bounds.append(r.id < before_run)
    first_id, last_id, failures = conn.execute(
        select(func.min(r.id), func.max(r.id), func.count()).where(*bounds)
    ).one()
    if not failures:
        return None
    since = conn.execute(select(r.started_at).where(r.id == first_id)).scalar_one()
    error = conn.execute(select(r.error).where(r.id == last_id)).scalar_one()
    return FailedStreak(
        first_run_id=int(first_id),
        failures=int(failures),
        since=since,
        last_error=error,
        recovered_at=recovered_at,
    )


def load_due(conn: Connection, max_attempts: int) -> list[Due]:
    """Events not yet delivered everywhere that have attempts left, oldest first."""
    n = notifications.c
    rows = conn.execute(
        select(
            n.id, n.event_key, n.kind, n.cluster_id, n.job_id, n.payload, n.attempts, n.delivered_to
        )
        .where(n.sent_at.is_(None), n.attempts < max_attempts)
        .order_by(n.id)
    )
    return [
        Due(
            id=int(row.id),
            event=Event(
                key=row.event_key,
                kind=row.kind,
                source=row.cluster_id,
                job_id=row.job_id,
                facts=json.loads(row.payload),
            ),
            attempts=int(row.attempts),
            delivered_to=frozenset((row.delivered_to or "").split()),
        )
        for row in rows
    ]


def count_attempt(conn: Connection, ids: Sequence[int]) -> None:
    """Count one more delivery attempt, before it is made: a crash while sending still counts."""
    n = notifications.c
    for chunk in _chunks(ids):
        conn.execute(update(notifications).where(n.id.in_(chunk)).values(attempts=n.attempts + 1))


def record_delivery(
    conn: Connection, delivered: Sequence[tuple[int, frozenset[str], datetime | None]]
) -> None:
    """For each (id, targets that now have it, sent_at or None while some still lack it)."""
    if not delivered:
        return
    n = notifications.c
    conn.execute(
        update(notifications)
        .where(n.id == bindparam("b_id"))
        .values(delivered_to=bindparam("b_to"), sent_at=bindparam("b_sent")),
        [
            {"b_id": id_, "b_to": " ".join(sorted(targets)), "b_sent": sent_at}
            for id_, targets, sent_at in delivered
        ],
    )


def record_failure(conn: Connection, ids: Sequence[int], error: str) -> None:
    """Keep why the latest attempt failed (redacted, cut to 1000 characters)."""
    n = notifications.c
    text = redact(error)[:1000]
    for chunk in _chunks(ids):
        conn.execute(update(notifications).where(n.id.in_(chunk)).values(last_error=text))


def delivery_status(conn: Connection, max_attempts: int) -> dict[str, dict[str, Any]]:
    """Per source with undelivered events: ``pending`` (attempts left), ``failed`` (given up
    after ``max_attempts``) and ``error`` (the last error of its newest undelivered event)."""
    n = notifications.c
    unsent = n.sent_at.is_(None)
    given_up = n.attempts >= max_attempts
    found: dict[str, dict[str, Any]] = {}
    for row in conn.execute(
        select(
            n.cluster_id,
            func.sum(case((given_up, 0), else_=1)),
            func.sum(case((given_up, 1), else_=0)),
        )
        .where(unsent)
        .group_by(n.cluster_id)
    ):
        found[row[0]] = {"pending": int(row[1] or 0), "failed": int(row[2] or 0), "error": None}
    newest = (
        select(func.max(n.id))
        .where(unsent, n.last_error.is_not(None))
        .group_by(n.cluster_id)
        .scalar_subquery()
    )
    for cluster_id, error in conn.execute(
        select(n.cluster_id, n.last_error).where(n.id.in_(newest))
    ):
        if cluster_id in found:
            found[cluster_id]["error"] = error
    return found


@boundary
def record_streak(engine: Engine, cluster_id: str, failing_passes: int, at: datetime) -> None:
    """Decide ``source_failing`` (or its recovery) from the source's runs, in a transaction of
    its own: a failed pass has no write transaction to decide it in."""
    try:
        with engine.begin() as conn:
            streak = failed_streak(conn, cluster_id)
            events = streak_events(cluster_id, streak, failing_passes)
            record_events(conn, events, created_at=at, run_id=None)
    except IntegrityError:
        pass  # another process recorded the same event first: it is recorded
