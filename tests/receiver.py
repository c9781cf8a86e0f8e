"""A notification receiver on loopback: what Apprise's ``json://`` target posts, recorded.

Apprise's JSON target POSTs ``{"version", "title", "message", "type", "attachments"}`` to
``http://host:port/path``. The receiver keeps every arrival in order, answers 200 unless told
to fail (``fail``), and can hold the next request unanswered (``hold``) so that a test can kill
the sender while a delivery is in flight. Its record is what the tests believe.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.polling import poll

DEADLINE = 30.0
# "Event: job_failed:0123..." in a message for one event, "[job_failed:0123...]" in a digest.
_KEY = re.compile(
    r"(?:^Event: |\[)((?:job_failed|job_stuck|source_failing|source_recovered):[0-9a-f]+)", re.M
)


@dataclass
class Arrival:
    path: str
    title: str
    message: str
    type: str
    # True when the receiver held this request unanswered (the sender may have died meanwhile).
    held: bool = False
    status: int = 200

    @property
    def keys(self) -> list[str]:
        return _KEY.findall(self.message)

    @property
    def accepted(self) -> bool:
        return not self.held and 200 <= self.status < 300


class Receiver:
    def __init__(self) -> None:
        self.arrivals: list[Arrival] = []
        self._lock = threading.Lock()
        self._fail: dict[str, int] = {}  # path -> status to answer with
        self._hold_next = False
        self.holding = threading.Event()  # a request is being held
        self._release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver._arrive(self, json.loads(body or b"{}"))

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str = "hook") -> str:
        """An Apprise URL that posts here."""
        return f"json://127.0.0.1:{self.port}/{path}"

    def fail(self, path: str = "hook", status: int | None = 500) -> None:
        """Answer requests to ``path`` with ``status`` (None: succeed again)."""
        with self._lock:
            if status is None:
                self._fail.pop(path, None)
            else:
                self._fail[path] = status

    def hold(self) -> None:
        """Leave the next request unanswered until ``release`` (or the deadline)."""
        with self._lock:
            self._hold_next = True
            self._release.clear()
            self.holding.clear()

    def release(self) -> None:
        self._release.set()

    def _arrive(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        path = handler.path.lstrip("/")
        with self._lock:
            held, self._hold_next = self._hold_next, False
            status = self._fail.get(path, 200)
            arrival = Arrival(
                path,
                str(body.get("title", "")),
                str(body.get("message", "")),
                str(body.get("type", "")),
                held=held,
                status=status,
            )
            self.arrivals.append(arrival)
        if held:
            self.holding.set()
            self._release.wait(DEADLINE)
        try:
            handler.send_response(status)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
        except OSError:
            pass  # the sender is gone

    # -- what arrived -------------------------------------------------------------------------

    def accepted(self, path: str | None = None) -> list[Arrival]:
        with self._lock:
            return [a for a in self.arrivals if a.accepted and (path is None or a.path == path)]

    def keys(self, path: str | None = None) -> Counter[str]:
        """Event keys in accepted messages, with how often each came."""
        return Counter(k for a in self.accepted(path) for k in a.keys)

    def wait_for(self, predicate: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
        return poll(predicate, what, timeout, interval=0.01)

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
