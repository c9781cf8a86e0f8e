"""A large load on PostgreSQL checks the history's foreign key and builds the job-id indexes
once, after it (``jobsync.storage.pgload``): they all come back as they were and still hold, and the
bulk path is taken only when it is safe and pays."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, func, insert, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from jobsync.domain.history import PassPlan
from jobsync.domain.records import Snapshot
from jobsync.errors import StorageError
from jobsync.storage.backends import pgload
from jobsync.storage.bulk import insert_new_jobs
from jobsync.storage.schema import import_job_records, import_job_transitions, sync_runs
from jobsync.storage.store import apply_pass, open_engine, start_run
from tests.conftest import count_rows, listed_snapshot

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def small_bulk(monkeypatch: pytest.MonkeyPatch) -> int:
    """Loads of 20 jobs count as large, so that the tests stay small."""
    monkeypatch.setattr(pgload, "BULK_MIN_ROWS", 20)
    return 20


def _listed(count: int, prefix: str = "j") -> Snapshot:
    return listed_snapshot(count, NOW, prefix)


def _schema(engine: Engine) -> dict[str, Any]:
    """Keys and indexes of the two job tables, as the database reports them."""
    found = inspect(engine)
    return {
        table: (
            found.get_pk_constraint(table),
            found.get_foreign_keys(table),
            # A partial index's condition comes back as a new clause object each time.
            [
                {**ix, "dialect_options": {k: str(v) for k, v in ix["dialect_options"].items()}}
                if "dialect_options" in ix
                else ix
                for ix in found.get_indexes(table)
            ],
        )
        for table in ("import_job_records", "import_job_transitions")
    }


def _orphan(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(import_job_transitions).values(
                cluster_id="c", job_id="x", kind="first_seen", observed_at=NOW, sync_run_id=999_999
            )
        )


def test_a_large_load_leaves_keys_and_indexes_as_they_were(engine, small_bulk):
    before = _schema(engine)
    assert before["import_job_transitions"][1][0]["referred_table"] == "sync_runs"
    counts = apply_pass(engine, "c", start_run(engine, "c", NOW), _listed(123), finished_at=NOW)
    assert counts.new_jobs == 123
    assert _schema(engine) == before
    with pytest.raises(IntegrityError):
        _orphan(engine)
    assert count_rows(engine, import_job_transitions) == 123


# The shared ``engine`` fixture, on PostgreSQL alone: what these tests check is PostgreSQL's.
postgres_only = pytest.mark.parametrize(
    "db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)


class _Undo(Exception):
    """Raised to leave a transaction, which rolls it back."""


def _inside_load(engine: Engine, rows: int, look: Callable[[Connection], Any] = inspect) -> Any:
    """Whether a load of ``rows`` jobs takes the bulk path, and ``look`` at the database while
    it is under way; then roll it all back."""
    seen: list[Any] = []
    with contextlib.suppress(_Undo), engine.begin() as conn:
        with pgload.large_load(conn, rows) as bulk:
            seen += [bulk, look(conn)]
            raise _Undo
    return seen


def _bulk(engine: Engine, rows: int) -> bool:
    return bool(_inside_load(engine, rows)[0])


def _load(engine: Engine, count: int, prefix: str) -> None:
    apply_pass(engine, "c", start_run(engine, "c", NOW), _listed(count, prefix), finished_at=NOW)
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE import_job_records")
        conn.exec_driver_sql("ANALYZE import_job_transitions")


@postgres_only
def test_the_bulk_path_is_taken_only_for_a_load_large_against_the_tables(engine, small_bulk):
    assert not _bulk(engine, small_bulk - 1)
    assert _bulk(engine, small_bulk)
    _load(engine, 400, "a")
    # The key pays from 1/16 of the history's rows; nothing pays below.
    assert not _bulk(engine, 24)
    assert _bulk(engine, 25)
    _load(engine, 400, "b")  # 800 rows: 40 new would still drop the key...
    bulk, (keys, indexes) = _inside_load(
        engine,
        60,
        lambda conn: (
            inspect(conn).get_foreign_keys("import_job_transitions"),
            inspect(conn).get_indexes("import_job_transitions"),
        ),
    )
    assert bulk
    assert keys == []  # ...but the indexes are rebuilt only when the load doubles the table
    assert sorted(i["name"] for i in indexes) == [
        "ix_import_job_transitions_job",
        "ix_import_job_transitions_observed",
        "ix_import_job_transitions_run",
    ]


@postgres_only
def test_a_load_that_finds_the_tables_in_use_loads_row_by_row_without_waiting(
    engine, postgres_url, small_bulk
):
    before = _schema(engine)
    outcome: list[Any] = []

    def load() -> None:
        outcome.append(_bulk(engine, 100))
        run_id = start_run(engine, "c", NOW)
        outcome.append(apply_pass(engine, "c", run_id, _listed(100), finished_at=NOW))

    reader = open_engine(postgres_url)
    try:
        with reader.connect() as conn, conn.begin():
            conn.execute(select(func.count()).select_from(sync_runs)).scalar()  # a share lock
            worker = threading.Thread(target=load)
            worker.start()
            # A load that waited for the lock would wait for this reader, i.e. forever.
            worker.join(timeout=60)
            waited = worker.is_alive()
    finally:
        reader.dispose()
        worker.join()
    assert not waited, "the load waited for the reader's lock"
    assert outcome[0] is False
    assert outcome[1].new_jobs == 100
    assert _schema(engine) == before


@postgres_only
def test_a_table_never_analyzed_counts_as_large_unless_it_has_no_pages(engine, small_bulk):
    assert _bulk(engine, small_bulk)  # freshly migrated: no pages, so empty
    apply_pass(engine, "c", start_run(engine, "c", NOW), _listed(5), finished_at=NOW)
    assert not _bulk(engine, 1000)  # a few rows, but the planner does not know how many


@postgres_only
def test_a_role_that_may_write_but_not_alter_the_tables_loads_row_by_row(
    engine, postgres_url, small_bulk
):
    role = f"jobsync_writer_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        conn.exec_driver_sql(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
        conn.exec_driver_sql(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
    writer = open_engine(make_url(postgres_url).set(username=role).render_as_string(False))
    try:
        assert not _bulk(writer, 100)
        counts = apply_pass(writer, "c", start_run(writer, "c", NOW), _listed(100), finished_at=NOW)
        assert counts.new_jobs == 100
    finally:
        writer.dispose()
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")
    assert count_rows(engine, import_job_transitions) == 100


@postgres_only
def test_a_load_that_fails_half_way_leaves_keys_and_indexes_in_place(engine, small_bulk):
    before = _schema(engine)
    bulk, seen = _inside_load(
        engine,
        100,
        lambda conn: (
            inspect(conn).get_foreign_keys("import_job_transitions"),
            inspect(conn).get_indexes("import_job_transitions"),
            inspect(conn).get_pk_constraint("import_job_records")["constrained_columns"],
        ),
    )
    assert bulk
    assert seen == ([], [], [])  # all dropped for the load...
    assert _schema(engine) == before  # ...and the rollback brought them back
    with pytest.raises(IntegrityError):
        _orphan(engine)


@postgres_only
def test_a_large_load_of_a_job_already_stored_fails_and_changes_nothing(engine, small_bulk):
    """With the primary key dropped for the load, adding it back is what refuses the job."""
    _load(engine, 30, "j")
    before = _schema(engine)
    plan = PassPlan(
        run_id=start_run(engine, "c", NOW),
        first_seen_window=None,
        seen_started_at=NOW,
        seen_at=NOW,
        new=[*_listed(30, prefix="k").jobs.values(), _listed(1).jobs["j0000"]],
    )
    with pytest.raises(StorageError, match="could not create unique index"), engine.begin() as conn:
        insert_new_jobs(conn, "c", plan)
    assert count_rows(engine, import_job_records) == 30
    assert count_rows(engine, import_job_transitions) == 30
    assert _schema(engine) == before
