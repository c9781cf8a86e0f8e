"""When a daemon's passes run: ``--every``/``--cron`` for every source, or a source's own.

Passes start at a random moment in the first tenth of their period (at most a second in):
``_jitter``. Interval schedules are aligned on a fixed epoch, not on the moment the daemon
started, so that replicas started at different times agree on the periods
(``Schedule.period_start``): each claims a source once per period
(``jobsync.storage.coordination``). Their clocks must agree to well within a period (NTP does
that).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from jobsync.config import Source
from jobsync.errors import ConfigError

__all__ = ["MIN_INTERVAL", "Schedule", "cron", "every", "source_schedule"]

MIN_INTERVAL = 0.1  # seconds; anything shorter is a busy loop, not a schedule
_CRON_LOOKAHEAD = 10  # fire times examined to find a cron schedule's longest gap
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
JITTER_SHARE = 0.1  # of the interval, and at most JITTER_MAX seconds: see _jitter
JITTER_MAX = 1.0


@dataclass(frozen=True)
class Schedule:
    """When passes run. ``interval`` is the gap between passes in seconds (for a cron
    expression: the longest gap among its next runs), which sizes the misfire grace time
    and the health window. ``period_start(now)`` is when the period holding ``now`` began."""

    trigger: BaseTrigger
    interval: float
    description: str
    period_start: Callable[[datetime], datetime]


def every(seconds: float, what: str = "--every") -> Schedule:
    """A pass every ``seconds`` (fractions allowed, at least :data:`MIN_INTERVAL`)."""
    if not math.isfinite(seconds) or seconds < MIN_INTERVAL:
        raise ConfigError(f"{what} must be at least {MIN_INTERVAL:g}s, not {seconds:g}s")
    step = timedelta(seconds=seconds)

    # Whole microseconds, as APScheduler computes the fire times: a pass fired at a period's
    # start (never before it) falls in that period.
    def period_start(now: datetime) -> datetime:
        return EPOCH + step * ((now - EPOCH) // step)

    trigger = IntervalTrigger(
        seconds=seconds, start_date=EPOCH, timezone=UTC, jitter=_jitter(seconds)
    )
    return Schedule(trigger, seconds, f"every {seconds:g}s", period_start)


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
    trigger = CronTrigger.from_crontab(expression, timezone=UTC)
    trigger.jitter = _jitter(min(gaps))

    def period_start(now: datetime) -> datetime:
        # The latest fire time at or before now (a cron fire time is a whole second).
        began = now - timedelta(seconds=gap + 1)
        latest = began
        for fire in _fire_times(plain, began, _CRON_LOOKAHEAD + 2):
            if fire > now:
                break
            latest = fire
        return latest

    return Schedule(trigger, gap, f"cron {expression!r} (UTC)", period_start)


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
    """Each pass starts up to this much after its period begins, at random: the sources of a
    daemon do not all send their first request at the same instant, and replicas racing for
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
