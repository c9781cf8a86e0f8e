"""``jobsync daemon``: run :func:`jobsync.service.sync.sync_all` on a schedule until SIGTERM or
SIGINT.

A thin wrapper that owns signals, scheduling and monitoring; what a pass does stays in
``jobsync.service.sync``. The schedule is APScheduler 3's ``BackgroundScheduler`` in UTC with a
memory job store (a job store must never be shared between processes: the database is what
coordinates them), one job per source on the source's own schedule
(``jobsync.service.schedule``) with ``max_instances=1`` so a slow pass is never overlapped by
the next of its source, ``coalesce=True`` so a backlog of missed runs becomes one, a
``misfire_grace_time`` of one interval (the default of one second silently drops a late
wake-up, and with many sources a run waits in the thread pool's queue for a free worker), and a
first pass at start-up. A pass longer than its interval logs one line saying so, instead of
APScheduler's warning per run it skipped. Every source shares the daemon's rate limiters.

Replicas: where several daemons may share the database (PostgreSQL), a daemon claims a source's
period before syncing it, the period the run was due in (``jobsync.service.claims``), so each
source is synced once per period whichever replica gets there first, and the source's lock
keeps two passes of one source apart. On SQLite a second daemon on the same file is refused at
start (``daemon_lock``).

Stopping: APScheduler 3 installs no signal handlers, so this module does. A handler only sets
two events (a handler must not take the scheduler's or the thread pool's locks, which the
thread it interrupts may hold); a helper thread then shuts the scheduler down. Python
runs a handler in the main thread, but the kernel may hand a signal sent to the process to any
thread, and then no wait of the main thread ends for it: so the main thread never waits longer
than :data:`SIGNAL_WAKE` at a time, while the scheduler runs in a thread of its own. The
``cancel`` event ends a pass that is still fetching before its next request (it fails and writes
nothing but its ``sync_runs`` row); a pass already in its write transaction completes. The
daemon waits for it for at most :data:`STOP_GRACE` seconds; after that, or on a second signal,
the process exits at once, and the database rolls the open transaction back.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType

from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    EVENT_SCHEDULER_STARTED,
    SchedulerEvent,
)
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine

from jobsync.api.ratelimit import RateLimiters
from jobsync.config import Settings, Source
from jobsync.domain.clock import Clock, utcnow
from jobsync.errors import JobsyncError, LockedError, StorageError
from jobsync.observability.logs import fields
from jobsync.observability.metrics import Health, MetricsServer
from jobsync.service.claims import DueTimes, PeriodClaims, when_free
from jobsync.service.metrics import DaemonMetrics, jobs_by_state
from jobsync.service.notify import Notifier
from jobsync.service.passlog import QuietSkips, log_overrun, log_pass
from jobsync.service.retention import schedule_retention
from jobsync.service.schedule import (
    MIN_INTERVAL,
    Schedule,
    cron,
    every,
    source_schedule,
    spread,
)
from jobsync.service.sync import PassResult, sync_all
from jobsync.storage.boundary import storage_errors
from jobsync.storage.coordination import replicas_possible
from jobsync.storage.locking import daemon_lock
from jobsync.storage.migrate import ensure_schema

__all__ = [
    "MIN_INTERVAL",
    "STOP_GRACE",
    "DaemonOptions",
    "Schedule",
    "cron",
    "every",
    "run_daemon",
]

log = logging.getLogger(__name__)

# How long a stop waits for the pass in flight to finish its write: the whole stop must end
# within 10 s, inside systemd's TimeoutStopSec=15 (docs/deployment.md).
STOP_GRACE = 8.0
# The longest the main thread waits at a time, so that it runs the handler of a signal that
# another thread received (see the module's doc).
SIGNAL_WAKE = 0.1


@dataclass(frozen=True)
class DaemonOptions:
    """How the daemon is watched: the metrics server (None: no server) and the health rule."""

    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = None
    unhealthy_after: int = 3  # intervals without a successful pass before /healthz says 503
    stop_grace: float = STOP_GRACE


def run_daemon(
    engine: Engine,
    settings: Settings,
    schedule: Schedule | None,
    options: DaemonOptions,
    *,
    clock: Clock = utcnow,
) -> None:
    """Sync each source on its schedule (``schedule`` for those without their own) until
    SIGTERM or SIGINT; return once stopped cleanly. ``schedule`` may be None only when every
    source has its own (ConfigError otherwise).

    Call from the main thread (signal handlers can only be installed there). ConfigError for
    a source's schedule that cannot be used; LockedError for a second daemon on SQLite.
    """
    _Daemon(engine, settings, schedule, options, clock).run()


class _Daemon:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        schedule: Schedule | None,
        options: DaemonOptions,
        clock: Clock,
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._options = options
        self._clock = clock
        self._schedules = {s.key: source_schedule(s, schedule) for s in settings.sources}
        self._description = (
            schedule.description if schedule is not None else "each source on its own schedule"
        )
        self._default = schedule
        names = [s.name for s in settings.sources]
        longest = max((x.interval for x in self._schedules.values()), default=MIN_INTERVAL)
        self._health = Health(names, options.unhealthy_after * longest)
        self._metrics = DaemonMetrics(names, self._health)
        self._stop = threading.Event()  # a stop was requested
        self._cancel = threading.Event()  # handed to sync_all: ends a pass that is fetching
        # One pacer for the daemon's life, shared by every source: a pass starting just after
        # another stays within the rate limit together with the end of the previous one.
        self._limiters = RateLimiters(settings.http.requests_per_second)
        # Built once: a target Apprise cannot use stops the daemon at start-up (exit 2).
        self._notifier = Notifier(settings.notify) if settings.notify.targets else None
        self._signal_name = "stop requested"
        self._idle = threading.Condition(threading.RLock())
        self._running = 0  # passes in flight (at most one per source: max_instances=1)
        self._not_run: dict[str, int] = {}  # per job: runs not started while one was pending
        self._start = datetime.now(UTC)  # when the passes at start-up were due (see _pass)
        self._claims = (
            PeriodClaims(engine, self._schedules, self._metrics, self._health, clock)
            if replicas_possible(engine)
            else None
        )
        workers = max(1, min(settings.http.max_concurrent_sources, len(settings.sources)))
        self._executor = DueTimes(max_workers=workers)
        self._scheduler = BackgroundScheduler(
            timezone=UTC,
            jobstores={"default": MemoryJobStore()},
            executors={"default": self._executor},
        )

    # -- life cycle -----------------------------------------------------------------------------

    def run(self) -> None:
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        quiet = QuietSkips()
        scheduler_logs = [logging.getLogger(n) for n in ("apscheduler.scheduler", "apscheduler")]
        scheduler_logs.append(logging.getLogger("apscheduler.executors.default"))
        server: MetricsServer | None = None
        try:
            for logger in scheduler_logs:
                logger.addFilter(quiet)
            with daemon_lock(self._engine):
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
                own = sum(1 for s in self._schedules.values() if s is not self._default)
                log.info(
                    "daemon started: %s, %d source(s)%s",
                    self._description,
                    len(self._settings.sources),
                    f" ({own} on their own schedule)" if own and self._default else "",
                    extra=fields(event="started", schedule=self._description),
                )
                if not self._stop.is_set():
                    self._scheduler.start()
                while not self._stop.wait(SIGNAL_WAKE):
                    pass  # the stopper shuts the scheduler down
                self._wait_for_pass_in_flight()
            log.info("daemon stopped", extra=fields(event="stopped"))
        finally:
            if server is not None:
                server.close()
            for logger in scheduler_logs:
                logger.removeFilter(quiet)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _schedule_passes(self) -> None:
        start = self._start = datetime.now(UTC)  # the first pass of every source at start-up
        shares = spread((s.key for s in self._settings.sources), self._schedules)
        for source in self._settings.sources:
            schedule = self._schedules[source.key]
            self._scheduler.add_job(
                self._pass,
                args=(source,),
                trigger=schedule.trigger_at(shares[source.key]),
                id=f"sync:{source.key}",
                name=f"sync {source.name}",
                max_instances=1,
                coalesce=True,
                # A positive whole number of seconds (APScheduler's rule): one interval. It
                # counts from the scheduled time to the start in a worker, queueing included.
                misfire_grace_time=max(1, math.ceil(schedule.interval)),
                next_run_time=start,
            )
        schedule_retention(self._scheduler, self._engine, self._settings, self._stop.is_set)
        self._scheduler.add_listener(self._on_started, EVENT_SCHEDULER_STARTED)
        self._scheduler.add_listener(self._on_not_run, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)

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
        # APScheduler's own warning for each is filtered out (QuietSkips): the pass that ran
        # over says it once, when it ends. Counted for dashboards.
        overrun = event.code == EVENT_JOB_MAX_INSTANCES
        self._metrics.record_skip("overrun" if overrun else "missed")
        job_id = str(getattr(event, "job_id", ""))
        with self._idle:
            self._not_run[job_id] = self._not_run.get(job_id, 0) + 1

    def _shutdown_scheduler(self) -> None:
        # Not running: not started yet (see _on_started), or already shut down.
        with contextlib.suppress(SchedulerNotRunningError):
            # wait=False: the main thread waits for the pass itself, with a deadline.
            self._scheduler.shutdown(wait=False)

    def _wait_for_pass_in_flight(self) -> None:
        deadline = time.monotonic() + self._options.stop_grace
        with self._idle:
            # In short waits (SIGNAL_WAKE): a second SIGINT must stop at once, not when the
            # grace is over.
            while self._running and (left := deadline - time.monotonic()) > 0:
                self._idle.wait(min(left, SIGNAL_WAKE))
            if not self._running:
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

    def _pass(self, source: Source) -> None:
        with self._idle:
            if self._cancel.is_set():
                return  # stopping: start nothing new
            self._running += 1
        job_id = f"sync:{source.key}"
        due = self._executor.due(job_id)
        late = 0.0 if due is None else max(0.0, (datetime.now(UTC) - due[0]).total_seconds())
        began = time.monotonic()
        # The pass at start-up claims the period it runs in: it is due in none, and the
        # scheduler may have started a moment after it was added, in the next period.
        claim_for = None if due is None or due[1] <= self._start else due[1]
        try:
            self._sync_once(source, claim_for)
        finally:
            with self._idle:
                self._running -= 1
                skipped = self._not_run.pop(job_id, 0)
                self._idle.notify_all()
            interval = self._schedules[source.key].interval
            log_overrun(log, source.name, interval, time.monotonic() - began, late, skipped)

    def _sync_once(self, source: Source, due: datetime | None) -> None:
        until = None  # a claimed period's end: wait for the source's lock until then
        if self._claims is not None:
            until = self._claims.claim(source, due)
            if until is None:
                return

        def attempt() -> list[PassResult]:
            return sync_all(
                self._engine,
                self._settings,
                sources=[source],
                cancel=self._cancel,
                limiters=self._limiters,
                notifier=self._notifier,
                replicas=self._claims is not None,
            )

        try:
            results = when_free(attempt, until, self._clock, self._cancel)
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
            log_pass(log, result)
        # Job counts first: a scrape that sees a pass counted then also sees what it stored.
        self._refresh_job_counts(source)
        for result in results:
            self._metrics.record_pass(result)
            if result.ok:
                self._health.record_success(result.source)

    def _refresh_job_counts(self, source: Source) -> None:
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
            return
        self._metrics.set_jobs(source.name, counts)
