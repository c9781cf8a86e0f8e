"""``jobsync daemon``: run :func:`jobsync.service.sync.sync_all` on a schedule until SIGTERM or
SIGINT.

A thin wrapper that owns signals, scheduling and monitoring; what a pass does stays in
``jobsync.service.sync``. The schedule is APScheduler 3's ``BlockingScheduler`` in UTC with a memory
job store (a job store must never be shared between processes: the database's sync lock is what
coordinates them), one job with ``max_instances=1`` so a slow pass is never overlapped by the
next, ``coalesce=True`` so a backlog of missed runs becomes one, a ``misfire_grace_time`` of at
least half the interval (the default of one second silently drops a late wake-up), and a first
pass at start-up.

Stopping: APScheduler 3 installs no signal handlers, so this module does. A handler only sets
two events (signal handlers must not take the scheduler's or the thread pool's locks, which
the interrupted main thread may hold); a helper thread then shuts the scheduler down. The
``cancel`` event ends a pass that is still fetching before its next request (it fails and writes
nothing but its ``sync_runs`` row); a pass already in its write transaction completes. The
daemon waits for it for at most :data:`STOP_GRACE` seconds; after that, or on a second signal,
the process exits at once, and the database rolls the open transaction back.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import signal
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_SCHEDULER_STARTED,
    SchedulerEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine

from jobsync.api.ratelimit import RateLimiters
from jobsync.config import Settings
from jobsync.errors import ConfigError, JobsyncError, LockedError, StorageError
from jobsync.observability.logs import fields
from jobsync.observability.metrics import Health, MetricsServer
from jobsync.service.metrics import DaemonMetrics, jobs_by_state
from jobsync.service.notify import Notifier
from jobsync.service.retention import RETENTION_EVERY, apply_retention
from jobsync.service.sync import PassResult, sync_all
from jobsync.storage.boundary import storage_errors
from jobsync.storage.migrate import ensure_schema

__all__ = ["STOP_GRACE", "DaemonOptions", "Schedule", "cron", "every", "run_daemon"]

log = logging.getLogger(__name__)

# How long a stop waits for the pass in flight to finish its write: the whole stop must end
# within 10 s, inside systemd's TimeoutStopSec=15 (docs/deployment.md).
STOP_GRACE = 8.0
MIN_INTERVAL = 0.1  # seconds; anything shorter is a busy loop, not a schedule
_CRON_LOOKAHEAD = 10  # fire times examined to find a cron schedule's longest gap


@dataclass(frozen=True)
class Schedule:
    """When passes run. ``interval`` is the gap between passes in seconds (for a cron
    expression: the longest gap among its next runs), which sizes the misfire grace time
    and the health window."""

    trigger: BaseTrigger
    interval: float
    description: str


def every(seconds: float) -> Schedule:
    """A pass every ``seconds`` (fractions allowed, at least :data:`MIN_INTERVAL`)."""
    if not math.isfinite(seconds) or seconds < MIN_INTERVAL:
        raise ConfigError(f"--every must be at least {MIN_INTERVAL:g}s, not {seconds:g}s")
    return Schedule(IntervalTrigger(seconds=seconds, timezone=UTC), seconds, f"every {seconds:g}s")


def cron(expression: str) -> Schedule:
    """Passes at the times a five-field crontab expression names, in UTC."""
    try:
        trigger = CronTrigger.from_crontab(expression, timezone=UTC)
    except ValueError as exc:
        raise ConfigError(
            f"--cron {expression!r} is not a crontab expression "
            f'(minute hour day month weekday, e.g. "*/5 * * * *"): {exc}'
        ) from None
    times: list[datetime] = []
    moment = datetime.now(UTC)
    previous: datetime | None = None
    for _ in range(_CRON_LOOKAHEAD + 1):
        fire = trigger.get_next_fire_time(previous, moment)
        if fire is None:
            break
        times.append(fire)
        previous = moment = fire
    if len(times) < 2:
        raise ConfigError(f"--cron {expression!r} never fires (or fires only once)")
    gap = max((b - a).total_seconds() for a, b in itertools.pairwise(times))
    return Schedule(trigger, gap, f"cron {expression!r} (UTC)")


@dataclass(frozen=True)
class DaemonOptions:
    """How the daemon is watched: the metrics server (None: no server) and the health rule."""

    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    unhealthy_after: int = 3  # intervals without a successful pass before /healthz says 503
    stop_grace: float = STOP_GRACE


def run_daemon(
    engine: Engine, settings: Settings, schedule: Schedule, options: DaemonOptions
) -> None:
    """Sync on ``schedule`` until SIGTERM or SIGINT; return once stopped cleanly.

    Call from the main thread (signal handlers can only be installed there).
    """
    _Daemon(engine, settings, schedule, options).run()


class _Daemon:
    def __init__(
        self, engine: Engine, settings: Settings, schedule: Schedule, options: DaemonOptions
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._schedule = schedule
        self._options = options
        names = [s.name for s in settings.sources]
        self._health = Health(names, options.unhealthy_after * schedule.interval)
        self._metrics = DaemonMetrics(names, self._health)
        self._stop = threading.Event()  # a stop was requested
        self._cancel = threading.Event()  # handed to sync_all: ends a pass that is fetching
        # One pacer for the daemon's life: a pass starting just after another stays within the
        # rate limit together with the end of the previous one.
        self._limiters = RateLimiters(settings.http.requests_per_second)
        # Built once: a target Apprise cannot use stops the daemon at start-up (exit 2).
        self._notifier = Notifier(settings.notify) if settings.notify.targets else None
        self._signal_name = "stop requested"
        self._idle = threading.Condition(threading.RLock())
        self._running = 0  # passes in flight (0 or 1: max_instances=1)
        self._scheduler = BlockingScheduler(
            timezone=UTC,
            jobstores={"default": MemoryJobStore()},
            executors={"default": ThreadPoolExecutor(max_workers=1)},
        )

    # -- life cycle -----------------------------------------------------------------------------

    def run(self) -> None:
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        server: MetricsServer | None = None
        try:
            ensure_schema(self._engine)
            if self._options.metrics_port is not None:
                server = MetricsServer(
                    self._options.metrics_host,
                    self._options.metrics_port,
                    self._metrics.registry,
                    self._health,
                )
                server.start()
                log.info(
                    "metrics at %s/metrics, health at %s/healthz",
                    server.url,
                    server.url,
                    extra=fields(event="listening", url=server.url),
                )
            threading.Thread(target=self._stopper, name="jobsync stopper", daemon=True).start()
            self._schedule_passes()
            log.info(
                "daemon started: %s, %d source(s)",
                self._schedule.description,
                len(self._settings.sources),
                extra=fields(event="started", schedule=self._schedule.description),
            )
            if not self._stop.is_set():
                self._scheduler.start()  # blocks until the stopper shuts it down
            self._wait_for_pass_in_flight()
            log.info("daemon stopped", extra=fields(event="stopped"))
        finally:
            if server is not None:
                server.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _schedule_passes(self) -> None:
        self._scheduler.add_job(
            self._pass,
            trigger=self._schedule.trigger,
            id="sync",
            name="sync pass",
            max_instances=1,
            coalesce=True,
            # A positive whole number of seconds (APScheduler's rule), at least half the interval.
            misfire_grace_time=max(1, math.ceil(self._schedule.interval / 2)),
            next_run_time=datetime.now(UTC),  # the first pass at start-up
        )
        self._schedule_retention()
        self._scheduler.add_listener(self._on_started, EVENT_SCHEDULER_STARTED)
        self._scheduler.add_listener(self._on_not_run, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)

    # -- retention (jobsync.service.retention) --------------------------------------------------

    def _schedule_retention(self) -> None:
        """Prune by ``retention`` at start-up and every RETENTION_EVERY, in a worker of its own:
        its batches are short transactions beside the passes, which it never holds up."""
        if self._settings.retention is None:
            return
        self._scheduler.add_executor(ThreadPoolExecutor(max_workers=1), "retention")
        self._scheduler.add_job(
            self._prune,
            trigger=IntervalTrigger(seconds=RETENTION_EVERY, timezone=UTC),
            id="retention",
            name="retention",
            executor="retention",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=math.ceil(RETENTION_EVERY),
            next_run_time=datetime.now(UTC),
        )

    def _prune(self) -> None:
        try:
            apply_retention(self._engine, self._settings, stop=self._stop.is_set)
        except JobsyncError as exc:
            log.error(
                "retention failed: %s (tried again later)",
                exc,
                extra=fields(event="retention_error", error=str(exc)),
            )

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stop.is_set():
            # A second signal: the user insists. The database rolls back any open transaction.
            self._exit_now(f"{signal.Signals(signum).name} again: stopping at once")
        self._signal_name = signal.Signals(signum).name
        # Only Event.set here: their locks are never held by the main thread, unlike the
        # scheduler's and the thread pool's, which a handler could deadlock on.
        self._cancel.set()
        self._stop.set()

    def _stopper(self) -> None:
        self._stop.wait()
        log.info(
            "%s: stopping after the pass in flight, if any",
            self._signal_name,
            extra=fields(event="stopping", signal=self._signal_name),
        )
        self._shutdown_scheduler()

    def _on_started(self, event: SchedulerEvent) -> None:
        # A stop that came before start() found nothing to shut down: do it now, or start()
        # would block for ever.
        if self._stop.is_set():
            self._shutdown_scheduler()

    def _on_not_run(self, event: SchedulerEvent) -> None:
        # APScheduler logs these itself (a WARNING line each); count them for dashboards.
        overrun = event.code == EVENT_JOB_MAX_INSTANCES
        self._metrics.record_skip("overrun" if overrun else "missed")

    def _shutdown_scheduler(self) -> None:
        # Not running: not started yet (see _on_started), or already shut down.
        with contextlib.suppress(SchedulerNotRunningError):
            # wait=False: the main thread waits for the pass itself, with a deadline.
            self._scheduler.shutdown(wait=False)

    def _wait_for_pass_in_flight(self) -> None:
        with self._idle:
            if self._idle.wait_for(lambda: self._running == 0, timeout=self._options.stop_grace):
                return
        self._exit_now(
            f"the pass in flight did not finish within {self._options.stop_grace:g}s; "
            "stopping anyway (its transaction is rolled back; the next sync marks it abandoned)"
        )

    def _exit_now(self, why: str) -> None:
        log.warning("%s", why, extra=fields(event="forced_stop"))
        for handler in logging.getLogger().handlers:
            handler.flush()
        # os._exit, not sys.exit: the thread pool's worker is joined at interpreter exit, which
        # would wait for the very pass we are giving up on.
        os._exit(0)

    # -- one scheduled pass -------------------------------------------------------------------

    def _pass(self) -> None:
        with self._idle:
            if self._cancel.is_set():
                return  # stopping: start nothing new
            self._running += 1
        try:
            self._sync_once()
        finally:
            with self._idle:
                self._running -= 1
                self._idle.notify_all()

    def _sync_once(self) -> None:
        try:
            results = sync_all(
                self._engine,
                self._settings,
                cancel=self._cancel,
                limiters=self._limiters,
                notifier=self._notifier,
            )
        except LockedError as exc:
            log.warning(
                "skipping this pass: %s",
                exc,
                extra=fields(event="skipped", reason="locked", error=str(exc)),
            )
            self._metrics.record_skip("locked")
            return
        except JobsyncError as exc:
            kind = type(exc).__name__
            log.error(
                "pass failed: %s",
                exc,
                extra=fields(event="pass_error", error_kind=kind, error=str(exc)),
            )
            self._metrics.record_error(kind)
            return
        except BaseException as exc:
            # A bug: count it, and let APScheduler log it with its traceback.
            self._metrics.record_error(type(exc).__name__)
            raise
        for result in results:
            _log_pass(result)
        # Job counts first: a scrape that sees a pass counted then also sees what it stored.
        self._refresh_job_counts()
        for result in results:
            self._metrics.record_pass(result)
            if result.ok:
                self._health.record_success(result.source)

    def _refresh_job_counts(self) -> None:
        for source in self._settings.sources:
            try:
                with storage_errors(self._engine):
                    counts = jobs_by_state(self._engine, source.key)
            except StorageError as exc:
                log.warning(
                    "cannot count the jobs of %s for the metrics: %s",
                    source.name,
                    exc,
                    extra=fields(event="metrics_error", source=source.name),
                )
                self._metrics.record_error("StorageError", source.name)
                continue
            self._metrics.set_jobs(source.name, counts)


def _log_pass(result: PassResult) -> None:
    """The one line per pass per source, with its counts (the library logs only at DEBUG)."""
    values: dict[str, Any] = {
        "event": "pass",
        "source": result.source,
        "run_id": result.run_id,
        "status": "succeeded" if result.ok else "failed",
        "complete": result.complete,
        "pages": result.pages,
        "jobs": result.jobs,
        "retries": result.retries,
        "duration": round(result.seconds, 3),
    }
    if result.counts is not None:
        values["counts"] = {
            "new": result.counts.new_jobs,
            "changed": result.counts.changed_jobs,
            "vanished": result.counts.vanished_jobs,
        }
    if result.error is not None:
        values["error_kind"] = type(result.error).__name__
        values["error"] = str(result.error)
    level = logging.INFO if result.ok else logging.ERROR
    log.log(level, "%s", result.summary(), extra=fields(**values))
