"""The rows jobsync writes are spelled once (``jobsync.storage.rows``): the hand-tuned value
generators say exactly what their plain statements say, and every value lands in the column
of its name."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jobsync.domain import states
from jobsync.domain.history import JobRow, PassPlan
from jobsync.domain.records import JobRecord
from jobsync.storage.backends.sqlite import SQLITE, utc_text
from jobsync.storage.rows import (
    FIRST_SEEN,
    NEW_JOB,
    NEW_JOB_BOUND,
    TRANSITION_COLUMNS,
    first_seen_pass_row,
    first_seen_row,
    first_seen_values,
    new_job_pass_row,
    new_job_row,
    new_job_values,
    transition_values,
)
from jobsync.storage.schema import import_job_records, import_job_transitions
from jobsync.storage.updates import UPDATED_COLUMNS, update_sql, update_values

T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def _records() -> list[JobRecord]:
    """Every state spelling the APIs are known to send, an unknown one and none; with and
    without progress and reason; two observation times."""
    spellings: list[str | None] = [*sorted(states._VARIANTS), "NotAState", "failed", None]
    extras = ((None, None), (40, "bad file"), (0, "tab\tand é"))
    return [
        JobRecord(f"j{i:02d}{k}", f"coll{k}", raw, progress, reason, T0 + timedelta(seconds=k))
        for i, raw in enumerate(spellings)
        for k, (progress, reason) in enumerate(extras)
    ]


def _as_stored(row, time, times):
    """A plain row's values as the driver is given them: times through ``time``."""
    return {n: time(v) if time and n in times else v for n, v in row.items()}


@pytest.mark.parametrize("window", [None, T0 - timedelta(minutes=1)], ids=["first", "later"])
@pytest.mark.parametrize("time", [None, utc_text], ids=["as-is", "sqlite-text"])
def test_new_job_values_are_what_new_job_row_says(time, window):
    records = _records()
    times = {"first_seen_at", "finished_at", "finished_window_start"}
    rows = [_as_stored(new_job_row(r, window), time, times) for r in records]
    want = [tuple(row[name] for name in NEW_JOB.from_job) for row in rows]
    assert list(new_job_values(records, time, window)) == want
    # What SQLite binds: the rest it computes (DERIVED_SQL).
    bound = [tuple(row[name] for name in NEW_JOB_BOUND) for row in rows]
    assert list(new_job_values(records, time, window, derived=False)) == bound
    # Only jobs first seen Pending or Importing after the first complete pass are not backlog.
    backlog = {row["state"]: row["backlog"] for row in rows}
    assert backlog["Completed"] and backlog["Failed"]
    assert backlog["Pending"] is (window is None) and backlog["Importing"] is (window is None)


@pytest.mark.parametrize("time", [None, utc_text], ids=["as-is", "sqlite-text"])
def test_first_seen_values_are_what_first_seen_row_says(time):
    records = _records()
    rows = [_as_stored(first_seen_row(r), time, {"observed_at"}) for r in records]
    want = [tuple(row[name] for name in FIRST_SEEN.from_job) for row in rows]
    assert list(first_seen_values(records, time)) == want


def test_whole_rows_put_every_value_in_the_column_of_its_name():
    plan = PassPlan(
        run_id=7, first_seen_window=T0, seen_started_at=T0, seen_at=T0 + timedelta(seconds=9)
    )
    records = _records()
    head = NEW_JOB.pass_values(new_job_pass_row("c", plan))
    rows = NEW_JOB.full_rows(head, new_job_values(records, None, T0))
    for record, row in zip(records, rows, strict=True):
        stored = dict(zip(NEW_JOB.columns, row, strict=True))
        own = new_job_row(record, T0)
        assert stored == {
            **new_job_pass_row("c", plan),
            **own,
            "state_since": own["first_seen_at"],
            **NEW_JOB.fixed,
        }
    head = FIRST_SEEN.pass_values(first_seen_pass_row("c", plan))
    rows = FIRST_SEEN.full_rows(head, first_seen_values(records))
    for record, row in zip(records, rows, strict=True):
        assert dict(zip(FIRST_SEEN.columns, row, strict=True)) == {
            **first_seen_pass_row("c", plan),
            **first_seen_row(record),
            **FIRST_SEEN.fixed,
        }


def test_a_new_job_sets_every_column_but_the_progress_details():
    details = {"total_rows", "imported_rows", "file_size", "complete_time", "details_at"}
    # Computed once the row is written, from its creation and finish windows (facts.py).
    details |= {"max_seconds", "estimated_seconds"}
    # Taken from the source while the job is listed (rows.py).
    details |= {"last_seen_us"}
    assert set(NEW_JOB.in_table_order) == set(import_job_records.c.keys()) - details
    assert all(import_job_records.c[name].nullable for name in details)
    assert set(FIRST_SEEN.in_table_order) == set(import_job_transitions.c.keys()) - {"id"}
    assert NEW_JOB.in_table_order == tuple(
        c.name for c in import_job_records.columns if c.name not in details
    )


def test_updates_and_transitions_take_their_values_by_name():
    row = JobRow(
        "j1",
        "coll",
        "Failed",
        "failed",
        5,
        "disk full",
        listed=True,
        missed_snapshots=0,
        vanished=False,
        finished=True,
        last_seen_at=T0,
        finished_at=T0,
    )
    (values,) = update_values("c", [row], SQLITE.time_writer())
    assert values[-2:] == ["c", "j1"]
    written = dict(zip(UPDATED_COLUMNS, values[:-2], strict=True))
    for name, value in written.items():
        want = getattr(row, name)
        assert value == (utc_text(want) if isinstance(want, datetime) else want), name
    sql = update_sql()  # the update that sets every column
    assert sql.count("{p}") == len(UPDATED_COLUMNS) + 2
    assert "state_since = COALESCE({p}, state_since)" in sql
    assert "finished_at = COALESCE(finished_at, {p})" in sql

    transition = {
        "job_id": "j1",
        "kind": "change",
        "from_state": "Pending",
        "to_state": "Failed",
        "raw_from_state": "pending",
        "raw_to_state": "failed",
        "window_start": None,
        "observed_at": T0,
        "sync_run_id": 3,
        "reason": "disk full",
    }
    (values,) = transition_values("c", [transition])
    assert dict(zip(TRANSITION_COLUMNS, values, strict=True)) == {
        "cluster_id": "c",
        **transition,
        # Derived from the times: microseconds since the epoch, exactly.
        "window_start_us": None,
        "observed_us": 1767323045123456,
    }
