"""Deciding what one pass changes: pure functions from (stored jobs, snapshot) to a plan.

No database and no HTTP here, so every rule is testable on plain values:

- a job not seen before gets a ``first_seen`` transition; its window starts at the beginning of
  the latest *complete* snapshot of the source (which did not list it), or is unknown (NULL);
- a change of canonical state gets a ``change`` transition whose window starts when the pass
  that last listed the job in the old state began, and ends when this pass saw the new state;
- a job missing from two consecutive complete snapshots gets a ``vanished`` transition, and a
  vanished job that is listed again gets a ``reappeared`` one;
- anything else that differs (raw state spelling, progress, reason, collection) updates the
  job's row without history; a job that did not change at all costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple

from jobsync.domain.facts import duration_bounds, is_backlog, micros
from jobsync.domain.records import JobRecord, Snapshot
from jobsync.domain.states import FAILED, TERMINAL_STATES, canonical_state

__all__ = [
    "JobRow",
    "NewJob",
    "PassPlan",
    "SourceMarks",
    "StoredJob",
    "first_seen_state",
    "new_job",
    "plan_pass",
]

VANISH_AFTER = 2


class StoredJob(NamedTuple):
    """One stored job as loaded for planning (timestamps only where the job is not listed)."""

    job_id: str
    collection_name: str | None
    state: str
    raw_state: str | None
    progress: int | None
    reason: str | None
    listed: bool
    missed_snapshots: int
    vanished: bool
    finished: bool
    last_seen_at: datetime | None
    last_seen_started_at: datetime | None
    missing_since: datetime | None
    # What the job's duration needs if it finishes in this pass (jobsync.domain.facts).
    first_seen_at: datetime | None = None
    created_window_start: datetime | None = None
    backlog: bool = False


def new_job(record: JobRecord, first_seen_window: datetime | None = None) -> NewJob:
    """The row values of a job this pass lists for the first time, when the latest complete
    pass began at ``first_seen_window``."""
    state, terminal, failed = first_seen_state(record.raw_state)
    observed_at = record.observed_at
    return NewJob(
        record.job_id,
        record.collection_name,
        state,
        record.raw_state,
        record.progress,
        record.reason,
        observed_at,
        observed_at if terminal else None,
        record.reason if failed else None,
        is_backlog(state, first_seen_window),
    )


@lru_cache(maxsize=256)
def first_seen_state(raw_state: str | None) -> tuple[str, bool, bool]:
    """Canonical state, finished?, failed? A first sync asks this of every job, and the API
    knows a handful of states."""
    # A job first seen already finished is taken to have finished when it was seen.
    state = canonical_state(raw_state)
    return state, state in TERMINAL_STATES, state == FAILED


@dataclass(slots=True)
class JobRow:
    """What the planner needs of one stored job, plus the new values it decides on.

    Timestamps of a job that the latest pass listed are not loaded (``None``): the view takes
    its ``last_seen_at`` from the source, so no rule compares them, and a re-sync reads only
    what it compares. ``state_since`` and ``finished_at`` are ``None`` unless this pass sets
    them; the writer then keeps what is stored.
    """

    job_id: str
    collection_name: str | None
    state: str
    raw_state: str | None
    progress: int | None
    reason: str | None
    listed: bool
    missed_snapshots: int
    vanished: bool
    finished: bool
    last_seen_at: datetime | None = None
    last_seen_started_at: datetime | None = None
    missing_since: datetime | None = None
    vanished_at: datetime | None = None
    first_seen_at: datetime | None = None
    state_since: datetime | None = None
    finished_at: datetime | None = None
    # Set with finished_at, when the job first finishes (jobsync.domain.facts): the writer
    # keeps what is stored otherwise.
    final_state: str | None = None
    finished_window_start: datetime | None = None
    created_window_start: datetime | None = None
    backlog: bool = False
    min_seconds: float | None = None
    max_seconds: float | None = None
    estimated_seconds: float | None = None

    @property
    def state_since_us(self) -> int | None:
        return micros(self.state_since)

    @property
    def last_seen_us(self) -> int | None:
        return micros(self.last_seen_at)

    @classmethod
    def from_stored(cls, stored: StoredJob) -> JobRow:
        return cls(**stored._asdict())


class NewJob(NamedTuple):
    """What a job listed for the first time contributes of its own to its row and its
    ``first_seen`` transition; the rest is the same for every new job of a pass (``PassPlan``).
    The plain statement of the rule: the writers expand records at speed instead
    (``jobsync.storage.rows``), and tests prove the two equal."""

    job_id: str
    collection_name: str | None
    state: str
    raw_state: str | None
    progress: int | None
    reason: str | None
    observed_at: datetime
    # observed_at when the job is already finished, else None.
    finished_at: datetime | None
    # The reason recorded on the transition: only a failure keeps one.
    failure_reason: str | None
    # Whether its start was not observed (jobsync.domain.facts).
    backlog: bool


@dataclass(frozen=True, slots=True)
class SourceMarks:
    """What ``sync_sources`` remembers about the source's previous passes."""

    last_snapshot_started_at: datetime | None = None
    last_snapshot_at: datetime | None = None
    last_complete_started_at: datetime | None = None
    # The latest applied pass: a pass that began before it may not write (jobsync.domain.fencing).
    last_run_id: int | None = None


@dataclass
class PassPlan:
    """Rows to write for one pass: new jobs, jobs that changed, and their transitions.

    A new job's row takes ``last_seen_at``/``last_seen_started_at`` from the snapshot and its
    ``first_seen`` transition starts at ``first_seen_window``: the writer spells those rows out
    from ``new`` (see ``new_job``).
    """

    run_id: int
    first_seen_window: datetime | None
    seen_started_at: datetime
    seen_at: datetime
    # Records, not rows: a first sync of a million jobs must not hold a second copy of them.
    # The writer expands each as it writes it (``new_job`` states how).
    new: list[JobRecord] = field(default_factory=list)
    updates: list[JobRow] = field(default_factory=list)
    # Transitions of jobs already stored; new jobs' first_seen ones are implied by ``new``.
    transitions: list[dict[str, Any]] = field(default_factory=list)
    changed_jobs: int = 0
    vanished_jobs: int = 0
    # Stored jobs the list now gives another collection: (job_id, the collection they had).
    # Their figures in the daily tables move with them (jobsync.storage.facts).
    recollected: list[tuple[str, str | None]] = field(default_factory=list)

    @property
    def new_jobs(self) -> int:
        return len(self.new)

    @property
    def rows_written(self) -> int:
        return 2 * len(self.new) + len(self.updates) + len(self.transitions)


def plan_pass(
    stored: Mapping[str, StoredJob],
    snapshot: Snapshot,
    marks: SourceMarks,
    run_id: int,
) -> PassPlan:
    """Compare the snapshot with the stored jobs and return what must be written.

    ``stored`` must hold every job of the source that is not vanished, and any vanished job
    that the snapshot lists. Or, after ``triage``: the jobs it says to load, with a snapshot
    narrowed to the listed jobs among those and its ``unknown`` ones (the rest are unchanged).
    """
    plan = PassPlan(
        run_id=run_id,
        first_seen_window=marks.last_complete_started_at,
        seen_started_at=snapshot.started_at,
        seen_at=snapshot.finished_at,
    )
    if not stored:
        # Nothing stored (a first sync) or nothing loaded by triage: the snapshot holds only
        # new jobs, and no stored job can change.
        plan.new.extend(snapshot.jobs.values())
        return plan
    new = plan.new.append
    for job_id, record in snapshot.jobs.items():
        known = stored.get(job_id)
        if known is None:
            new(record)
        else:
            # Writes only what differs: an unchanged job (triage has already skipped most)
            # adds no row and no transition.
            _plan_listed(plan, JobRow.from_stored(known), record, snapshot, marks, run_id)
    _plan_unlisted(plan, _unlisted(stored, snapshot), snapshot, marks, run_id)
    return plan


def _transition(
    kind: str,
    job_id: str,
    run_id: int,
    *,
    from_state: str | None,
    to_state: str | None,
    raw_from: str | None,
    raw_to: str | None,
    window_start: datetime | None,
    observed_at: datetime,
    reason: str | None = None,
) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "kind": kind,
        "from_state": from_state,
        "to_state": to_state,
        "raw_from_state": raw_from,
        "raw_to_state": raw_to,
        "window_start": window_start,
        "observed_at": observed_at,
        "sync_run_id": run_id,
        "reason": reason,
    }


def _listed_transition(
    kind: str, row: JobRow, record: JobRecord, run_id: int, window_start: datetime | None
) -> dict[str, Any]:
    """A transition from the stored row to what the record shows (``change``, ``reappeared``)."""
    state = canonical_state(record.raw_state)
    return _transition(
        kind,
        row.job_id,
        run_id,
        from_state=row.state,
        to_state=state,
        raw_from=row.raw_state,
        raw_to=record.raw_state,
        window_start=window_start,
        observed_at=record.observed_at,
        reason=record.reason if state == FAILED else None,
    )


def _plan_listed(
    plan: PassPlan,
    row: JobRow,
    record: JobRecord,
    snapshot: Snapshot,
    marks: SourceMarks,
    run_id: int,
) -> None:
    state = canonical_state(record.raw_state)
    seen = record.observed_at
    dirty = False
    # The latest moment the job was known to be in its stored state: the start of the window
    # of a change (for a vanished job too, whose last_seen_started_at froze when it went).
    was_listed_at = marks.last_snapshot_started_at if row.listed else row.last_seen_started_at
    if row.vanished:
        # It was absent from the latest complete snapshot, so it was not listed then.
        plan.transitions.append(
            _listed_transition("reappeared", row, record, run_id, marks.last_complete_started_at)
        )
        row.vanished = False
        row.vanished_at = None
        dirty = True
    elif state != row.state:
        plan.transitions.append(_listed_transition("change", row, record, run_id, was_listed_at))
        plan.changed_jobs += 1
        dirty = True
    if state != row.state:
        row.state = state
        row.state_since = seen
        if state in TERMINAL_STATES and not row.finished:
            row.finished = True
            row.finished_at = seen
            row.final_state = state
            row.finished_window_start = was_listed_at
            if row.first_seen_at is not None:
                # Its complete_time, if the API gives one, comes with the details, after this.
                row.min_seconds, row.max_seconds, row.estimated_seconds = duration_bounds(
                    row.created_window_start, row.first_seen_at, was_listed_at, seen, None
                )
    if (row.raw_state, row.collection_name, row.progress, row.reason) != (
        record.raw_state,
        record.collection_name,
        record.progress,
        record.reason,
    ):
        row.raw_state = record.raw_state
        if row.collection_name != record.collection_name:
            plan.recollected.append((row.job_id, row.collection_name))
        row.collection_name = record.collection_name
        row.progress = record.progress
        row.reason = record.reason
        dirty = True
    if not row.listed or row.missed_snapshots or row.missing_since is not None:
        row.listed = True
        row.missed_snapshots = 0
        row.missing_since = None
        dirty = True
    if dirty:
        row.last_seen_at = snapshot.finished_at
        row.last_seen_started_at = snapshot.started_at
        plan.updates.append(row)


def _unlisted(stored: Mapping[str, StoredJob], snapshot: Snapshot) -> Iterable[JobRow]:
    listed = snapshot.jobs
    return (
        JobRow.from_stored(known)
        for job_id, known in stored.items()
        if not known.vanished and job_id not in listed
    )


def _plan_unlisted(
    plan: PassPlan,
    rows: Iterable[JobRow],
    snapshot: Snapshot,
    marks: SourceMarks,
    run_id: int,
) -> None:
    for row in rows:
        dirty = False
        if row.listed:
            # Freeze last_seen_at: from now on the view can no longer take it from the source.
            row.listed = False
            row.last_seen_at = marks.last_snapshot_at
            row.last_seen_started_at = marks.last_snapshot_started_at
            dirty = True
        if snapshot.complete:
            row.missed_snapshots += 1
            if row.missing_since is None:
                row.missing_since = snapshot.finished_at
            if row.missed_snapshots >= VANISH_AFTER:
                row.vanished = True
                row.vanished_at = snapshot.finished_at
                plan.transitions.append(
                    _transition(
                        "vanished",
                        row.job_id,
                        run_id,
                        from_state=row.state,
                        to_state=None,
                        raw_from=row.raw_state,
                        raw_to=None,
                        window_start=row.last_seen_started_at,
                        observed_at=row.missing_since or snapshot.finished_at,
                    )
                )
                plan.vanished_jobs += 1
            dirty = True
        if dirty:
            plan.updates.append(row)
