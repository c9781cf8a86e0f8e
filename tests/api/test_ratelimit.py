"""The rate limiter under an injected clock: never more than the limit in any window."""

from __future__ import annotations

import itertools
import threading

import pytest

from jobsync.api.ratelimit import RateLimiter, RateLimiters
from jobsync.errors import Cancelled
from jobsync.observability.redact import Secret


class FakeTime:
    """A clock that only moves when someone sleeps: a sleeper wakes at its deadline or later.

    Concurrent sleepers push the clock to the latest deadline, so threads wake up late and
    bunch up, as they do on a busy machine: the worst case for a limiter.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def clock(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds


def most_in_a_window(times: list[float], window: float) -> int:
    times = sorted(times)
    most, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - window:
            start += 1
        most = max(most, end - start + 1)
    return most


def test_eight_concurrent_callers_never_exceed_the_limit_in_any_second():
    fake = FakeTime()
    limiter = RateLimiter(20, 1.0, clock=fake.clock, sleep=fake.sleep)
    granted: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def caller() -> None:
        start.wait()
        for _ in range(40):
            moment = limiter.acquire()
            with lock:
                granted.append(moment)

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert len(granted) == 320
    assert most_in_a_window(granted, 1.0) <= 20
    assert fake.sleeps  # they did have to wait


def test_late_wake_ups_do_not_let_requests_bunch_up():
    # Every 7th sleep overshoots by 90 ms: without the window over actual send times, the late
    # request and the ten on time after it would all go within one second.
    now = [0.0]
    calls = [0]

    def sleep(seconds: float) -> None:
        calls[0] += 1
        now[0] += seconds + (0.09 if calls[0] % 7 == 0 else 0.0)

    limiter = RateLimiter(10, 1.0, clock=lambda: now[0], sleep=sleep)
    granted = [limiter.acquire() for _ in range(100)]
    assert granted == sorted(granted)
    assert most_in_a_window(granted, 1.0) <= 10
    assert most_in_a_window(granted, 1.0 + RateLimiter.MARGIN - 1e-9) <= 10  # and the margin


def test_one_caller_is_spaced_evenly_with_the_margin():
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    limiter = RateLimiter(20, 1.0, clock=lambda: now[0], sleep=sleep)
    granted = [limiter.acquire() for _ in range(41)]
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(granted)}
    assert gaps == {round(1.0 / 20 * (1 + RateLimiter.MARGIN), 9)}


def test_a_stop_request_ends_the_wait_for_a_slot():
    stop = threading.Event()
    limiter = RateLimiter(1, 3600.0)  # one request an hour, in real time
    limiter.acquire(stop)
    outcome: list[BaseException] = []

    def waiter() -> None:
        try:
            limiter.acquire(stop)
        except Cancelled as exc:
            outcome.append(exc)

    thread = threading.Thread(target=waiter)
    thread.start()
    stop.set()
    thread.join(timeout=10)  # a deadline: without the stop it would wait an hour
    assert not thread.is_alive() and len(outcome) == 1
    with pytest.raises(Cancelled):
        limiter.acquire(stop)


def test_limiters_are_shared_per_key_and_endpoint_with_the_injected_clock():
    fake = FakeTime()
    limiters = RateLimiters(2, 1.0, clock=fake.clock, sleep=fake.sleep)
    key = Secret("k1")
    a = limiters.limiter(key, "https://a", "/list")
    assert limiters.limiter(key, "https://b", "/list") is a  # the key, not the URL, is shared
    assert limiters.limiter(key, "https://a", "/describe") is not a
    assert limiters.limiter(Secret("k2"), "https://a", "/list") is not a
    acquire = limiters.for_key(key, "https://a")
    for _ in range(3):
        acquire("/list")
    assert fake.sleeps and fake.now >= 1.0  # the third of two per second had to wait


def test_a_limit_must_be_positive():
    with pytest.raises(ValueError):
        RateLimiter(0)
