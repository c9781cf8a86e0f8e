"""The facts passes keep (revision 0009): equal to a recomputation from the history, the
backlog counted apart, and every view typed for SQLAlchemy, pandas and DuckDB on both backends.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.types import Boolean, Date, DateTime, Float, Integer, Numeric, String

from jobsync.domain.facts import duration_bounds, job_facts, nearest_rank
from jobsync.domain.records import JobRecord, Snapshot
from jobsync.service.demo import simulate_history
from jobsync.storage.refacts import FACT_COLUMNS, rebuild, recompute
from jobsync.storage.schema import (
    daily_job_counts,
    daily_transition_counts,
    import_job_records,
    import_jobs,
)
from jobsync.storage.store import apply_pass, start_run
from jobsync.storage.views import REPORTING_VIEWS, daily_job_stats

END = datetime(2024, 5, 8, 15, 20, tzinfo=UTC)


@pytest.fixture
def history(engine: Engine) -> Engine:
    """Three simulated days of passes (details on), as the demo makes them."""
    simulate_history(engine, jobs=40, days=3, rounds=18, end=END)
    return engine


def _stored_facts(engine: Engine) -> dict[tuple[str, str], dict[str, Any]]:
    r = import_job_records.c
    with engine.connect() as conn:
        return {
            (row.cluster_id, row.job_id): {name: getattr(row, name) for name in FACT_COLUMNS}
            for row in conn.execute(select(r.cluster_id, r.job_id, *(r[n] for n in FACT_COLUMNS)))
        }


def _table(conn: Any, table: Any) -> list[tuple[Any, ...]]:
    return sorted(
        (tuple(row) for row in conn.execute(select(table))),
        key=lambda row: tuple((v is None, str(v)) for v in row),
    )


def test_what_passes_keep_equals_a_recomputation_from_the_history(history):
    stored = _stored_facts(history)
    tables = (daily_job_counts, daily_transition_counts)
    with history.connect() as conn:
        found = recompute(conn)
        kept = {t.name: _table(conn, t) for t in tables}
        conn.rollback()
        # Rebuilt from the history alone, in a transaction that is rolled back.
        transaction = conn.begin()
        rebuild(conn)
        rebuilt = {t.name: _table(conn, t) for t in tables}
        transaction.rollback()
    assert stored.keys() == found.jobs.keys()
    for key, facts in stored.items():
        assert facts == {name: found.jobs[key][name] for name in FACT_COLUMNS}, key
    assert kept == rebuilt
    # The history has what the facts are about: both kinds of job, finished and estimated.
    assert {f["backlog"] for f in stored.values()} == {True, False}
    assert any(f["estimated_seconds"] is not None and not f["backlog"] for f in stored.values())
    assert any(row[9] for row in kept["daily_job_counts"])  # new_jobs
    assert any(row[13] for row in kept["daily_job_counts"])  # duration_jobs


def test_the_daily_figures_of_a_first_day_count_the_backlog_apart(engine):
    day = datetime(2024, 5, 1, 9, tzinfo=UTC)

    def sync(at: datetime, states: dict[str, str]) -> None:
        jobs = {
            job_id: JobRecord(job_id, "c", state, None, None, at + timedelta(seconds=1))
            for job_id, state in states.items()
        }
        snapshot = Snapshot("src", at, at + timedelta(seconds=2), jobs, complete=True)
        run = start_run(engine, "src", at)
        apply_pass(engine, "src", run, snapshot, finished_at=at + timedelta(seconds=3))

    backlog = {"b1": "Completed", "b2": "Completed", "b3": "Failed", "b4": "Importing"}
    sync(day, backlog)
    # An hour later: two new jobs, one of them already finished (its start not observed),
    # and the backlog's open job finishes.
    sync(day + timedelta(hours=1), {**backlog, "b4": "Completed", "n1": "Pending", "n2": "Failed"})
    sync(
        day + timedelta(hours=2), {**backlog, "b4": "Completed", "n1": "Completed", "n2": "Failed"}
    )
    with engine.connect() as conn:
        (row,) = conn.execute(select(daily_job_stats)).mappings()
    assert row["day"] == date(2024, 5, 1)
    assert (row["jobs_first_seen"], row["new_jobs"], row["backlog_jobs"]) == (6, 1, 5)
    assert (row["completed"], row["failed"]) == (4, 2)
    assert (row["backlog_completed"], row["backlog_failed"]) == (3, 2)
    # Durations rest on the one job whose start was observed: created in (09:00, 10:00:01],
    # finished in (10:00, 11:00:01] (seen Pending by one pass only): between 0 and 7201 s.
    assert row["duration_jobs"] == 1
    assert row["p50_seconds"] == row["p90_seconds"] == row["p95_seconds"] == 3600.5


def test_a_job_that_changes_collection_takes_its_daily_figures_along(engine):
    """The daily tables count a job under the collection it has now, as a recomputation from
    the history does: when the list gives a stored job another collection, its figures of the
    day it was first seen and of the day it finished move, and a day's row that is left
    counting nothing goes."""
    day = datetime(2024, 5, 1, 22, tzinfo=UTC)

    def sync(at: datetime, jobs: dict[str, tuple[str, str]]) -> None:
        records = {
            job_id: JobRecord(job_id, collection, state, None, None, at + timedelta(seconds=1))
            for job_id, (collection, state) in jobs.items()
        }
        snapshot = Snapshot("src", at, at + timedelta(seconds=2), records, complete=True)
        run = start_run(engine, "src", at)
        apply_pass(engine, "src", run, snapshot, finished_at=at + timedelta(seconds=3))

    sync(day, {"b1": ("old", "Completed")})
    # New jobs: one finishes on the first day, one the next day (after midnight), one later
    # still, in the very pass that renames it; and the backlog job is renamed too.
    sync(
        day + timedelta(hours=1),
        {"b1": ("old", "Completed"), "n1": ("old", "Pending"), "n2": ("old", "Pending")},
    )
    sync(
        day + timedelta(hours=1, minutes=30),
        {
            "b1": ("old", "Completed"),
            "n1": ("old", "Completed"),
            "n2": ("old", "Importing"),
            "n3": ("old", "Pending"),
        },
    )
    sync(
        day + timedelta(hours=3),
        {
            "b1": ("new", "Completed"),
            "n1": ("new", "Completed"),
            "n2": ("old", "Failed"),
            "n3": ("new", "Completed"),
        },
    )
    sync(
        day + timedelta(hours=4),
        {
            "b1": ("new", "Completed"),
            "n1": ("new", "Completed"),
            "n2": ("new", "Failed"),
            "n3": ("new", "Completed"),
        },
    )
    tables = (daily_job_counts, daily_transition_counts)
    with engine.connect() as conn:
        kept = {t.name: _table(conn, t) for t in tables}
        conn.rollback()
        transaction = conn.begin()
        rebuild(conn)
        rebuilt = {t.name: _table(conn, t) for t in tables}
        transaction.rollback()
        figures = {
            (row["day"], row["collection_name"]): row
            for row in conn.execute(select(daily_job_stats)).mappings()
        }
    assert kept == rebuilt
    # Every job is now in "new": the first day's row of "old" went, and none was left behind.
    assert set(figures) == {(date(2024, 5, 1), "new"), (date(2024, 5, 2), "new")}
    first, second = figures[(date(2024, 5, 1), "new")], figures[(date(2024, 5, 2), "new")]
    assert (first["jobs_first_seen"], first["new_jobs"], first["backlog_jobs"]) == (4, 3, 1)
    assert (first["completed"], first["failed"], first["duration_jobs"]) == (2, 0, 1)
    assert (second["completed"], second["failed"], second["duration_jobs"]) == (1, 1, 2)


def test_a_job_created_and_finished_between_two_passes_gets_half_its_window():
    created = datetime(2024, 5, 1, 12, tzinfo=UTC)
    seen = created + timedelta(minutes=10, microseconds=1500)
    # First seen finished: it finished in its first_seen window, which bounds its creation too.
    assert duration_bounds(created, seen, created, seen, None) == (0.0, 600.002, 300.001)
    # An ordinary job: the difference of the windows' midpoints.
    later = seen + timedelta(minutes=10)
    assert duration_bounds(created, seen, later - timedelta(seconds=1), later, None) == (
        599.0,
        1200.002,
        899.501,
    )


def test_percentiles_are_nearest_ranks():
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert [nearest_rank(values, p) for p in (50, 90, 95)] == [3.0, 5.0, 5.0]
    assert nearest_rank([], 50) is None
    assert job_facts([]) is None


# -- types, as tools read them ---------------------------------------------------------------

TIME, NUMBER, INTEGER, TEXT, DAY, FLAG = "time", "number", "integer", "text", "day", "flag"


def _kind(column: Any) -> str:
    """What a view column of jobsync.storage.views holds."""
    kind = column.type
    if isinstance(kind, DateTime) or getattr(kind, "impl", None).__class__ is DateTime:
        return TIME
    if isinstance(kind, Date):
        return DAY
    if isinstance(kind, Boolean):
        return FLAG
    if isinstance(kind, Float):
        return NUMBER
    if isinstance(kind, Integer):
        return INTEGER
    return TEXT


# import_jobs too: the contract's current state of every job, in its own column order.
EXPECTED = {
    view.name: {c.name: _kind(c) for c in view.columns} for view in (*REPORTING_VIEWS, import_jobs)
}


def test_every_reporting_view_leads_with_a_time_column():
    for view in REPORTING_VIEWS:
        assert next(iter(EXPECTED[view.name].values())) in (TIME, DAY), view.name


def _reflected_kind(kind: Any) -> str:
    if isinstance(kind, DateTime):
        return TIME
    if isinstance(kind, Date):
        return DAY
    if isinstance(kind, Boolean):
        return FLAG
    if isinstance(kind, Float | Numeric):
        return NUMBER
    if isinstance(kind, Integer):
        return INTEGER
    if isinstance(kind, String):
        return TEXT
    return type(kind).__name__


def test_sqlalchemy_reflects_every_view_column_with_its_type(history):
    found = inspect(history)
    for view, columns in EXPECTED.items():
        reflected = {c["name"]: _reflected_kind(c["type"]) for c in found.get_columns(view)}
        assert list(reflected) == list(columns), view
        for name, kind in columns.items():
            # SQLite has no boolean: a flag is an integer there.
            allowed = {kind, INTEGER} if kind == FLAG else {kind}
            assert reflected[name] in allowed, (view, name, reflected[name])


def test_pandas_reads_times_as_times_and_numbers_as_numbers(history):
    pandas = pytest.importorskip("pandas")
    for view, columns in EXPECTED.items():
        frame = pandas.read_sql_table(view, history)
        assert len(frame), view
        for name, kind in columns.items():
            dtype = str(frame[name].dtype)
            if kind == TIME:
                assert dtype.startswith("datetime64"), (view, name, dtype)
            elif kind == NUMBER:
                assert dtype == "float64", (view, name, dtype)
            elif kind == DAY:
                assert all(isinstance(v, date) for v in frame[name]), (view, name)


def _duckdb(engine: Engine) -> Iterator[Any]:
    duckdb = pytest.importorskip("duckdb")
    if engine.dialect.name == "sqlite":
        import duckdb_extension_sqlite_scanner as package

        kind, target = "sqlite", engine.url.database
    else:
        import duckdb_extension_postgres_scanner as package

        url = engine.url
        kind = "postgres"
        target = (
            f"dbname={url.database} host={url.host} port={url.port or 5432} user={url.username}"
        )
    extension = next(pathlib.Path(package.__file__).parent.rglob("*.duckdb_extension"))
    con = duckdb.connect()
    con.execute(f"LOAD '{extension}'")
    con.execute(f"ATTACH '{target}' AS j (TYPE {kind}, READ_ONLY)")
    try:
        yield con
    finally:
        con.close()


DUCKDB_TYPES = {
    TIME: {"TIMESTAMP", "TIMESTAMP WITH TIME ZONE"},
    NUMBER: {"DOUBLE"},
    INTEGER: {"INTEGER", "BIGINT"},
    TEXT: {"VARCHAR"},
    DAY: {"DATE"},
    FLAG: {"BOOLEAN", "BIGINT", "INTEGER"},
}


def test_duckdb_reads_every_view_through_its_attachment_with_types(history):
    counts = {}
    with history.connect() as conn:
        for view in EXPECTED:
            counts[view] = conn.execute(text(f"SELECT COUNT(*) FROM {view}")).scalar_one()
    for con in _duckdb(history):
        for view, columns in EXPECTED.items():
            described = {row[0]: row[1] for row in con.execute(f"DESCRIBE j.{view}").fetchall()}
            assert list(described) == list(columns), view
            for name, kind in columns.items():
                assert described[name] in DUCKDB_TYPES[kind], (view, name, described[name])
            # Read whole in DuckDB (counted there: its time zones need pytz in Python).
            (rows,) = con.execute(f"SELECT COUNT(*) FROM (SELECT * FROM j.{view})").fetchone()
            assert rows == counts[view], view
        # Numbers are numbers: the largest time in a state is not compared as text.
        top = con.execute("SELECT max(seconds_in_state) FROM j.active_jobs").fetchone()
        assert top is not None and isinstance(top[0], float) and not math.isnan(top[0])
