"""The rows jobsync writes, spelled once: columns by name, in the order of the tables.

Column lists come from the ``Table`` objects of ``jobsync.storage.schema``, and values are
taken by name, so that a column added, renamed or moved there cannot silently shift the values
written beside it. Both backends write exactly what this module produces.

A new job's row is decided here for both writers. ``NEW_JOB`` says which columns it sets and
where each value comes from: the pass (the same for every new job of a pass), the job, or a
fixed value; the progress-detail columns stay NULL until ``jobsync.storage.samples`` fills
them. ``new_job_values`` yields each job's own values. ``FIRST_SEEN`` and ``first_seen_values``
do the same for the job's ``first_seen`` transition.

``new_job_values`` and ``first_seen_values`` run once per job of a first sync, so they are
written for speed; ``new_job_row`` and ``first_seen_row`` beside them say the same plainly,
from ``jobsync.domain.history.new_job``, and tests/storage/test_rows.py proves them equal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import Table

from jobsync.domain.facts import is_backlog, micros
from jobsync.domain.history import PassPlan, first_seen_state, new_job
from jobsync.domain.records import JobRecord
from jobsync.storage.schema import UTCDateTime, import_job_records, import_job_transitions

__all__ = [
    "DERIVED_SQL",
    "FIRST_SEEN",
    "NEW_JOB",
    "NEW_JOB_BOUND",
    "TIME_COLUMNS",
    "TRANSITION_COLUMNS",
    "Layout",
    "TimeWriter",
    "first_seen_pass_row",
    "first_seen_row",
    "first_seen_values",
    "in_table_order",
    "new_job_pass_row",
    "new_job_row",
    "new_job_values",
    "transition_values",
]

# Turns a time into what the driver stores (None: the driver takes datetimes as they are).
TimeWriter = Callable[[datetime | None], object]


@dataclass(frozen=True)
class Layout:
    """The columns of ``table`` that one kind of row sets, grouped by where their values come
    from; each group in the table's column order."""

    table: Table
    # The same for every row a pass writes.
    from_pass: tuple[str, ...]
    # Each row's own: what new_job_values and first_seen_values yield, in this order.
    from_job: tuple[str, ...]
    # Columns that take the value of another column of the same row (of from_job).
    same_as: Mapping[str, str]
    # The same for every row.
    fixed: Mapping[str, Any]

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the row sets, in the order of ``full_rows``' values."""
        return (*self.from_pass, *self.from_job, *self.same_as, *self.fixed)

    @property
    def in_table_order(self) -> tuple[str, ...]:
        """Every column the row sets, in the table's order."""
        return in_table_order(self.table, self.columns)

    def pass_values(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """The values of ``from_pass`` (given by name), in that order."""
        return tuple(values[name] for name in self.from_pass)

    def full_rows(
        self, pass_values: tuple[Any, ...], job_values: Iterable[tuple[Any, ...]]
    ) -> Iterator[tuple[Any, ...]]:
        """Whole rows, values of ``columns``: the pass's values, then each job's."""
        head, tail = pass_values, tuple(self.fixed.values())
        if not self.same_as:
            return (head + own + tail for own in job_values)
        at = [self.from_job.index(source) for source in self.same_as.values()]
        # A tuple whatever the count (itemgetter of one index gives the bare value).
        copy = itemgetter(*at) if len(at) > 1 else itemgetter(slice(at[0], at[0] + 1))
        return (head + own + copy(own) + tail for own in job_values)


def in_table_order(table: Table, names: Iterable[str]) -> tuple[str, ...]:
    wanted = set(names)
    unknown = wanted - set(table.c.keys())
    if unknown:
        raise ValueError(f"{table.name} has no column {', '.join(sorted(unknown))}")
    return tuple(column.name for column in table.columns if column.name in wanted)


def _layout(
    table: Table,
    *,
    from_pass: set[str],
    from_job: set[str],
    same_as: Mapping[str, str],
    fixed: Mapping[str, Any],
) -> Layout:
    if not set(same_as.values()) <= from_job:
        raise ValueError("a column can only take the value of one of the row's own")
    return Layout(
        table,
        in_table_order(table, from_pass),
        in_table_order(table, from_job),
        {name: same_as[name] for name in in_table_order(table, same_as)},
        {name: fixed[name] for name in in_table_order(table, fixed)},
    )


# The order in which new_job_values and first_seen_values spell their tuples out by hand;
# the layouts below take their columns from it, in the tables' order.
_NEW_JOB_ORDER = (
    "job_id",
    "collection_name",
    "state",
    "raw_state",
    "progress",
    "reason",
    "first_seen_at",
    "finished_at",
    "backlog",
    "final_state",
    "finished_window_start",
    "min_seconds",
    "state_since_us",
)
_FIRST_SEEN_ORDER = ("job_id", "to_state", "raw_to_state", "observed_at", "reason", "observed_us")

# last_seen_us stays NULL on a new job: the views take the source's while it is listed.
NEW_JOB = _layout(
    import_job_records,
    from_pass={"cluster_id", "last_seen_at", "last_seen_started_at", "created_window_start"},
    from_job=set(_NEW_JOB_ORDER),
    # A new job entered its state when it was first seen.
    same_as={"state_since": "first_seen_at"},
    fixed={"vanished_at": None, "listed": True, "missed_snapshots": 0, "missing_since": None},
)

FIRST_SEEN = _layout(
    import_job_transitions,
    from_pass={"cluster_id", "window_start", "sync_run_id", "window_start_us"},
    from_job=set(_FIRST_SEEN_ORDER),
    same_as={},
    fixed={"kind": "first_seen", "from_state": None, "raw_from_state": None},
)


def new_job_pass_row(cluster_id: str, plan: PassPlan) -> dict[str, Any]:
    """The pass's own values of its new jobs' rows, by column (``NEW_JOB.from_pass``)."""
    return {
        "cluster_id": cluster_id,
        "last_seen_at": plan.seen_at,
        "last_seen_started_at": plan.seen_started_at,
        "created_window_start": plan.first_seen_window,
    }


def first_seen_pass_row(cluster_id: str, plan: PassPlan) -> dict[str, Any]:
    """The pass's own values of its first_seen transitions, by column (``FIRST_SEEN.from_pass``).

    The window starts at the latest complete snapshot, which did not list the jobs.
    """
    return {
        "cluster_id": cluster_id,
        "window_start": plan.first_seen_window,
        "sync_run_id": plan.run_id,
        "window_start_us": micros(plan.first_seen_window),
    }


def new_job_row(record: JobRecord, first_seen_window: datetime | None = None) -> dict[str, Any]:
    """A new job's own values by column (``NEW_JOB.from_job``): the plain statement of what
    ``new_job_values`` yields. A job first seen finished has finished in its ``first_seen``
    window; its duration's upper bound and estimate are filled in after it is written
    (``jobsync.storage.facts``), as are those of every job that finishes."""
    job = new_job(record, first_seen_window)
    finished = job.finished_at is not None
    return {
        "job_id": job.job_id,
        "collection_name": job.collection_name,
        "state": job.state,
        "raw_state": job.raw_state,
        "progress": job.progress,
        "reason": job.reason,
        "first_seen_at": job.observed_at,
        "finished_at": job.finished_at,
        "backlog": job.backlog,
        "final_state": job.state if finished else None,
        "finished_window_start": first_seen_window if finished else None,
        "min_seconds": 0.0 if finished else None,
        "state_since_us": micros(job.observed_at),
    }


def first_seen_row(record: JobRecord) -> dict[str, Any]:
    """A new job's ``first_seen`` transition by column (``FIRST_SEEN.from_job``): the plain
    statement of what ``first_seen_values`` yields."""
    job = new_job(record)
    return {
        "job_id": job.job_id,
        "to_state": job.state,
        "raw_to_state": job.raw_state,
        "observed_at": job.observed_at,
        "reason": job.failure_reason,
        "observed_us": micros(job.observed_at),
    }


# Columns of a new job's row that follow from its other values (as new_job_row says): sent by
# PostgreSQL's writer, computed by SQLite's from what it binds (cheaper than four more values
# per job). ``{name}``: the value of that column of the same row.
DERIVED_SQL = {
    "backlog": "({created_window_start} IS NULL OR {state} NOT IN ('Pending', 'Importing'))",
    "final_state": "CASE WHEN {finished_at} IS NOT NULL THEN {state} END",
    "finished_window_start": "CASE WHEN {finished_at} IS NOT NULL THEN {created_window_start} END",
    "min_seconds": "CASE WHEN {finished_at} IS NOT NULL THEN 0.0 END",
}
NEW_JOB_BOUND = tuple(name for name in _NEW_JOB_ORDER if name not in DERIVED_SQL)

# Checked here against the layouts, so that a change to the tables cannot pass unnoticed.
if NEW_JOB.from_job != _NEW_JOB_ORDER or FIRST_SEEN.from_job != _FIRST_SEEN_ORDER:
    raise RuntimeError("the new-job writers' values are out of step with the tables' columns")


def new_job_values(
    jobs: Iterable[JobRecord],
    time: TimeWriter | None = None,
    first_seen_window: datetime | None = None,
    *,
    derived: bool = True,
) -> Iterator[tuple[Any, ...]]:
    """Per job, the values of ``NEW_JOB.from_job``, in that order (see ``new_job_row``); without
    ``derived``, those of ``NEW_JOB_BOUND`` (leaving out the columns of ``DERIVED_SQL``).

    ``time`` converts each distinct observation time once (a page's jobs share one).
    """
    # Per raw state, what depends on it alone: a dict lookup per job, no call; the API knows
    # a handful of states.
    kinds: dict[str | None, tuple[str, bool, tuple[Any, ...]]] = {}
    window: object = first_seen_window if time is None else time(first_seen_window)
    times: dict[datetime, tuple[object, int | None]] = {}
    for r in jobs:
        raw = r.raw_state
        kind = kinds.get(raw)
        if kind is None:
            state, finished, _failed = first_seen_state(raw)
            facts = (
                (is_backlog(state, first_seen_window), state, window, 0.0)
                if finished
                else (is_backlog(state, first_seen_window), None, None, None)
            )
            kind = kinds[raw] = (state, finished, facts if derived else ())
        seen = times.get(r.observed_at)
        if seen is None:
            at = r.observed_at
            seen = times[at] = (at if time is None else time(at), micros(at))
        # A job first seen already finished is taken to have finished when it was seen.
        yield (
            r.job_id,
            r.collection_name,
            kind[0],
            raw,
            r.progress,
            r.reason,
            seen[0],
            seen[0] if kind[1] else None,
            *kind[2],
            seen[1],
        )


def first_seen_values(
    jobs: Iterable[JobRecord], time: TimeWriter | None = None
) -> Iterator[tuple[Any, ...]]:
    """Per job, the values of ``FIRST_SEEN.from_job``, in that order (see ``first_seen_row``)."""
    kinds: dict[str | None, tuple[str, bool]] = {}
    times: dict[datetime, tuple[object, int | None]] = {}
    for r in jobs:
        raw = r.raw_state
        kind = kinds.get(raw)
        if kind is None:
            state, _finished, failed = first_seen_state(raw)
            kind = kinds[raw] = (state, failed)
        seen = times.get(r.observed_at)
        if seen is None:
            at = r.observed_at
            seen = times[at] = (at if time is None else time(at), micros(at))
        # Only a failure keeps its reason on the transition.
        yield (r.job_id, kind[0], raw, seen[0], r.reason if kind[1] else None, seen[1])


TIME_COLUMNS = frozenset(
    column.name
    for table in (import_job_records, import_job_transitions)
    for column in table.columns
    if isinstance(column.type, UTCDateTime)
)

# The integer microsecond copies of times (revision 0009), last in the table: what each copies.
_MICROS = {"window_start_us": "window_start", "observed_us": "observed_at"}
# Every column of a transition but its generated id.
TRANSITION_COLUMNS = tuple(c.name for c in import_job_transitions.columns if not c.primary_key)


def transition_values(
    cluster_id: str, transitions: Iterable[Mapping[str, Any]], time: TimeWriter | None = None
) -> list[tuple[Any, ...]]:
    """Each transition (the planner's dict, by column name) as values of TRANSITION_COLUMNS;
    the microsecond copies of its times are derived here."""
    derived = {us: at for us, at in _MICROS.items() if us in TRANSITION_COLUMNS}
    names = [name for name in TRANSITION_COLUMNS if name != "cluster_id" and name not in derived]
    at = TRANSITION_COLUMNS.index("cluster_id")
    get = itemgetter(*names)
    timed = [i for i, name in enumerate(TRANSITION_COLUMNS) if name in TIME_COLUMNS]
    found: list[tuple[Any, ...]] = []
    for transition in transitions:
        values = list(get(transition))
        values.insert(at, cluster_id)
        values.extend(micros(transition[source]) for source in derived.values())
        if time is not None:
            for i in timed:
                values[i] = time(values[i])
        found.append(tuple(values))
    return found
