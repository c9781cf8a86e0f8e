"""What time it is, in UTC: the one clock that passes, reports and the daemon default to.

Its own module so that commands which only read the database can take it without importing
the HTTP client: their start-up must not pay for requests and urllib3.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["Clock", "utcnow"]

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)
