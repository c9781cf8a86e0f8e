"""What a pass checks inside its write transaction before it writes anything.

Two rules keep the history true when the world misbehaves, and neither rests on the sync lock
being held (a session lock can be lost to an idle-session timeout, a terminated backend or a
pooler in transaction mode; a lock file can be removed):

- **The source must not have moved on without the pass.** A pass remembers, when it starts,
  which pass of its source was applied last (``base_run_id``). It may write only while that
  is still the latest applied pass, and only while its own run is still ``running`` (another
  process marks it ``abandoned`` only when it believes it holds the lock). Otherwise a newer
  snapshot was, or is about to be, written, and this older one would move jobs backwards.
- **Time only moves forward in the history.** Every window ends at an observation of this
  pass and may start at the previous pass's; a clock that reads earlier than the source's
  last observation would write windows that end before they start. That holds for every time
  the pass stamped, not only its start: the clock may step back while the list is read
  (``pass_span``). Within a small tolerance the pass's times are moved forward to that
  observation (and the pass says so); beyond it the pass refuses to write. A pass's start and
  end are then taken to span all its observations, so that the next pass's windows start no
  later, and its checks begin no earlier, than any of them.

Pure functions on values read in the transaction: no database, no HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from operator import attrgetter

from jobsync.domain.records import JobDetails, Snapshot
from jobsync.errors import ClockError, SupersededError

__all__ = [
    "CLOCK_TOLERANCE",
    "check_fence",
    "clock_shift",
    "pass_span",
    "shift_pass",
    "spanning",
    "steady_pass",
]

# Steps this small are what NTP or a resumed VM makes; larger ones are a wrong clock.
CLOCK_TOLERANCE = timedelta(seconds=5)
_observed_at = attrgetter("observed_at")


def check_fence(
    run_id: int, status: str | None, base_run_id: int | None, last_run_id: int | None
) -> None:
    """Raise SupersededError unless run ``run_id`` may still write (see the module doc)."""
    if status != "running":
        raise SupersededError(
            f"superseded: pass {run_id} lost its lock; another process marked it "
            f"{status or 'deleted'} while it was fetching; it wrote nothing"
        )
    if last_run_id != base_run_id:
        raise SupersededError(
            f"superseded: pass {last_run_id} of the same source was written while pass "
            f"{run_id} was fetching (its lock was lost); it wrote nothing"
        )


def clock_shift(
    started_at: datetime,
    last_observed_at: datetime | None,
    tolerance: timedelta = CLOCK_TOLERANCE,
) -> timedelta:
    """How far this pass's times must move forward (zero when the clock is fine).

    Raises ClockError when the clock reads earlier than the last observation by more than
    ``tolerance``.
    """
    if last_observed_at is None or started_at >= last_observed_at:
        return timedelta(0)
    step = last_observed_at - started_at
    if step > tolerance:
        raise ClockError(
            f"the clock reads {started_at.isoformat()}, {step.total_seconds():.3f}s earlier "
            f"than this source's last observation at {last_observed_at.isoformat()}: refusing "
            "to write a history that runs backwards (check the system clock)"
        )
    return step


def shift_pass(
    snapshot: Snapshot, details: Mapping[str, JobDetails], shift: timedelta
) -> tuple[Snapshot, dict[str, JobDetails]]:
    """The snapshot and details with every observation time moved ``shift`` later."""
    jobs = {
        job_id: record._replace(observed_at=record.observed_at + shift)
        for job_id, record in snapshot.jobs.items()
    }
    moved = replace(
        snapshot,
        jobs=jobs,
        started_at=snapshot.started_at + shift,
        finished_at=snapshot.finished_at + shift,
    )
    return moved, {
        job_id: replace(sample, sampled_at=sample.sampled_at + shift)
        for job_id, sample in details.items()
    }


def pass_span(snapshot: Snapshot, details: Mapping[str, JobDetails]) -> tuple[datetime, datetime]:
    """The earliest and the latest time the pass stamped: its start and end, each record's
    observation, each detail's sample. A clock stepped back during the pass shows as a time
    earlier than the start, or later than the end."""
    # A page's records share one time: the set stays small.
    times = set(map(_observed_at, snapshot.jobs.values()))
    times.update(sample.sampled_at for sample in details.values())
    times.update((snapshot.started_at, snapshot.finished_at))
    return min(times), max(times)


def spanning(snapshot: Snapshot, earliest: datetime, latest: datetime) -> Snapshot:
    """The snapshot with its start and end widened to ``earliest`` and ``latest``."""
    if snapshot.started_at <= earliest and snapshot.finished_at >= latest:
        return snapshot
    return replace(
        snapshot,
        started_at=min(snapshot.started_at, earliest),
        finished_at=max(snapshot.finished_at, latest),
    )


def steady_pass(
    snapshot: Snapshot,
    details: Mapping[str, JobDetails],
    last_observed_at: datetime | None,
    tolerance: timedelta = CLOCK_TOLERANCE,
) -> tuple[Snapshot, Mapping[str, JobDetails], timedelta]:
    """The pass's snapshot and details under the clock rule, and how far their times moved.

    Every time the pass stamped is moved forward to the source's last observation when it
    reads earlier (ClockError beyond ``tolerance``; zero shift when the clock is fine), and
    the pass's start and end span all of its observations.
    """
    earliest, latest = pass_span(snapshot, details)
    shift = clock_shift(earliest, last_observed_at, tolerance)
    if shift:
        snapshot, details = shift_pass(snapshot, details, shift)
    return spanning(snapshot, earliest + shift, latest + shift), details, shift
