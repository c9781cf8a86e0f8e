"""The HTTP layer: a threading HTTP/1.1 server that hands each request to a `Responder`.

Faithful to what clients meet on the wire: keep-alive (so a `requests.Session` reuses one
connection), `Content-Length` on every reply, JSON error bodies for 404/405/413. The responder
decides the reply under its lock; this module does the sleeping (latency, fault delay, trickle)
outside it, so a slow reply never stalls other clients or the test thread mutating the world.

Deliberately different from a production server: no TLS, no chunked request bodies (411), bodies
over 1 MiB are refused (413), and `stop()` cuts open keep-alive connections instead of letting
them drain, so a stopped simulator really stops answering.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import urlsplit

from .wire import Reply, http_error

MAX_BODY = 1 << 20


@dataclass(frozen=True)
class Planned:
    """A reply and how to send it: after `pause` seconds, and byte by byte if `trickle` is set."""

    reply: Reply
    pause: float = 0.0
    trickle: float | None = None


class Responder(Protocol):
    def respond(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> Planned: ...

    def pace(self, seconds: float) -> None: ...


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without TCP_NODELAY, Nagle's algorithm holds the
    # body back until the client's delayed ACK on every keep-alive request: a wait the real API
    # does not add, and that tests and benchmarks would measure instead of the client.
    disable_nagle_algorithm = True
    server_version = "jobsync-simulator"
    sys_version = ""
    timeout = 300  # an idle keep-alive client must not pin a thread forever
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: tests and the demo command do not want a line per request on stderr."""

    def do_POST(self) -> None:
        self._serve()

    do_GET = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = do_POST

    def _serve(self) -> None:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            self._send(http_error(411), None)
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            # The body is not read, so the connection cannot be reused.
            self.close_connection = True
            self._send(http_error(400 if length < 0 else 413), None)
            return
        raw = self.rfile.read(length) if length else b""
        responder = self.server.responder
        plan = responder.respond(self.command, urlsplit(self.path).path, dict(self.headers), raw)
        if plan.pause > 0:
            responder.pace(plan.pause)
        self._send(plan.reply, plan.trickle)

    def _send(self, reply: Reply, trickle: float | None) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        # A transform may set its own (even a lying) Content-Length; otherwise it is exact.
        if not any(name.lower() == "content-length" for name, _ in reply.headers):
            self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command == "HEAD":
            return
        try:
            if trickle is None:
                self.wfile.write(reply.body)
                return
            # Pause, then send: the last pause is over before the client can hold the whole body.
            for i in range(len(reply.body)):
                self.server.responder.pace(trickle)
                self.wfile.write(reply.body[i : i + 1])
                self.wfile.flush()
        except ConnectionError:  # the client hung up, e.g. its deadline cut a trickle short
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], responder: Responder) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.responder = responder
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that reset a connection (deadlines, stop() cutting keep-alives) are normal in
        # tests; only print real server errors.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def cut_open_connections(self) -> None:
        with self._open_lock:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)


class HttpServerThread:
    """Serves a responder on (host, port) from a daemon thread."""

    def __init__(self, responder: Responder, host: str, port: int) -> None:
        self._server = _Server((host, port), responder)
        bound_port = self._server.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{bound_port}"
        self._thread = threading.Thread(
            target=self._serve, name=f"simulator {self.url}", daemon=True
        )
        self._thread.start()

    def _serve(self) -> None:
        self._server.serve_forever(poll_interval=0.01)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.cut_open_connections()
        self._server.server_close()
        self._thread.join()
