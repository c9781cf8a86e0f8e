"""The daemon's monitoring endpoints: a health verdict, and the HTTP server that serves it with
the Prometheus metrics (``/metrics`` and ``/healthz``).

The server is a stdlib ``ThreadingHTTPServer`` on a thread of its own. It serves a registry it
is given (the daemon's: :mod:`jobsync.service.metrics`) and never touches the database, so a
scrape costs nothing and cannot slow a pass down.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from jobsync.errors import ConfigError

__all__ = ["Health", "MetricsServer"]

log = logging.getLogger(__name__)


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
