"""What the daemon exposes to monitoring: Prometheus metrics, a health verdict, and the HTTP
server that serves both (``/metrics`` and ``/healthz``).

Each :class:`DaemonMetrics` has a registry of its own rather than prometheus_client's global
one, so several daemons (or tests) in one process never collide on metric names. The server is
a stdlib ``ThreadingHTTPServer`` on a thread of its own; it never touches the database: the
job counts it reports are computed by the daemon right after each pass (one ``GROUP BY`` per
source), so a scrape costs nothing and cannot slow a pass down.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from sqlalchemy import Engine, func, select

from jobsync.domain.states import CANONICAL_STATES
from jobsync.errors import ConfigError
from jobsync.service.sync import PassResult
from jobsync.storage.schema import import_job_records

__all__ = ["DaemonMetrics", "Health", "MetricsServer", "jobs_by_state"]

log = logging.getLogger(__name__)

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


class Health:
    """Healthy while every source had a successful pass within ``window`` seconds.

    Before a source's first success the daemon's start counts instead, which gives a new daemon
    a grace period of one window. Monotonic time: a wall-clock step never flips the verdict.
    """

    def __init__(
        self, sources: Iterable[str], window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._window = window
        started = clock()
        self._last_ok = dict.fromkeys(sources, started)
        self._succeeded: set[str] = set()
        self._lock = threading.Lock()

    def record_success(self, source: str) -> None:
        with self._lock:
            self._last_ok[source] = self._clock()
            self._succeeded.add(source)

    def check(self) -> tuple[bool, str]:
        """The verdict and one line per source saying why."""
        now = self._clock()
        with self._lock:
            items = sorted(self._last_ok.items())
            succeeded = set(self._succeeded)
        healthy = True
        lines = []
        for source, moment in items:
            age = now - moment
            ok = age <= self._window
            healthy = healthy and ok
            what = "last success" if source in succeeded else "no success yet, started"
            lines.append(
                f"{source}: {'ok' if ok else 'stale'} ({what} {age:.1f}s ago, "
                f"limit {self._window:g}s)"
            )
        return healthy, "\n".join(lines)


class DaemonMetrics:
    """The daemon's metrics, in a registry of their own."""

    def __init__(self, sources: Iterable[str], health: Health | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.last_success = Gauge(
            "jobsync_last_success_timestamp_seconds",
            "Unix time when a pass over the source last succeeded.",
            ["source"],
            registry=r,
        )
        self.pass_duration = Histogram(
            "jobsync_pass_duration_seconds",
            "How long passes took, by source and outcome (succeeded or failed).",
            ["source", "status"],
            buckets=PASS_BUCKETS,
            registry=r,
        )
        self.passes = Counter(
            "jobsync_passes",
            "Passes made, by source and outcome.",
            ["source", "status"],
            registry=r,
        )
        self.jobs = Gauge(
            "jobsync_jobs",
            "Jobs the API still lists (not vanished), by source and canonical state, as stored "
            "after the latest pass.",
            ["source", "state"],
            registry=r,
        )
        self.transitions = Counter(
            "jobsync_transitions",
            "History rows recorded, by source and kind (first_seen, change, vanished).",
            ["source", "kind"],
            registry=r,
        )
        self.errors = Counter(
            "jobsync_errors",
            "Errors by source and kind (the error's class name: AuthError, TransportError, "
            'ProtocolError, ApiStatusError, StorageError, ...); source="" when a pass failed '
            "before reaching any source.",
            ["source", "kind"],
            registry=r,
        )
        self.retries = Counter(
            "jobsync_retries", "HTTP requests retried, by source.", ["source"], registry=r
        )
        self.skipped = Counter(
            "jobsync_skipped_passes",
            "Scheduled passes not run, by reason: locked (another sync held the lock), "
            "overrun (the previous pass was still running), missed (the scheduler woke up "
            "too late).",
            ["reason"],
            registry=r,
        )
        if health is not None:
            up = Gauge("jobsync_healthy", "1 while /healthz answers 200, else 0.", registry=r)
            up.set_function(lambda: 1.0 if health.check()[0] else 0.0)
        # Create every series a dashboard expects at zero, so a rate() works from the start.
        for source in sources:
            for status in ("succeeded", "failed"):
                self.passes.labels(source, status)
            for kind in TRANSITION_KINDS:
                self.transitions.labels(source, kind)
            self.retries.labels(source)
        for reason in ("locked", "overrun", "missed"):
            self.skipped.labels(reason)

    def record_pass(self, result: PassResult) -> None:
        status = "succeeded" if result.ok else "failed"
        self.passes.labels(result.source, status).inc()
        self.pass_duration.labels(result.source, status).observe(result.seconds)
        if result.retries:
            self.retries.labels(result.source).inc(result.retries)
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


class MetricsServer:
    """``/metrics`` and ``/healthz`` over HTTP, from a thread of its own, until :meth:`close`."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, health: Health) -> None:
        handler = _handler_class(registry, health)
        server_class = _IPv6Server if ":" in host else ThreadingHTTPServer
        try:
            self._server = server_class((host, port), handler)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
            ) from None
        # Handler threads must not keep a stopping daemon alive.
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="jobsync metrics", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{name}]" if ":" in name else name
        return f"http://{shown}:{port}"

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _handler_class(registry: CollectorRegistry, health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                healthy, detail = health.check()
                body = f"{'ok' if healthy else 'unhealthy'}\n{detail}\n".encode()
                self._reply(200 if healthy else 503, body, "text/plain; charset=utf-8")
            else:
                self._reply(404, b"not found: try /metrics or /healthz\n", "text/plain")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            # Scrapes every few seconds would drown the per-pass lines; keep them for --debug.
            log.debug("%s %s", self.address_string(), format % args)

    return Handler
