"""A job's facts for reporting: whether its start was observed, and how long it took.

Pure functions on plain values. The pass computes them as it writes a job (``jobsync.storage``
keeps them on the job's row), and ``job_facts`` recomputes them from a job's whole history: the
migration that introduced them fills them in with it, and tests require the two to agree.

The rules:

- **backlog**: a job's start was observed when it was first seen ``Pending`` or ``Importing``
  by a pass after its source's first complete pass (its ``first_seen`` window is known);
  every other job came with the backlog (listed by the first passes, or first seen already
  finished), and duration statistics leave it out.
- **finish**: the first time a pass saw the job ``Completed`` or ``Failed`` (as
  ``import_job_records.finished_at`` says): ``final_state``, and the window start of that
  transition. A ``reappeared`` transition into a new state takes the window start of the
  ``vanished`` transition before it (the last pass that listed the job in the old state).
- **duration bounds**, once finished: the finish lies in ``[f_lo, f_hi]``, which is the
  ``complete_time`` alone when the API gave one inside the finish window, else the window;
  the creation lies in ``(created_window_start, created_at]``. ``min`` is ``f_lo - created_at``
  (0 when below 0 or ``f_lo`` is unknown), ``max`` is ``f_hi - created_window_start`` (unknown
  without a creation window), and the **estimate is the midpoint of ``[min, max]``** (unknown
  when ``max`` is). For an ordinary job that is the difference of the two windows' midpoints;
  for a job created and finished between two passes, half the window.
- Seconds are exact microsecond differences rounded half away from zero to the millisecond,
  as the views of revision 0004 rounded them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple

from jobsync.domain.states import IMPORTING, PENDING, TERMINAL_STATES

__all__ = [
    "EPOCH",
    "Durations",
    "JobFacts",
    "Move",
    "duration_bounds",
    "is_backlog",
    "job_facts",
    "micros",
    "nearest_rank",
    "rounded_seconds",
    "utc_day",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_OBSERVED_STARTS = frozenset({PENDING, IMPORTING})


def micros(moment: datetime | None) -> int | None:
    """Integer microseconds since the epoch (exact, unlike a float timestamp)."""
    if moment is None:
        return None
    return _us(moment - EPOCH)


def _us(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def rounded_seconds(us: int, per: int = 1) -> float:
    """Seconds from ``us`` units of 1/``per`` microsecond, rounded half away from zero to the
    millisecond in integer arithmetic before the one division."""
    half, whole = 500 * per, 1000 * per
    milliseconds = (us + half) // whole if us >= 0 else -((half - us) // whole)
    return milliseconds / 1000


def utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def is_backlog(first_state: str, first_seen_window: datetime | None) -> bool:
    return first_seen_window is None or first_state not in _OBSERVED_STARTS


class Durations(NamedTuple):
    min_seconds: float | None
    max_seconds: float | None
    estimated_seconds: float | None


NO_DURATIONS = Durations(None, None, None)


def duration_bounds(
    created_window_start: datetime | None,
    created_at: datetime,
    finished_window_start: datetime | None,
    finished_at: datetime | None,
    complete_time: datetime | None,
) -> Durations:
    """The bounds and estimate of a job's duration (see the module docstring); all None while
    it is unfinished."""
    if finished_at is None:
        return NO_DURATIONS
    if (
        complete_time is not None
        and complete_time <= finished_at
        and (finished_window_start is None or complete_time >= finished_window_start)
    ):
        lo: datetime | None = complete_time
        hi = complete_time
    else:
        lo, hi = finished_window_start, finished_at
    min_us = 0 if lo is None else max(0, _us(lo - created_at))
    if created_window_start is None:
        return Durations(rounded_seconds(min_us), None, None)
    max_us = _us(hi - created_window_start)
    return Durations(
        rounded_seconds(min_us), rounded_seconds(max_us), rounded_seconds(min_us + max_us, 2)
    )


class Move(NamedTuple):
    """One history row of a job, in the order it was recorded."""

    kind: str
    from_state: str | None
    to_state: str | None
    window_start: datetime | None
    observed_at: datetime


class JobFacts(NamedTuple):
    backlog: bool
    created_window_start: datetime | None
    created_at: datetime
    final_state: str | None
    finished_window_start: datetime | None
    finished_at: datetime | None


def job_facts(moves: Sequence[Move]) -> JobFacts | None:
    """A job's facts from its history (None: it has no ``first_seen``)."""
    first = next((m for m in moves if m.kind == "first_seen"), None)
    if first is None or first.to_state is None:
        return None
    final: tuple[str, datetime | None, datetime] | None = None
    vanished_window: datetime | None = None
    previous: Move | None = None
    for move in moves:
        if final is None and move.to_state in TERMINAL_STATES:
            if move.kind in ("first_seen", "change"):
                final = (move.to_state, move.window_start, move.observed_at)
            elif move.kind == "reappeared" and move.to_state != move.from_state:
                window = vanished_window if previous and previous.kind == "vanished" else None
                final = (move.to_state, window if window else move.window_start, move.observed_at)
        if move.kind == "vanished":
            vanished_window = move.window_start
        previous = move
    return JobFacts(
        is_backlog(first.to_state, first.window_start),
        first.window_start,
        first.observed_at,
        *(final or (None, None, None)),
    )


def nearest_rank(values: Iterable[float], percent: int) -> float | None:
    """The nearest-rank percentile: the ceil(percent * n / 100)-th smallest value."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[(percent * len(ordered) + 99) // 100 - 1]
