"""Counting request rates: the most requests that started within any sliding window.

The API allows 20 requests per second per user and endpoint; the simulator does not throttle,
it measures, so tests and benchmarks can check that a client stayed under the limit. A window
is half-open, ``(t - window, t]`` for a request starting at ``t``: requests spaced exactly
``window / n`` apart count as ``n`` per window, never ``n + 1``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class _Window:
    starts: deque[float] = field(default_factory=deque)
    peak: int = 0
    total: int = 0

    def add(self, at: float, window: float) -> None:
        starts = self.starts
        starts.append(at)
        while starts[0] <= at - window:
            starts.popleft()
        self.total += 1
        self.peak = max(self.peak, len(starts))


class PeakRate:
    """Peak requests per sliding ``window`` seconds: over all requests, per API key, and per API
    key and endpoint (what the documented limit is about).

    Not thread-safe: the simulator records under its lock. Times must not decrease.
    """

    def __init__(self, window: float = 1.0) -> None:
        if window <= 0:
            raise ValueError("window must be positive")
        self.window = window
        self._all = _Window()
        self._by_key: dict[str | None, _Window] = {}
        self._by_endpoint: dict[tuple[str | None, str], _Window] = {}

    def record(self, key: str | None, at: float, endpoint: str = "") -> None:
        """One request to ``endpoint`` (its path), made with ``key`` (None: no key), started at
        ``at`` seconds."""
        self._all.add(at, self.window)
        self._by_key.setdefault(key, _Window()).add(at, self.window)
        self._by_endpoint.setdefault((key, endpoint), _Window()).add(at, self.window)

    @property
    def peak(self) -> int:
        """The most requests that started within one window, whatever their key."""
        return self._all.peak

    @property
    def total(self) -> int:
        return self._all.total

    def peaks(self) -> dict[str | None, int]:
        """The peak of each key seen (None: requests without a key)."""
        return {key: w.peak for key, w in self._by_key.items()}

    def endpoint_peaks(self) -> dict[tuple[str | None, str], int]:
        """The peak of each (key, endpoint) seen."""
        return {pair: w.peak for pair, w in self._by_endpoint.items()}

    def reset(self) -> None:
        self._all = _Window()
        self._by_key.clear()
        self._by_endpoint.clear()
