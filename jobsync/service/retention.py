"""Retention: prune the run metadata older than the configured window (``retention``).

The daemon calls :func:`apply_retention` on a schedule of its own, beside its passes;
``jobsync db prune`` calls :func:`prune_database` once. What is kept and how it is rolled up:
``jobsync.storage.prune``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine

from jobsync.config import Settings
from jobsync.domain.clock import Clock, utcnow
from jobsync.errors import JobsyncError
from jobsync.observability.logs import fields
from jobsync.storage.prune import DEFAULT_BATCH_SIZE, PruneResult, prune

__all__ = ["RETENTION_EVERY", "apply_retention", "prune_database", "schedule_retention"]

log = logging.getLogger(__name__)

# How often the daemon prunes: each time removes about this much metadata, in a few batches.
RETENTION_EVERY = 3600.0  # seconds


def prune_database(
    engine: Engine,
    keep: float,
    *,
    clock: Clock = utcnow,
    batch_size: int | None = None,
    dry_run: bool = False,
    stop: Callable[[], bool] | None = None,
) -> PruneResult:
    """Prune what is older than ``keep`` seconds; see ``jobsync.storage.prune``.

    ``batch_size`` None is the storage's default.
    """
    return prune(
        engine,
        timedelta(seconds=keep),
        now=clock(),
        batch_size=DEFAULT_BATCH_SIZE if batch_size is None else batch_size,
        dry_run=dry_run,
        stop=stop,
    )


def apply_retention(
    engine: Engine,
    settings: Settings,
    *,
    clock: Clock = utcnow,
    stop: Callable[[], bool] | None = None,
) -> PruneResult | None:
    """Prune by ``settings.retention`` (None: keep everything, do nothing) and log one line
    saying what was removed."""
    if settings.retention is None:
        return None
    result = prune_database(engine, settings.retention, clock=clock, stop=stop)
    log.info(
        "retention: removed %d pass(es) older than %s (rolled up into %d day row(s)) and "
        "thinned %d progress sample(s)",
        result.runs,
        result.cutoff.isoformat(timespec="seconds"),
        result.days,
        result.samples,
        extra=fields(
            event="pruned",
            runs=result.runs,
            samples=result.samples,
            days=result.days,
            cutoff=result.cutoff.isoformat(),
        ),
    )
    return result


def schedule_retention(
    scheduler: BaseScheduler, engine: Engine, settings: Settings, stop: Callable[[], bool]
) -> None:
    """The daemon's pruning: at start-up and every RETENTION_EVERY, in a worker of its own, so
    that its batches (short transactions beside the passes) never hold a pass up. Nothing with
    ``retention`` never."""
    if settings.retention is None:
        return

    def prune_now() -> None:
        try:
            apply_retention(engine, settings, stop=stop)
        except JobsyncError as exc:
            log.error(
                "retention failed: %s (tried again later)",
                exc,
                extra=fields(event="retention_error", error=str(exc)),
            )

    scheduler.add_executor(ThreadPoolExecutor(max_workers=1), "retention")
    scheduler.add_job(
        prune_now,
        trigger=IntervalTrigger(seconds=RETENTION_EVERY, timezone=UTC),
        id="retention",
        name="retention",
        executor="retention",
        max_instances=1,
        coalesce=True,
        misfire_grace_time=math.ceil(RETENTION_EVERY),
        next_run_time=datetime.now(UTC),
    )
