"""The pass planner's rules on plain values: windows, vanishing, reappearing, no-op passes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from jobsync.domain.history import JobRow, PassPlan, SourceMarks, StoredJob, new_job, plan_pass
from jobsync.domain.records import JobRecord, Snapshot
from jobsync.domain.triage import triage, triage_in_order

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _snapshot(start: int, jobs: dict[str, str], *, complete: bool = True) -> Snapshot:
    seen = _at(start) + timedelta(seconds=30)
    snap = Snapshot(source_key="c", started_at=_at(start), finished_at=_at(start + 1))
    snap.jobs = {
        job_id: JobRecord(job_id, "coll", state, None, None, seen) for job_id, state in jobs.items()
    }
    snap.complete = complete
    return snap


def _stored(row: JobRow) -> StoredJob:
    # What the database would load: timestamps only for jobs the latest pass did not list.
    return StoredJob(
        row.job_id,
        row.collection_name,
        row.state,
        row.raw_state,
        row.progress,
        row.reason,
        row.listed,
        row.missed_snapshots,
        row.vanished,
        row.finished,
        None if row.listed else row.last_seen_at,
        None if row.listed else row.last_seen_started_at,
        row.missing_since,
    )


def _new_rows(plan: PassPlan) -> list[JobRow]:
    """The new jobs' rows, as the writer stores them."""
    return [
        JobRow(
            job_id=job.job_id,
            collection_name=job.collection_name,
            state=job.state,
            raw_state=job.raw_state,
            progress=job.progress,
            reason=job.reason,
            listed=True,
            missed_snapshots=0,
            vanished=False,
            finished=job.finished_at is not None,
            first_seen_at=job.observed_at,
            state_since=job.observed_at,
            last_seen_at=plan.seen_at,
            last_seen_started_at=plan.seen_started_at,
            finished_at=job.finished_at,
        )
        for job in map(new_job, plan.new)
    ]


def _history(plan: PassPlan) -> list[dict]:
    """Every transition of the pass, as the writer stores them: the new jobs' ``first_seen``
    ones first."""
    first_seen = [
        {
            "job_id": job.job_id,
            "kind": "first_seen",
            "from_state": None,
            "to_state": job.state,
            "raw_from_state": None,
            "raw_to_state": job.raw_state,
            "window_start": plan.first_seen_window,
            "observed_at": job.observed_at,
            "sync_run_id": plan.run_id,
            "reason": job.failure_reason,
        }
        for job in map(new_job, plan.new)
    ]
    return first_seen + plan.transitions


class Store:
    """Applies plans to a dict, as the database would, and keeps the source marks."""

    def __init__(self) -> None:
        self.rows: dict[str, JobRow] = {}
        self.marks = SourceMarks()
        self.transitions: list[dict] = []

    def apply(self, snap: Snapshot, run_id: int = 1):
        stored = {job_id: _stored(row) for job_id, row in self.rows.items() if not row.vanished}
        stored.update({j: _stored(self.rows[j]) for j in snap.jobs if j in self.rows})
        plan = plan_pass(stored, snap, self.marks, run_id)
        # What the database does instead: one streamed comparison (triage), full rows only
        # of what it picks, and a snapshot narrowed to the jobs that may need writing. Every
        # test checks that both plan the same.
        rows = [
            (
                job_id,
                row.raw_state,
                row.collection_name,
                row.progress,
                row.reason,
                row.listed and not row.missed_snapshots and row.missing_since is None,
            )
            for job_id, row in self.rows.items()
            if not row.vanished
        ]
        found = triage(rows, snap.jobs, detailed=())
        walked = triage_in_order(sorted(rows), snap.jobs, detailed=())
        assert walked.load == sorted(found.load)
        assert walked.unknown == sorted(found.unknown)
        lean = {j: stored[j] for j in found.load + found.unknown if j in stored}
        narrowed = {j: snap.jobs[j] for j in found.unknown + list(lean) if j in snap.jobs}
        lean_plan = plan_pass(lean, replace(snap, jobs=narrowed), self.marks, run_id)
        for part in ("new", "updates", "transitions"):
            lean_rows, full_rows = getattr(lean_plan, part), getattr(plan, part)
            assert sorted(lean_rows, key=repr) == sorted(full_rows, key=repr), part
        assert lean_plan.rows_written == plan.rows_written
        for row in _new_rows(plan) + plan.updates:
            self.rows[row.job_id] = row
        self.transitions += _history(plan)
        self.marks = SourceMarks(
            last_snapshot_started_at=snap.started_at,
            last_snapshot_at=snap.finished_at,
            last_complete_started_at=snap.started_at
            if snap.complete
            else self.marks.last_complete_started_at,
        )
        return plan


def test_first_pass_jobs_have_an_unknown_first_seen_window():
    store = Store()
    plan = store.apply(_snapshot(0, {"a": "Pending", "b": "Completed"}))
    assert plan.new_jobs == 2
    assert [t["window_start"] for t in _history(plan)] == [None, None]
    assert store.rows["b"].finished_at == store.rows["b"].first_seen_at


def test_an_unchanged_pass_plans_nothing():
    store = Store()
    store.apply(_snapshot(0, {"a": "Pending"}))
    plan = store.apply(_snapshot(10, {"a": "Pending"}))
    assert plan.new == plan.updates == _history(plan) == []
    assert plan.rows_written == 0


def test_a_change_window_starts_when_the_previous_pass_began():
    store = Store()
    store.apply(_snapshot(0, {"a": "Pending"}))
    plan = store.apply(_snapshot(10, {"a": "Importing"}))
    (t,) = _history(plan)
    assert (t["kind"], t["from_state"], t["to_state"]) == ("change", "Pending", "Importing")
    assert t["window_start"] == _at(0) and t["observed_at"] == _at(10) + timedelta(seconds=30)


def test_a_raw_spelling_change_updates_the_row_without_history():
    store = Store()
    store.apply(_snapshot(0, {"a": "InProgress"}))
    plan = store.apply(_snapshot(10, {"a": "Importing"}))
    assert _history(plan) == [] and len(plan.updates) == 1
    assert store.rows["a"].raw_state == "Importing"


def test_vanish_needs_two_complete_snapshots_and_ignores_incomplete_ones():
    store = Store()
    store.apply(_snapshot(0, {"a": "Completed", "b": "Pending"}))
    store.apply(_snapshot(10, {"b": "Pending"}))
    store.apply(_snapshot(20, {"b": "Pending"}, complete=False))
    assert not store.rows["a"].vanished
    plan = store.apply(_snapshot(30, {"b": "Pending"}))
    (t,) = _history(plan)
    assert (t["kind"], t["from_state"], t["to_state"]) == ("vanished", "Completed", None)
    # Last listed by the pass that began at 0; first missed by the one that ended at 11.
    assert (t["window_start"], t["observed_at"]) == (_at(0), _at(11))
    assert store.rows["a"].last_seen_at == _at(1)


def test_a_vanished_job_that_comes_back_reappears_once():
    store = Store()
    store.apply(_snapshot(0, {"a": "Importing"}))
    store.apply(_snapshot(10, {}))
    store.apply(_snapshot(20, {}))
    plan = store.apply(_snapshot(30, {"a": "Completed"}))
    (t,) = _history(plan)
    assert (t["kind"], t["from_state"], t["to_state"]) == ("reappeared", "Importing", "Completed")
    assert t["window_start"] == _at(20)
    assert not store.rows["a"].vanished and store.rows["a"].state == "Completed"
    assert _history(store.apply(_snapshot(40, {"a": "Completed"}))) == []


def test_a_change_after_a_gap_in_listing_uses_the_last_listing_for_its_window():
    store = Store()
    store.apply(_snapshot(0, {"a": "Pending", "b": "Pending"}))
    store.apply(_snapshot(10, {"b": "Pending"}, complete=False))  # a skipped, not gone
    plan = store.apply(_snapshot(20, {"a": "Failed", "b": "Pending"}))
    (t,) = _history(plan)
    assert t["window_start"] == _at(0)
    assert store.rows["a"].listed and store.rows["a"].missed_snapshots == 0


def _in_order(rows, listed, detailed):
    return triage_in_order(sorted(rows), listed, detailed)


@pytest.mark.parametrize("compare", [triage, _in_order], ids=["lookup", "in-order"])
def test_triage_loads_what_may_change_and_skips_what_cannot(compare):
    seen = _at(0)
    listed = {
        "same": JobRecord("same", "coll", "Completed", 100, None, seen),
        "moved": JobRecord("moved", "coll", "Completed", 100, None, seen),
        "no-progress": JobRecord("no-progress", "coll", "Importing", None, None, seen),
        "loud": JobRecord("loud", "coll", "Pending", 0, None, seen),
        "asked": JobRecord("asked", "coll", "Importing", 40, None, seen),
        "new": JobRecord("new", "coll", "Pending", 0, None, seen),
    }
    rows = [
        ("same", "Completed", "coll", 100, None, 1),
        ("moved", "Importing", "coll", 50, None, 1),  # changed state
        ("gone", "Completed", "coll", 100, None, 1),  # no longer listed
        # The list left progress out: the stored value stands, nothing changed.
        ("no-progress", "Importing", "coll", 70, None, 1),
        ("loud", "Pending", "coll", 0, None, 0),  # not quiet: missed once, say
        ("asked", "Importing", "coll", 40, None, 1),  # unchanged, but its details may differ
    ]

    found = compare(rows, listed, detailed={"asked", "new"})

    assert sorted(found.load) == ["asked", "gone", "loud", "moved"]
    assert found.unknown == ["new"]
    assert compare([], listed, detailed=()) == ([], list(listed))


def test_walking_in_order_pairs_rows_by_code_point():
    """Ids whose order depends on the collation (upper before lower case, digits of different
    lengths, non-ASCII) pair as SQLite's BINARY order has them; unknown ones on either side of
    every stored row are found."""
    seen = _at(0)
    ids = ["10", "9", "B", "a", "é", "z", "Ω"]
    listed = {i: JobRecord(i, "coll", "Completed", 100, None, seen) for i in reversed(ids)}
    stored = ["0-gone", "10", "B", "b-gone", "z", "ω-gone"]  # ω after Ω: past every listed id
    rows = [(i, "Completed", "coll", 100, None, 1) for i in stored]
    assert rows == sorted(rows)  # what ORDER BY job_id returns on SQLite

    found = triage_in_order(rows, listed, detailed=())

    assert found.load == ["0-gone", "b-gone", "ω-gone"]
    assert found.unknown == ["9", "a", "é", "Ω"]
    looked_up = triage(rows, listed, detailed=())
    assert (looked_up.load, sorted(looked_up.unknown)) == found
