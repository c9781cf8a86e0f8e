"""What time it is, in UTC: the one clock that passes, reports and the daemon default to, and
a simulated one for the demo and tests.

Its own module so that commands which only read the database can take it without importing
the HTTP client: their start-up must not pay for requests and urllib3.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

__all__ = ["Clock", "SteppingClock", "utcnow"]

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


class SteppingClock:
    """Simulated time: ``step`` later at every reading, and ahead by any span on ``skip``.

    Passes minutes or hours apart then take no real time, and every reading is later than the
    one before, as a pass needs. Safe to read from the threads of concurrent sources.
    """

    def __init__(self, start: datetime, step: timedelta = timedelta(milliseconds=1)) -> None:
        self._now = start
        self._step = step
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            self._now += self._step
            return self._now

    def skip(self, span: timedelta) -> None:
        with self._lock:
            self._now += span

    @property
    def now(self) -> datetime:
        """The latest reading (or the start), without moving the clock."""
        with self._lock:
            return self._now
