"""A large load checks the history's foreign key once on PostgreSQL: the key survives, still
holds, and the bulk check is used only when it is safe (see ``jobsync.keycheck``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, Engine, func, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError

from jobsync import keycheck
from jobsync.migrate import upgrade
from jobsync.records import JobRecord, Snapshot
from jobsync.schema import import_job_transitions, sync_runs
from jobsync.store import apply_pass, open_engine, start_run

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def small_bulk(monkeypatch: pytest.MonkeyPatch) -> int:
    """Loads of 20 rows count as large, so that the tests stay small."""
    monkeypatch.setattr(keycheck, "BULK_MIN_ROWS", 20)
    return 20


def _listed(count: int, prefix: str = "j") -> Snapshot:
    snapshot = Snapshot(source_key="c", started_at=NOW, finished_at=NOW, complete=True)
    for i in range(count):
        job_id = f"{prefix}{i:04d}"
        snapshot.jobs[job_id] = JobRecord(job_id, "coll", "Completed", 100, None, NOW)
    return snapshot


def _history_keys(engine: Engine) -> list[dict[str, object]]:
    return inspect(engine).get_foreign_keys("import_job_transitions")


def _orphan(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(import_job_transitions).values(
                cluster_id="c", job_id="x", kind="first_seen", observed_at=NOW, sync_run_id=999_999
            )
        )


def test_a_large_load_keeps_the_history_key_and_its_check(engine, small_bulk):
    keys = _history_keys(engine)
    assert [k["referred_table"] for k in keys] == ["sync_runs"]
    counts = apply_pass(engine, "c", start_run(engine, "c", NOW), _listed(123), finished_at=NOW)
    assert counts.new_jobs == 123
    assert _history_keys(engine) == keys
    with pytest.raises(IntegrityError):
        _orphan(engine)
    with engine.connect() as conn:
        assert (
            conn.execute(select(func.count()).select_from(import_job_transitions)).scalar() == 123
        )


@pytest.fixture
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    engine = open_engine(postgres_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def _decides(engine: Engine, rows: int) -> bool:
    with engine.begin() as conn:
        # Waiting for a lock would be a bug here: fail instead of hanging.
        conn.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
        with keycheck.checked_once(conn, rows) as once:
            return once


@pytest.mark.postgres
def test_the_key_is_checked_once_only_for_a_load_large_against_the_table(pg_engine, small_bulk):
    assert not _decides(pg_engine, small_bulk - 1)
    assert _decides(pg_engine, small_bulk)
    apply_pass(pg_engine, "c", start_run(pg_engine, "c", NOW), _listed(400), finished_at=NOW)
    with pg_engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE import_job_transitions")
    # Adding the key back would check 400 rows to spare the trigger 20.
    assert not _decides(pg_engine, 20)
    assert _decides(pg_engine, 400 // keycheck.TABLE_SHARE)


@pytest.mark.postgres
def test_a_load_that_finds_the_tables_in_use_checks_per_row_without_waiting(
    pg_engine, postgres_url, small_bulk
):
    reader = open_engine(postgres_url)
    with reader.connect() as conn, conn.begin():
        conn.execute(select(func.count()).select_from(sync_runs)).scalar()  # holds a share lock
        assert not _decides(pg_engine, 100)
        counts = apply_pass(
            pg_engine, "c", start_run(pg_engine, "c", NOW), _listed(100), finished_at=NOW
        )
        assert counts.new_jobs == 100
    assert [k["referred_table"] for k in _history_keys(pg_engine)] == ["sync_runs"]
    reader.dispose()


def _history_key_count(conn: Connection) -> int:
    return int(
        conn.execute(
            text(
                "SELECT count(*) FROM pg_constraint WHERE contype = 'f' "
                "AND conrelid = 'import_job_transitions'::regclass"
            )
        ).scalar_one()
    )


def _fail_half_way(engine: Engine, seen: list[int]) -> None:
    with engine.begin() as conn, keycheck.checked_once(conn, 100) as once:
        assert once
        seen.append(_history_key_count(conn))
        raise RuntimeError("the pass fails half-way")


@pytest.mark.postgres
def test_a_load_that_fails_after_dropping_the_key_leaves_it_in_place(pg_engine, small_bulk):
    keys = _history_keys(pg_engine)
    seen: list[int] = []
    with pytest.raises(RuntimeError, match="half-way"):
        _fail_half_way(pg_engine, seen)
    assert seen == [0]  # it was dropped...
    assert _history_keys(pg_engine) == keys  # ...and the rollback brought it back
    with pytest.raises(IntegrityError):
        _orphan(pg_engine)
