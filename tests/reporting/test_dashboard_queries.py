"""The four dashboard queries: the same SQL, the same rows on SQLite and PostgreSQL, and rows
that agree with a recomputation from the views' own rows.

One simulated history (the demo's, a few days of it) is synced into SQLite and copied row for
row into PostgreSQL, so both hold exactly the same history.
"""

from __future__ import annotations

import importlib
import math
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, insert, select, text

from jobsync.service.demo import simulate_history
from jobsync.storage.dashboard import (
    DASHBOARD_QUERIES,
    STUCK_AFTER_SECONDS,
    DashboardQuery,
    run_dashboard_query,
)
from jobsync.storage.migrate import upgrade
from jobsync.storage.schema import metadata
from jobsync.storage.store import normalise_url, open_engine
from jobsync.storage.views import active_jobs, job_durations
from tests.conftest import PG_ADMIN_URL, require_postgres

DOCS = Path(__file__).resolve().parents[2] / "docs" / "sql-and-bi.md"
END = datetime(2024, 5, 8, 15, 20, tzinfo=UTC)  # a Wednesday afternoon
DAYS = 4


@pytest.fixture(scope="module")
def sqlite_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = open_engine(f"sqlite:///{tmp_path_factory.mktemp('dash') / 'history.db'}")
    upgrade(engine)
    simulate_history(engine, jobs=60, days=DAYS, rounds=DAYS * 6, end=END)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def pg_url(sqlite_engine: Engine) -> Iterator[str]:
    """A PostgreSQL database holding the same rows as ``sqlite_engine``."""
    require_postgres()
    name = f"jobsync_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalise_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    engine = open_engine(url)
    try:
        upgrade(engine)
        with sqlite_engine.connect() as source, engine.begin() as target:
            for table in metadata.sorted_tables:
                rows = [dict(r._mapping) for r in source.execute(select(table))]
                if rows:
                    target.execute(insert(table), rows)
        engine.dispose()
        yield url
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = open_engine(pg_url)
    yield engine
    engine.dispose()


def _plain(value: Any) -> Any:
    """What a value says, whichever driver returned it: SQLite gives times as text, DuckDB
    reading SQLite gives them without a zone (they are UTC)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, date):
        return value.isoformat()
    return value


def _rows(engine: Engine, query: DashboardQuery) -> list[dict[str, Any]]:
    return [{k: _plain(v) for k, v in row.items()} for row in run_dashboard_query(engine, query)]


def _by_name(name: str) -> DashboardQuery:
    return next(q for q in DASHBOARD_QUERIES if q.name == name)


@pytest.mark.postgres
@pytest.mark.parametrize("query", DASHBOARD_QUERIES, ids=lambda q: q.name)
def test_each_query_gives_the_same_rows_on_sqlite_and_postgresql(
    query: DashboardQuery, sqlite_engine: Engine, pg_engine: Engine
) -> None:
    on_sqlite = _rows(sqlite_engine, query)
    on_postgresql = _rows(pg_engine, query)

    assert on_sqlite, f"{query.name} returned no rows: the history should give some"
    assert on_sqlite == on_postgresql


def _in_duckdb(kind: str, target: str, query: DashboardQuery) -> list[dict[str, Any]]:
    """The rows of ``query`` pasted into DuckDB, the database attached as the docs show."""
    duckdb = pytest.importorskip("duckdb")
    package = importlib.import_module(f"duckdb_extension_{kind}_scanner")
    extension = next(Path(package.__file__).parent.rglob("*.duckdb_extension"))
    con = duckdb.connect()
    try:
        con.execute(f"LOAD '{extension}'")
        con.execute(f"ATTACH '{target}' AS jobsync (TYPE {kind}, READ_ONLY); USE jobsync")
        cursor = con.execute(query.sql)
        names = [column[0] for column in cursor.description]
        return [
            {name: _plain(value) for name, value in zip(names, row, strict=True)}
            for row in cursor.fetchall()
        ]
    finally:
        con.close()


@pytest.mark.parametrize("query", DASHBOARD_QUERIES, ids=lambda q: q.name)
def test_each_query_gives_the_same_rows_in_duckdb_reading_sqlite(
    query: DashboardQuery, sqlite_engine: Engine
) -> None:
    expected = _rows(sqlite_engine, query)

    assert expected
    assert _in_duckdb("sqlite", str(sqlite_engine.url.database), query) == expected


@pytest.mark.postgres
@pytest.mark.parametrize("query", DASHBOARD_QUERIES, ids=lambda q: q.name)
def test_each_query_gives_the_same_rows_in_duckdb_reading_postgresql(
    query: DashboardQuery, pg_engine: Engine
) -> None:
    url = pg_engine.url
    target = f"dbname={url.database} host={url.host} port={url.port or 5432} user={url.username}"
    expected = _rows(pg_engine, query)

    assert expected
    assert _in_duckdb("postgres", target, query) == expected


def _finished(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(job_durations).where(job_durations.c.is_finished == 1)))


def test_imports_per_day_and_failure_rate_add_up_the_finished_jobs(sqlite_engine: Engine) -> None:
    # The backlog (jobs whose start no pass observed) is counted apart.
    finished = [r for r in _finished(sqlite_engine) if not r.backlog]
    completed = Counter(
        r.finished_at.date().isoformat() for r in finished if r.final_state == "Completed"
    )
    failed = Counter(
        r.finished_at.date().isoformat() for r in finished if r.final_state == "Failed"
    )

    imports = _rows(sqlite_engine, _by_name("imports_per_day"))
    rates = _rows(sqlite_engine, _by_name("failure_rate_per_day"))

    assert len(imports) == DAYS
    assert {r["day"]: (r["completed"], r["failed"]) for r in imports} == {
        r["day"]: (completed[r["day"]], failed[r["day"]]) for r in imports
    }
    # The first day holds the backlog of the first sync, apart; later days hardly any.
    first, *later = imports
    assert first["backlog_jobs"] > first["new_jobs"] and first["backlog_finished"] > 0
    assert sum(r["new_jobs"] for r in later) > sum(r["backlog_jobs"] for r in later)
    assert [r["day"] for r in rates] == sorted(completed | failed)
    for row in rates:
        day = row["day"]
        assert row["finished"] == completed[day] + failed[day]
        assert row["failure_rate"] == pytest.approx(failed[day] / row["finished"])


def _nearest_rank(values: list[float], p: int) -> float:
    return sorted(values)[math.ceil(p * len(values) / 100) - 1]


def test_durations_per_day_are_nearest_rank_percentiles_of_observed_jobs(
    sqlite_engine: Engine,
) -> None:
    per_day: dict[str, list[float]] = defaultdict(list)
    backlog = 0
    for r in _finished(sqlite_engine):
        if r.backlog:
            backlog += 1  # listed on the source's first pass, or first seen finished
        elif r.estimated_seconds is not None:
            per_day[r.finished_at.date().isoformat()].append(r.estimated_seconds)

    rows = _rows(sqlite_engine, _by_name("durations_per_day"))

    assert backlog > 0
    assert {r["day"]: r["jobs"] for r in rows} == {d: len(v) for d, v in per_day.items()}
    for row in rows:
        values = per_day[row["day"]]
        assert row["p50_seconds"] == _nearest_rank(values, 50)
        assert row["p90_seconds"] == _nearest_rank(values, 90)
        assert row["p95_seconds"] == _nearest_rank(values, 95)
        assert row["p50_seconds"] <= row["p95_seconds"]


def test_stuck_jobs_are_the_active_ones_long_in_their_state(sqlite_engine: Engine) -> None:
    with sqlite_engine.connect() as conn:
        active = list(conn.execute(select(active_jobs.c.job_id, active_jobs.c.seconds_in_state)))
    expected = sorted((-s, j) for j, s in active if s > STUCK_AFTER_SECONDS)

    rows = _rows(sqlite_engine, _by_name("stuck_jobs"))

    assert rows, "the simulated history holds jobs that stopped moving"
    assert len(rows) < len(active)
    assert [(-r["seconds_in_state"], r["job_id"]) for r in rows] == expected


@pytest.mark.postgres
def test_durations_per_day_needs_a_utc_session_which_the_url_option_gives(
    sqlite_engine: Engine, pg_url: str
) -> None:
    query = _by_name("durations_per_day")
    expected = _rows(sqlite_engine, query)
    admin = open_engine(pg_url)
    name = pg_url.rsplit("/", 1)[1]
    with admin.connect() as conn:
        conn.execute(text(f"ALTER DATABASE \"{name}\" SET timezone = 'Pacific/Kiritimati'"))
        conn.commit()
    admin.dispose()
    plain, with_option = open_engine(pg_url), open_engine(f"{pg_url}?options=-c+timezone%3DUTC")
    try:
        shifted = _rows(plain, query)
        fixed = _rows(with_option, query)
    finally:
        plain.dispose()
        with_option.dispose()
        reset = open_engine(pg_url)
        with reset.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" RESET timezone'))
            conn.commit()
        reset.dispose()

    assert shifted != expected  # UTC+14: jobs finished after 10:00 UTC land on the next day
    assert fixed == expected


def test_the_docs_show_every_query_word_for_word() -> None:
    docs = DOCS.read_text()
    for query in DASHBOARD_QUERIES:
        assert query.sql in docs, f"{query.name} is not in {DOCS.name} as it is in the code"
