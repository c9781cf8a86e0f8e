"""Which replica syncs a source in a period: the claim, made for the period the pass was due in.

A daemon that may share its database with replicas (PostgreSQL) claims a source's period before
syncing it (``jobsync.storage.coordination``); the first claim of a period wins. The period is
the one the run was *due* in, as the scheduler submitted it (:class:`DueTimes`), not the one
that holds the moment a worker got to it: a pass that waited for a free worker, or for the
key's shared request budget, past the end of its period still claims its own period. Claimed by
the clock instead, it took the next period from its own next run, and left its own period
without a pass.

The replica that claimed a period syncs the source in it even if the pass of the period before,
another replica's that ran late, still holds the source's lock: it waits for the lock until
its period ends (:func:`when_free`). Skipping then left the period without a pass, since no
other replica may claim it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from apscheduler.executors.pool import ThreadPoolExecutor
from sqlalchemy import Engine

from jobsync.config import Source
from jobsync.domain.clock import Clock
from jobsync.errors import LockedError, StorageError
from jobsync.observability.logs import fields
from jobsync.observability.metrics import Health
from jobsync.service.metrics import DaemonMetrics
from jobsync.service.schedule import Schedule
from jobsync.storage.coordination import claim_period

__all__ = ["LOCK_POLL", "LOCK_POLL_MAX", "DueTimes", "PeriodClaims", "when_free"]

log = logging.getLogger(__name__)

# Seconds between attempts to take a claimed source's lock from a pass still running: doubling
# from LOCK_POLL up to LOCK_POLL_MAX (each attempt opens a database session of its own).
LOCK_POLL = 0.2
LOCK_POLL_MAX = 5.0

T = TypeVar("T")


class DueTimes(ThreadPoolExecutor):  # type: ignore[misc]  # APScheduler is untyped
    """APScheduler's thread pool, remembering when each job's run in flight was due.

    Recorded before the run is handed to a worker, so the run always finds its own: the
    scheduler's submission event comes only after the hand-over, when a free worker may
    already have started the run. With ``max_instances=1`` a job has at most one run in flight.
    """

    def __init__(self, max_workers: int) -> None:
        super().__init__(max_workers=max_workers)
        self._due: dict[str, tuple[datetime, datetime]] = {}
        self._due_lock = threading.Lock()

    def _do_submit_job(self, job: Any, run_times: Sequence[datetime]) -> None:
        if run_times:
            with self._due_lock:
                self._due[str(job.id)] = (min(run_times), max(run_times))
        super()._do_submit_job(job, run_times)

    def due(self, job_id: str) -> tuple[datetime, datetime] | None:
        """The earliest and the latest scheduled time the job's current run covers."""
        with self._due_lock:
            return self._due.get(job_id)


class PeriodClaims:
    """Claims sources' periods for one daemon; logs and counts what it cannot claim."""

    def __init__(
        self,
        engine: Engine,
        schedules: dict[str, Schedule],
        metrics: DaemonMetrics,
        health: Health,
        clock: Clock,
    ) -> None:
        self._engine = engine
        self._schedules = schedules
        self._metrics = metrics
        self._health = health
        self._clock = clock

    def claim(self, source: Source, due: datetime | None) -> datetime | None:
        """When the period ``due`` falls in (None: the current one) ends, if this replica
        syncs the source in it; None if another has already."""
        now = self._clock()
        schedule = self._schedules[source.key]
        period = schedule.period_start(now if due is None else due)
        try:
            claimed = claim_period(self._engine, source.key, period, now)
        except StorageError as exc:
            log.error(
                "%s: cannot claim this period: %s",
                source.name,
                exc,
                extra=fields(event="pass_error", source=source.name, error=str(exc)),
            )
            self._metrics.record_error("StorageError", source.name)
            return None
        if not claimed:
            log.debug("%s: another replica has this period's pass", source.name)
            # Synced this period all the same: by another replica.
            self._health.record_success(source.name)
            return None
        return schedule.next_start(period) or period


def when_free(
    attempt: Callable[[], T],
    until: datetime | None,
    clock: Callable[[], datetime],
    cancel: threading.Event,
) -> T:
    """``attempt()``; while it raises LockedError, again after :data:`LOCK_POLL` seconds, then
    twice as long each time up to :data:`LOCK_POLL_MAX`, until ``until`` (None: no second
    attempt) or a stop; then the LockedError stands."""
    pause = LOCK_POLL
    while True:
        try:
            return attempt()
        except LockedError:
            if until is None:
                raise
            left = (until - clock()).total_seconds()
            if left <= 0 or cancel.wait(min(pause, left)):
                raise
            pause = min(pause * 2, LOCK_POLL_MAX)
