"""The daemon's Prometheus metrics: what each pass did, and the jobs it left stored.

Each :class:`DaemonMetrics` has a registry of its own rather than prometheus_client's global
one, so several daemons (or tests) in one process never collide on metric names. The job counts
are computed by the daemon right after each pass (:func:`jobs_by_state`, one ``GROUP BY`` per
source), so that serving them (:class:`jobsync.observability.metrics.MetricsServer`) never
touches the database.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import Engine, func, select

from jobsync.domain.states import CANONICAL_STATES
from jobsync.observability.metrics import Health
from jobsync.service.sync import PassResult
from jobsync.storage.schema import import_job_records

__all__ = ["DaemonMetrics", "jobs_by_state"]

# Passes range from a fraction of a second (a small cluster) to minutes (thousands of pages,
# retries with backoff); prometheus_client's default buckets stop at 10 s.
PASS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, float("inf"))

# The transition kinds a pass counts (PassCounts' fields), named as in import_job_transitions.
TRANSITION_KINDS = ("first_seen", "change", "vanished")


def jobs_by_state(engine: Engine, cluster_id: str) -> dict[str, int]:
    """Jobs of one source that the API still lists (not vanished), per canonical state."""
    r = import_job_records
    query = (
        select(r.c.state, func.count())
        .where(r.c.cluster_id == cluster_id, r.c.vanished_at.is_(None))
        .group_by(r.c.state)
    )
    with engine.connect() as conn:
        return {state: int(n) for state, n in conn.execute(query).all()}


class DaemonMetrics:
    """The daemon's metrics, in a registry of their own."""

    def __init__(self, sources: Iterable[str], health: Health | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry

        def counter(name: str, documentation: str, *labels: str) -> Counter:
            return Counter(name, documentation, labels, registry=r)

        def gauge(name: str, documentation: str, *labels: str) -> Gauge:
            return Gauge(name, documentation, labels, registry=r)

        self.last_success = gauge(
            "jobsync_last_success_timestamp_seconds",
            "Unix time when a pass over the source last succeeded.",
            "source",
        )
        self.pass_duration = Histogram(
            "jobsync_pass_duration_seconds",
            "How long passes took, by source and outcome (succeeded or failed).",
            ["source", "status"],
            buckets=PASS_BUCKETS,
            registry=r,
        )
        self.passes = counter(
            "jobsync_passes", "Passes made, by source and outcome.", "source", "status"
        )
        self.jobs = gauge(
            "jobsync_jobs",
            "Jobs the API still lists (not vanished), by source and canonical state, as stored "
            "after the latest pass.",
            "source",
            "state",
        )
        self.transitions = counter(
            "jobsync_transitions",
            "History rows recorded, by source and kind (first_seen, change, vanished).",
            "source",
            "kind",
        )
        self.errors = counter(
            "jobsync_errors",
            "Errors by source and kind (the error's class name: AuthError, TransportError, "
            'ProtocolError, ApiStatusError, StorageError, ...); source="" when a pass failed '
            "before reaching any source.",
            "source",
            "kind",
        )
        self.retries = counter("jobsync_retries", "HTTP requests retried, by source.", "source")
        self.details = counter(
            "jobsync_details",
            "Progress-detail requests, by source and outcome (ok or failed, after retries).",
            "source",
            "outcome",
        )
        self.skipped = counter(
            "jobsync_skipped_passes",
            "Scheduled passes not run, by reason: locked (another sync held the lock), "
            "overrun (the previous pass was still running), missed (the scheduler woke up "
            "too late).",
            "reason",
        )
        if health is not None:
            up = gauge("jobsync_healthy", "1 while /healthz answers 200, else 0.")
            up.set_function(lambda: 1.0 if health.check()[0] else 0.0)
        # Create every series a dashboard expects at zero, so a rate() works from the start.
        for source in sources:
            for status in ("succeeded", "failed"):
                self.passes.labels(source, status)
            for kind in TRANSITION_KINDS:
                self.transitions.labels(source, kind)
            self.retries.labels(source)
            for outcome in ("ok", "failed"):
                self.details.labels(source, outcome)
        for reason in ("locked", "overrun", "missed"):
            self.skipped.labels(reason)

    def record_pass(self, result: PassResult) -> None:
        status = "succeeded" if result.ok else "failed"
        self.passes.labels(result.source, status).inc()
        self.pass_duration.labels(result.source, status).observe(result.seconds)
        if result.retries:
            self.retries.labels(result.source).inc(result.retries)
        if result.details_requested:
            failed = result.details_failed
            self.details.labels(result.source, "ok").inc(result.details_requested - failed)
            self.details.labels(result.source, "failed").inc(failed)
        if result.error is not None:
            self.record_error(type(result.error).__name__, result.source)
        counts = result.counts
        if result.ok and counts is not None:
            self.last_success.labels(result.source).set(time.time())
            for kind, n in zip(
                TRANSITION_KINDS,
                (counts.new_jobs, counts.changed_jobs, counts.vanished_jobs),
                strict=True,
            ):
                self.transitions.labels(result.source, kind).inc(n)

    def record_error(self, kind: str, source: str = "") -> None:
        self.errors.labels(source, kind).inc()

    def record_skip(self, reason: str) -> None:
        self.skipped.labels(reason).inc()

    def set_jobs(self, source: str, counts: Mapping[str, int]) -> None:
        # Every canonical state gets a value, so a state that emptied drops to 0 instead of
        # keeping its last count.
        for state in (*CANONICAL_STATES, *sorted(set(counts) - set(CANONICAL_STATES))):
            self.jobs.labels(source, state).set(counts.get(state, 0))
