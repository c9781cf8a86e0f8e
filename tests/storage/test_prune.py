"""Pruning: old passes that recorded nothing are rolled up per source and day, then deleted;
old progress samples are thinned; jobs, transitions and every run still needed stay."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import func, select

from jobsync.domain.records import JobDetails, JobRecord
from jobsync.domain.retention import samples_to_thin
from jobsync.reporting.queries import overview
from jobsync.reporting.status import source_status
from jobsync.storage import prune as prune_module
from jobsync.storage.migrate import upgrade
from jobsync.storage.prune import prune
from jobsync.storage.schema import (
    import_job_progress,
    import_job_records,
    import_job_transitions,
    sync_run_days,
    sync_runs,
)
from jobsync.storage.store import apply_pass, fail_run, open_engine, start_run
from tests.conftest import count_rows, snapshot_of

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def _pass(engine, when: datetime, states: dict[str, str], cluster: str = "c", details=None):
    run_id = start_run(engine, cluster, when)
    snapshot = snapshot_of(when, states)
    snapshot.source_key = cluster
    apply_pass(
        engine,
        cluster,
        run_id,
        snapshot,
        finished_at=when + timedelta(seconds=2),
        details=details or {},
    )
    return run_id


def _failed(engine, when: datetime, cluster: str = "c") -> int:
    run_id = start_run(engine, cluster, when)
    fail_run(engine, run_id, when + timedelta(seconds=5), "list failed: HTTP 503", retries=4)
    return run_id


def _run_ids(engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(select(sync_runs.c.id).order_by(sync_runs.c.id)).scalars())


def _days(engine) -> dict[tuple[str, date], tuple]:
    d = sync_run_days.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(d.cluster_id, d.day, d.passes, d.failures, d.retries, d.pages, d.seconds)
        ).all()
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


def _rolled_up(engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(select(func.coalesce(func.sum(sync_run_days.c.passes), 0))).scalar()
        )


def _ten_days(engine) -> dict[str, int]:
    """Day 0 first sees two jobs; days 1..8 change nothing (day 3 also has a failed pass);
    day 6 sees job a complete; day 9 is the latest pass."""
    ids = {"first": _pass(engine, T0, {"a": "Pending", "b": "Pending"})}
    for n in range(1, 10):
        states = {"a": "Completed" if n >= 6 else "Pending", "b": "Pending"}
        ids[f"day{n}"] = _pass(engine, T0 + n * DAY, states)
        if n == 3:
            ids["failed"] = _failed(engine, T0 + n * DAY + timedelta(hours=1))
    return ids


def test_old_passes_that_recorded_nothing_are_rolled_up_per_day_then_deleted(engine):
    ids = _ten_days(engine)
    before = _run_ids(engine)
    transitions = count_rows(engine, import_job_transitions)

    result = prune(engine, timedelta(days=5), now=T0 + 10 * DAY)

    # Cutoff T0 + 5 days: days 1..4 and the failed pass go; day 0 saw jobs first, so it stays.
    gone = [ids["day1"], ids["day2"], ids["day3"], ids["failed"], ids["day4"]]
    assert result.runs == 5 and result.days == 4
    assert _run_ids(engine) == [i for i in before if i not in gone]
    assert _days(engine) == {
        ("c", (T0 + 1 * DAY).date()): (1, 0, 0, 0, 2.0),
        ("c", (T0 + 2 * DAY).date()): (1, 0, 0, 0, 2.0),
        ("c", (T0 + 3 * DAY).date()): (2, 1, 4, 0, 7.0),
        ("c", (T0 + 4 * DAY).date()): (1, 0, 0, 0, 2.0),
    }
    # Every pass is counted once: in sync_runs or in the rollup.
    assert len(_run_ids(engine)) + _rolled_up(engine) == len(before)
    assert count_rows(engine, import_job_transitions) == transitions
    assert count_rows(engine, import_job_records) == 2


def test_on_postgresql_a_prune_makes_the_space_it_freed_reusable(engine):
    # Autovacuum may be off (it is on the test server): without a vacuum the space of the
    # rows a prune deletes is never reused, and the database grows by what it prunes.
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite reuses a freed page at once")
    _ten_days(engine)

    def vacuums() -> int:
        with engine.connect() as conn:
            return int(
                conn.exec_driver_sql(
                    "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'sync_runs'"
                ).scalar()
            )

    before = vacuums()
    assert prune(engine, timedelta(days=5), now=T0 + 10 * DAY).runs == 5
    # A server process reports its statistics when it ends (or some seconds later): end them.
    engine.dispose()
    deadline = time.monotonic() + 10
    while vacuums() == before and time.monotonic() < deadline:
        engine.dispose()
    assert vacuums() == before + 1
    # A prune that removes nothing has nothing to give back.
    assert prune(engine, timedelta(days=5), now=T0 + 10 * DAY).runs == 0
    assert vacuums() == before + 1


def test_pruning_again_removes_nothing_more_and_counts_nothing_twice(engine):
    _ten_days(engine)
    before = len(_run_ids(engine))
    prune(engine, timedelta(days=5), now=T0 + 10 * DAY)
    days = _days(engine)

    again = prune(engine, timedelta(days=5), now=T0 + 10 * DAY)

    assert (again.runs, again.samples, again.days) == (0, 0, 0)
    assert _days(engine) == days
    later = prune(engine, timedelta(days=5), now=T0 + 12 * DAY)
    assert later.runs == 1  # cutoff T0 + 7 days: day 5 (day 6 saw a change)
    assert len(_run_ids(engine)) + _rolled_up(engine) == before


def test_a_dry_run_counts_what_would_go_and_changes_nothing(engine):
    _ten_days(engine)
    before = _run_ids(engine)

    dry = prune(engine, timedelta(days=5), now=T0 + 10 * DAY, dry_run=True)

    assert dry.runs == 5
    assert _run_ids(engine) == before and _days(engine) == {}
    assert prune(engine, timedelta(days=5), now=T0 + 10 * DAY).runs == dry.runs


def test_small_batches_prune_the_same_as_one(engine):
    _ten_days(engine)
    result = prune(engine, timedelta(days=5), now=T0 + 10 * DAY, batch_size=2)
    assert result.runs == 5 and result.batches == 3
    assert sum(v[0] for v in _days(engine).values()) == 5


def test_the_latest_success_and_the_failing_streak_after_it_are_kept(engine):
    """`jobsync status` reads the last success; a failing streak is keyed by its first pass."""
    ok = _pass(engine, T0, {"a": "Pending"})
    quiet = _pass(engine, T0 + DAY, {"a": "Pending"})
    streak = [_failed(engine, T0 + n * DAY) for n in range(2, 6)]
    other = _pass(engine, T0, {"x": "Pending"}, cluster="never-ok")
    del other
    never = [_failed(engine, T0 + n * DAY, cluster="never-ok") for n in range(1, 4)]

    result = prune(engine, timedelta(days=1), now=T0 + 30 * DAY)

    assert result.runs == 0  # first saw a job; `quiet` is the latest success; then the streak
    assert set(_run_ids(engine)) >= {ok, quiet, *streak, *never}
    status = {row["source"]: row for row in source_status(engine, overdue_after=60)}
    assert status["c"]["last_success_at"] == T0 + DAY + timedelta(seconds=2)
    assert status["c"]["last_status"] == "failed"


def test_a_running_pass_and_the_run_it_is_based_on_are_kept(engine):
    _pass(engine, T0, {"a": "Pending"})
    base = _pass(engine, T0 + DAY, {"a": "Pending"})
    running = start_run(engine, "c", T0 + 2 * DAY)  # its process still fetching, or dead
    _failed(engine, T0 + 3 * DAY)

    prune(engine, timedelta(days=1), now=T0 + 30 * DAY)

    assert {base, running} <= set(_run_ids(engine))


def test_monitoring_counts_survive_pruning(engine):
    _ten_days(engine)
    before = overview(engine)["runs_by_status"]

    prune(engine, timedelta(days=5), now=T0 + 10 * DAY)

    assert overview(engine)["runs_by_status"] == before


def _sample(job_id: str, state: str, progress: int, when: datetime) -> JobDetails:
    return JobDetails(job_id, state, progress, None, 1000, progress * 10, 5000, None, when)


def test_old_progress_samples_keep_the_first_and_last_of_each_state(engine):
    # One sample per pass while job a imports (its figures change each time), then Completed.
    plan = (
        [("Pending", 0)] * 3
        + [("Importing", p) for p in (10, 30, 50, 70, 90)]
        + [("Completed", 100)] * 3
    )
    for n, (state, progress) in enumerate(plan):
        when = T0 + n * timedelta(hours=1)
        details = {"a": _sample("a", state, progress, when)}
        _pass(engine, when, {"a": state, "b": "Pending"}, details=details)
    p = import_job_progress.c
    with engine.connect() as conn:
        before = conn.execute(select(p.id, p.state).order_by(p.sampled_at, p.id)).all()
    transitions = count_rows(engine, import_job_transitions)

    result = prune(engine, timedelta(days=1), now=T0 + 40 * DAY)

    with engine.connect() as conn:
        after = conn.execute(select(p.id, p.state, p.progress).order_by(p.sampled_at)).all()
    importing = [row.progress for row in after if row.state == "Importing"]
    assert importing == [10, 90]
    assert result.samples == len(before) - len(after) > 0
    assert [row.id for row in after] == sorted(
        set(r.id for r in before) - set(samples_to_thin([(r.id, r.state) for r in before]))
    )
    assert count_rows(engine, import_job_transitions) == transitions


def test_a_batch_that_fails_half_way_leaves_nothing_half_done(engine, monkeypatch):
    _ten_days(engine)
    before = _run_ids(engine)
    real_delete = prune_module._delete_ids
    calls = {"n": 0}

    def delete_then_fail(conn, column, ids):
        real_delete(conn, column, ids)  # the rollup and the delete are both written ...
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("connection lost")  # ... and the transaction never commits

    monkeypatch.setattr(prune_module, "_delete_ids", delete_then_fail)
    with pytest.raises(RuntimeError):
        prune(engine, timedelta(days=5), now=T0 + 10 * DAY, batch_size=2)

    # The first batch committed whole, the second not at all.
    assert len(_run_ids(engine)) == len(before) - 2
    assert _rolled_up(engine) == 2
    monkeypatch.undo()
    prune(engine, timedelta(days=5), now=T0 + 10 * DAY, batch_size=2)
    assert len(_run_ids(engine)) + _rolled_up(engine) == len(before)
    assert _rolled_up(engine) == 5


def test_both_backends_prune_alike(tmp_path, postgres_url):
    outcomes = []
    for url in (f"sqlite:///{tmp_path / 'p.db'}", postgres_url):
        engine = open_engine(url)
        upgrade(engine)
        try:
            _ten_days(engine)
            result = prune(engine, timedelta(days=5), now=T0 + 10 * DAY)
            outcomes.append((result.runs, result.days, len(_run_ids(engine)), _days(engine)))
        finally:
            engine.dispose()
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize(
    ("states", "thinned"),
    [
        ([], []),
        (["I"], []),
        (["I", "I"], []),
        (["I", "I", "I"], [2]),
        (["P", "I", "I", "I", "I", "C"], [3, 4]),
        (["I", "I", "I", "P", "I", "I", "I"], [2, 6]),
    ],
)
def test_samples_to_thin_keeps_the_ends_of_each_stay(states, thinned):
    assert samples_to_thin(list(enumerate(states, start=1))) == thinned


def test_listed_snapshot_helper_is_what_the_passes_use():
    record = JobRecord("a", "coll", "Pending", 10, None, T0)
    assert snapshot_of(T0, {"a": "Pending"}).jobs["a"] == record
