"""When a daemon's passes run: ``--every``/``--cron`` for every source, or a source's own.

Periods are the same for every process: interval schedules are aligned on a fixed epoch, not on
the moment the daemon started, and a cron period begins at each fire time
(``Schedule.period_start``). Replicas started at different times so agree on them, and each
claims a source once per period (``jobsync.storage.coordination``). Their clocks must agree to
well within a period (NTP does that).

A source's pass is due once in every period (``Schedule.trigger_at``), at the same moment of
each: on an interval schedule, the daemon's sources are spread evenly over the first
:data:`SPREAD_SHARE` of the period (``spread``), so that they do not all queue for the API's
rate budget at its start; a cron source is due at its fire times. To that a small random
``_jitter`` is added afresh each period, so that replicas racing for a claim each win about as
often. APScheduler's own jitter is not used: it adds each period's to the previous fire time,
jitter included, so a pass would walk forward through its period, about half the jitter each
time, and skip a period whenever it walked past one's end.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger

from jobsync.config import Source
from jobsync.errors import ConfigError

__all__ = ["MIN_INTERVAL", "SPREAD_SHARE", "Schedule", "cron", "every", "source_schedule", "spread"]

MIN_INTERVAL = 0.1  # seconds; anything shorter is a busy loop, not a schedule
_CRON_LOOKAHEAD = 10  # fire times examined to find a cron schedule's longest gap
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
JITTER_SHARE = 0.1  # of the (shortest) interval, and at most JITTER_MAX seconds: see _jitter
JITTER_MAX = 1.0
INTERVAL_JITTER_MAX = 0.1  # enough to vary which replica claims first; the spread does the rest
# Interval sources are due within this share of their period (``spread``); the rest, less the
# jitter, is left for the last ones to start before the next period begins.
SPREAD_SHARE = 0.8


@dataclass(frozen=True)
class Schedule:
    """When passes run. ``interval`` is the gap between passes in seconds (for a cron
    expression: the longest gap among its next runs), which sizes the misfire grace time
    and the health window. ``period_start(now)`` is when the period holding ``now`` began;
    ``next_start(moment)`` when the first period after ``moment`` begins. ``spreads``: its
    sources are spread over the period (intervals), else due as it begins (cron)."""

    interval: float
    description: str
    period_start: Callable[[datetime], datetime]
    next_start: Callable[[datetime], datetime | None]
    jitter: float
    spreads: bool
    shortest: float  # the shortest gap between two periods

    @property
    def trigger(self) -> BaseTrigger:
        """Due as each period begins (plus the jitter)."""
        return self.trigger_at(0.0)

    def trigger_at(self, share: float) -> BaseTrigger:
        """Due once in every period, ``share`` (0 to 1) of :data:`SPREAD_SHARE` of the
        period after it begins where the schedule spreads its sources (plus the jitter)."""
        offset = share * SPREAD_SHARE * self.shortest if self.spreads else 0.0
        return _OncePerPeriod(self, timedelta(seconds=offset))


class _OncePerPeriod(BaseTrigger):  # type: ignore[misc]  # APScheduler is untyped
    """Fires at ``offset`` into every period of ``schedule``, plus up to its jitter.

    The period of a fire time is found again from the time itself (``period_start``): the
    offset and the jitter together stay within the shortest period, so no period is skipped
    or fired twice, however late the process woke up each time.
    """

    def __init__(self, schedule: Schedule, offset: timedelta) -> None:
        self._schedule = schedule
        self._offset = offset

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        schedule, offset = self._schedule, self._offset
        start: datetime | None
        if previous_fire_time is None:
            start = schedule.period_start(now - offset)
            if start + offset < now:
                start = schedule.next_start(start)
        else:
            # The period after the previous run's. After the pass at start-up (no fire time of
            # this trigger), that skips the rest of the start-up's period: one pass in it.
            start = schedule.next_start(schedule.period_start(previous_fire_time))
        if start is None:
            return None
        return start + offset + timedelta(seconds=random.uniform(0, schedule.jitter))

    def __str__(self) -> str:
        return f"{self._schedule.description}, {self._offset.total_seconds():g}s in"


def spread(keys: Iterable[str], schedules: dict[str, Schedule]) -> dict[str, float]:
    """Each source's share (0 to 1) of the spread of its period: the sources of one interval
    evenly, in the order of a stable hash of their keys (the same in every replica with the
    same sources; replicas that disagree still claim once per period, only less evenly)."""
    groups: dict[float, list[str]] = {}
    for key in keys:
        groups.setdefault(schedules[key].interval, []).append(key)
    shares: dict[str, float] = {}
    for group in groups.values():
        group.sort(key=lambda k: hashlib.blake2b(k.encode("utf-8"), digest_size=8).digest())
        shares.update((key, rank / len(group)) for rank, key in enumerate(group))
    return shares


def every(seconds: float, what: str = "--every") -> Schedule:
    """A pass every ``seconds`` (fractions allowed, at least :data:`MIN_INTERVAL`)."""
    if not math.isfinite(seconds) or seconds < MIN_INTERVAL:
        raise ConfigError(f"{what} must be at least {MIN_INTERVAL:g}s, not {seconds:g}s")
    step = timedelta(seconds=seconds)

    # Whole microseconds, as APScheduler computes the fire times: a pass fired at a period's
    # start (never before it) falls in that period.
    def period_start(now: datetime) -> datetime:
        return EPOCH + step * ((now - EPOCH) // step)

    def next_start(moment: datetime) -> datetime:
        return period_start(moment) + step

    jitter = min(_jitter(seconds), INTERVAL_JITTER_MAX)
    return Schedule(seconds, f"every {seconds:g}s", period_start, next_start, jitter, True, seconds)


def cron(expression: str, what: str = "--cron") -> Schedule:
    """Passes at the times a five-field crontab expression names, in UTC."""
    try:
        # Without jitter: what the periods are computed from (every replica agrees on them).
        plain = CronTrigger.from_crontab(expression, timezone=UTC)
    except ValueError as exc:
        raise ConfigError(
            f"{what} {expression!r} is not a crontab expression "
            f'(minute hour day month weekday, e.g. "*/5 * * * *"): {exc}'
        ) from None
    times = _fire_times(plain, datetime.now(UTC), _CRON_LOOKAHEAD + 1)
    if len(times) < 2:
        raise ConfigError(f"{what} {expression!r} never fires (or fires only once)")
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    gap = max(gaps)

    def period_start(now: datetime) -> datetime:
        # The latest fire time at or before now (a cron fire time is a whole second).
        began = now - timedelta(seconds=gap + 1)
        latest = began
        for fire in _fire_times(plain, began, _CRON_LOOKAHEAD + 2):
            if fire > now:
                break
            latest = fire
        return latest

    def next_start(moment: datetime) -> datetime | None:
        # A cron fire time is a whole second: the first one after ``moment``.
        fire: datetime | None = plain.get_next_fire_time(None, moment + timedelta(microseconds=1))
        return fire

    shortest = min(gaps)
    return Schedule(
        gap,
        f"cron {expression!r} (UTC)",
        period_start,
        next_start,
        _jitter(shortest),
        False,
        shortest,
    )


def source_schedule(source: Source, default: Schedule | None) -> Schedule:
    """The source's own schedule (``every``/``cron`` in the config file), else ``default``
    (ConfigError if there is none)."""
    where = f"source {source.name!r}:"
    if source.every is not None:
        return every(source.every, f"{where} every")
    if source.cron is not None:
        return cron(source.cron, f"{where} cron")
    if default is None:
        raise ConfigError(
            f"source {source.name!r} has no schedule of its own: give --every or --cron"
        )
    return default


def _jitter(interval: float) -> float:
    """Each pass starts up to this much after its due moment, at random: the sources of a cron
    schedule do not all send their first request at the same instant, and replicas racing for
    a period's claims win about as often as each other."""
    return min(interval * JITTER_SHARE, JITTER_MAX)


def _fire_times(trigger: CronTrigger, start: datetime, count: int) -> list[datetime]:
    times: list[datetime] = []
    moment = start
    previous: datetime | None = None
    for _ in range(count):
        fire = trigger.get_next_fire_time(previous, moment)
        if fire is None:
            break
        times.append(fire)
        previous = moment = fire
    return times
