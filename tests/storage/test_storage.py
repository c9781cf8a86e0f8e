"""The storage layer on real databases: schema parity, parity of results, text, time zones."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import insert, inspect, select, text

from jobsync.domain import states
from jobsync.domain.history import PassPlan, new_job
from jobsync.domain.records import JobRecord, Snapshot
from jobsync.errors import SchemaError, StorageError
from jobsync.service.sync import sync_source
from jobsync.storage.backends.sqlite import NEW_ROWS_PER_STATEMENT, SQLITE
from jobsync.storage.backends.sqlite_connect import SQLITE_PAGE_SIZE
from jobsync.storage.bulk import insert_new_jobs
from jobsync.storage.migrate import (
    HEAD_REVISION,
    current_revision,
    ensure_schema,
    head_revision,
    require_current_schema,
    upgrade,
)
from jobsync.storage.scan import STORED_IDS_SQL, TRIAGE_SQL
from jobsync.storage.schema import import_job_records, import_job_transitions, metadata, sync_runs
from jobsync.storage.store import apply_pass, open_engine, start_run
from tests.conftest import (
    CLUSTER,
    count_rows,
    insert_job_record,
    listed_snapshot,
    settings_for,
    snapshot_of,
)


def test_migrated_schema_matches_the_tables_the_code_uses(engine):
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    assert "import_jobs" in inspect(engine).get_view_names()


def test_upgrade_is_idempotent_and_reports_head(engine):
    assert upgrade(engine) == (head_revision(), head_revision())
    assert current_revision(engine) == head_revision()


def test_the_head_constant_names_the_latest_revision_on_disk():
    # ensure_schema trusts HEAD_REVISION to skip importing Alembic: a new revision must bump it.
    assert head_revision() == HEAD_REVISION


def test_a_current_schema_is_checked_without_importing_alembic(tmp_path):
    db = tmp_path / "current.db"
    script = (
        "import sys\n"
        "from jobsync.storage.store import open_engine\n"
        "from jobsync.storage.migrate import ensure_schema\n"
        f"engine = open_engine({f'sqlite:///{db}'!r})\n"
        "ensure_schema(engine)\n"  # a fresh file: from the schema script, without Alembic
        "print('alembic' in sys.modules)\n"
        "import alembic\n"
        "del sys.modules['alembic']\n"
        "ensure_schema(engine)\n"
        "print('alembic' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "False"]


def test_a_schema_from_a_newer_jobsync_is_refused_for_writing_and_reading(engine):
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))

    for check in (ensure_schema, require_current_schema):
        with pytest.raises(SchemaError, match=r"revision 9999.*newer jobsync\): upgrade jobsync"):
            check(engine)


def test_ensure_schema_creates_a_fresh_database(db_url):
    engine = open_engine(db_url)
    ensure_schema(engine)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_hostile_text_is_stored_and_read_back_identically(engine):
    texts = [
        'it\'s "quoted"; DROP TABLE import_jobs; --',
        "ünïcødé ✓ 汉字 🚀",
        "x" * 6000,
        "line\nbreak\ttab\x1b[31m",
    ]
    now = datetime.now(UTC)
    with engine.begin() as conn:
        run_id = conn.execute(
            insert(sync_runs).values(cluster_id="c", started_at=now, status="running")
        ).inserted_primary_key[0]
        for i, value in enumerate(texts):
            insert_job_record(
                conn,
                cluster_id="c",
                job_id=f"j{i}",
                state="Unknown",
                seen_at=now,
                collection_name=value,
                raw_state=value,
                listed=True,
            )
            conn.execute(
                insert(import_job_transitions).values(
                    cluster_id="c",
                    job_id=f"j{i}",
                    kind="first_seen",
                    raw_to_state=value,
                    observed_at=now,
                    sync_run_id=run_id,
                )
            )
    with engine.connect() as conn:
        stored = (
            conn.execute(
                select(import_job_records.c.collection_name).order_by(import_job_records.c.job_id)
            )
            .scalars()
            .all()
        )
    assert stored == texts


def test_times_are_stored_as_utc_whatever_offset_they_come_with(engine):
    plus8 = datetime(2026, 3, 1, 8, 0, tzinfo=timezone(timedelta(hours=8)))
    with engine.begin() as conn:
        conn.execute(insert(sync_runs).values(cluster_id="c", started_at=plus8, status="running"))
    with engine.connect() as conn:
        back = conn.execute(select(sync_runs.c.started_at)).scalar_one()
    assert back == plus8 and back.tzinfo == UTC and back.hour == 0


def _history(engine):
    with engine.connect() as conn:
        jobs = conn.execute(
            select(
                import_job_records.c.job_id,
                import_job_records.c.state,
                import_job_records.c.raw_state,
                import_job_records.c.vanished_at.is_(None),
            ).order_by(import_job_records.c.job_id)
        ).all()
        transitions = conn.execute(
            select(
                import_job_transitions.c.job_id,
                import_job_transitions.c.kind,
                import_job_transitions.c.from_state,
                import_job_transitions.c.to_state,
                import_job_transitions.c.window_start.is_(None),
            ).order_by(import_job_transitions.c.job_id, import_job_transitions.c.id)
        ).all()
    return [tuple(r) for r in jobs], [tuple(r) for r in transitions]


def test_sqlite_and_postgresql_record_the_same_history(sim, tmp_path, postgres_url):
    engines = [open_engine(f"sqlite:///{tmp_path / 'parity.db'}"), open_engine(postgres_url)]
    for eng in engines:
        upgrade(eng)
    job_ids = [j.job_id for j in sim.jobs(CLUSTER)]
    for step in range(5):
        for eng in engines:
            settings = settings_for(sim, "unused")
            assert sync_source(eng, settings.sources[0], settings).ok
        sim.advance(fraction=0.4)
        sim.add_jobs(2, cluster_id=CLUSTER)
        if step == 1:
            sim.remove_jobs(CLUSTER, job_ids[:3])
        if step == 2:
            sim.set_state(CLUSTER, job_ids[5], "Weird\x00State\ud800")
    sqlite_result, pg_result = (_history(eng) for eng in engines)
    assert sqlite_result == pg_result
    assert any(t[1] == "vanished" for t in sqlite_result[1])
    for eng in engines:
        eng.dispose()


@pytest.mark.parametrize("count", [1, 49, 50, 51, 123])
def test_new_jobs_are_written_whole_across_statement_boundaries(engine, count):
    """New jobs go to SQLite 50 to a statement: a count on either side of that still writes
    every job and its first_seen transition, with the values the planner derives."""
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    run_id = start_run(engine, "c", now)
    counts = apply_pass(engine, "c", run_id, listed_snapshot(count, now), finished_at=now)
    assert counts.new_jobs == count and counts.rows_written == 2 * count + 2
    records, history = import_job_records.c, import_job_transitions.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(records.job_id, records.state, records.finished_at).order_by(records.job_id)
        ).all()
        kinds = conn.execute(
            select(history.job_id, history.kind, history.to_state, history.reason)
            .where(history.sync_run_id == run_id)
            .order_by(history.job_id)
        ).all()
    assert [r.job_id for r in rows] == [f"j{i:04d}" for i in range(count)]
    assert [k.job_id for k in kinds] == [r.job_id for r in rows]
    assert {k.kind for k in kinds} == {"first_seen"}
    for row, kind in zip(rows, kinds, strict=True):
        assert kind.to_state == row.state
        assert (row.finished_at is not None) == (row.state in ("Completed", "Failed"))
        assert kind.reason == ("bad file" if row.state == "Failed" else None)


def test_the_new_job_writers_store_what_the_planner_derives(engine):
    """A new job's rules live in ``history.new_job`` and, for speed, again in the writers
    (SQLite's parameter loop and its SQL, PostgreSQL's COPY rows): for every known state
    spelling, an unknown one and none, with and without progress and reason, across a
    statement boundary and two observation times, the stored row and its ``first_seen``
    transition hold exactly what ``new_job`` says."""
    first = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    later = first + timedelta(seconds=1, microseconds=7)
    snapshot = Snapshot(source_key="c", started_at=first, finished_at=later, complete=True)
    # Every spelling the APIs are known to send, read from the table that maps them.
    spellings: list[str | None] = [*sorted(states._VARIANTS), "NotAState", "failed", None]
    extras = ((None, None), (40, "bad file"), (0, "tab\tand é"))
    for i, raw in enumerate(spellings):
        for k, (progress, reason) in enumerate(extras):
            job_id = f"j{i:02d}{k}"
            snapshot.jobs[job_id] = JobRecord(
                job_id, f"coll{k}", raw, progress, reason, first if k != 1 else later
            )
    assert len(snapshot.jobs) > NEW_ROWS_PER_STATEMENT
    run_id = start_run(engine, "c", later)
    apply_pass(engine, "c", run_id, snapshot, finished_at=later)

    records, history = import_job_records.c, import_job_transitions.c
    with engine.connect() as conn:
        stored = {
            r.job_id: r
            for r in conn.execute(select(import_job_records).where(records.cluster_id == "c"))
        }
        first_seen = {
            t.job_id: t
            for t in conn.execute(
                select(import_job_transitions).where(history.sync_run_id == run_id)
            )
        }
    assert set(stored) == set(first_seen) == set(snapshot.jobs)
    for job_id, record in snapshot.jobs.items():
        want, row, seen = new_job(record), stored[job_id], first_seen[job_id]
        assert (row.collection_name, row.state, row.raw_state, row.progress, row.reason) == (
            want.collection_name,
            want.state,
            want.raw_state,
            want.progress,
            want.reason,
        ), job_id
        assert (row.first_seen_at, row.state_since, row.finished_at) == (
            want.observed_at,
            want.observed_at,
            want.finished_at,
        ), job_id
        assert (row.listed, row.missed_snapshots, row.vanished_at) == (True, 0, None), job_id
        assert (seen.kind, seen.from_state, seen.raw_from_state) == ("first_seen", None, None)
        assert (seen.to_state, seen.raw_to_state, seen.reason) == (
            want.state,
            want.raw_state,
            want.failure_reason,
        ), job_id
        assert (seen.observed_at, seen.window_start) == (want.observed_at, None), job_id


def test_a_new_job_that_is_already_stored_fails_the_write_and_changes_nothing(engine):
    """Under the pass's write lock a job planned as new cannot exist; if one did, the insert
    fails instead of overwriting it, and the transaction leaves everything as it was, even the
    new rows that SQLite's statement (OR FAIL) wrote before the conflicting one."""
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    apply_pass(engine, "c", start_run(engine, "c", now), listed_snapshot(3, now), finished_at=now)
    later = now + timedelta(hours=1)
    stored = listed_snapshot(3, later).jobs["j0001"]
    # In key order the stored job comes 31st, in the middle of the first multi-row statement.
    new = [*listed_snapshot(30, later, "i").jobs.values(), stored]
    new += listed_snapshot(30, later, "k").jobs.values()
    assert len(new) > NEW_ROWS_PER_STATEMENT > 31
    plan = PassPlan(
        run_id=start_run(engine, "c", later),
        first_seen_window=None,
        seen_started_at=later,
        seen_at=later,
        new=new,
    )
    with pytest.raises(StorageError), engine.begin() as conn:
        insert_new_jobs(conn, "c", plan)
    assert count_rows(engine, import_job_records) == 3
    assert count_rows(engine, import_job_transitions) == 3
    with engine.connect() as conn:
        seen = conn.execute(select(import_job_records.c.last_seen_at)).scalars().all()
    assert set(seen) == {now}


def test_sqlite_first_seen_rows_are_all_found_or_the_pass_fails(tmp_path):
    """SQLite copies first_seen history from the rows a pass just wrote, found as the rowids
    above the highest before them. Once a table holds the largest rowid, SQLite picks new ones
    at random: the copy then misses some, and the pass must fail rather than lose them."""
    engine = open_engine(f"sqlite:///{tmp_path / 'rowids.db'}")
    upgrade(engine)
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO import_job_records (rowid, cluster_id, job_id, state, first_seen_at, "
            "state_since, last_seen_at, last_seen_started_at, listed) "
            "VALUES (9223372036854775807, 'other', 'x', 'Pending', ?, ?, ?, ?, 0)",
            ("2026-01-01 00:00:00.000000",) * 4,
        )
    run_id = start_run(engine, "c", now)
    with pytest.raises(StorageError, match="first seen"):
        apply_pass(engine, "c", run_id, listed_snapshot(60, now), finished_at=now)
    assert count_rows(engine, import_job_records) == 1
    assert count_rows(engine, import_job_transitions) == 0
    engine.dispose()


def test_sqlite_databases_are_created_with_8_kib_pages_and_older_ones_keep_theirs(tmp_path):
    fresh = tmp_path / "fresh.db"
    engine = open_engine(f"sqlite:///{fresh}")
    ensure_schema(engine)
    engine.dispose()
    older = tmp_path / "older.db"
    with sqlite3.connect(older) as conn:  # as an earlier jobsync made it: SQLite's default
        conn.execute("PRAGMA page_size = 4096")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE unrelated (x)")
    engine = open_engine(f"sqlite:///{older}")
    ensure_schema(engine)
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    apply_pass(engine, "c", start_run(engine, "c", now), listed_snapshot(60, now), finished_at=now)
    assert count_rows(engine, import_job_records) == 60
    engine.dispose()

    def pragmas(path):
        with sqlite3.connect(path) as conn:
            return [
                conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_size", "journal_mode")
            ]

    assert SQLITE_PAGE_SIZE == 8192
    assert pragmas(fresh) == [8192, "wal"]
    assert pragmas(older) == [4096, "wal"]


def test_a_new_sqlite_file_another_process_is_writing_opens_once_its_write_ends(tmp_path):
    """Two crontab lines on a new database: switching a file to WAL while another connection
    writes to it in rollback mode gets "database is locked" at once, not after SQLite's busy
    timeout. The switch is tried again until the other's transaction ends."""
    path = tmp_path / "new.db"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE being_written (x)")
    # The other process's transaction ends a moment later, whatever this one does.
    ends = threading.Timer(0.2, lambda: other.execute("COMMIT"))
    ends.start()
    engine = open_engine(f"sqlite:///{path}")
    try:
        ensure_schema(engine)
        assert current_revision(engine) == head_revision()
    finally:
        ends.join()
        engine.dispose()
        other.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize(
    ("query", "index"),
    [
        # Triage reads the jobs not vanished: through their partial index, not every job the
        # source ever had.
        (TRIAGE_SQL.format(p="?"), "ix_import_job_records_present"),
        (STORED_IDS_SQL.format(p="?"), "sqlite_autoindex_import_job_records_1"),
    ],
    ids=["triage", "ids-for-details"],
)
def test_sqlite_streams_stored_jobs_in_key_order_straight_from_the_index(tmp_path, query, index):
    """Triage and the choice of jobs for details walk SQLite's rows in code-point order: the
    order must come from an index on (cluster_id, job_id), not from sorting every stored job."""
    engine = open_engine(f"sqlite:///{tmp_path / 'plan.db'}")
    ensure_schema(engine)
    with engine.connect() as conn:
        plan = conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN " + query + SQLITE.order_by_code_points("job_id"), ("c",)
        ).fetchall()
    engine.dispose()
    details = " / ".join(row[-1] for row in plan)
    assert f"{index} (cluster_id=?)" in details
    assert "TEMP B-TREE" not in details


def test_passes_pair_stored_and_listed_jobs_whatever_the_collation_says(engine):
    """Ids whose byte order and locale order differ (case, digits, non-ASCII), listed in an
    order of neither: an unchanged re-sync writes nothing, and one change, one new job and one
    job that left the list are each found, on both backends."""
    ids = ["10", "9", "B", "a", "b", "é", "z", "Ω", "ω", "Z-9", "z-10"]
    t0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    def snapshot(at, job_ids, finished=()):
        return snapshot_of(at, {j: "Completed" if j in finished else "Importing" for j in job_ids})

    def apply(snap, at):
        return apply_pass(engine, "c", start_run(engine, "c", at), snap, finished_at=at)

    apply(snapshot(t0, ids[::3] + ids[1::3] + ids[2::3]), t0)
    unchanged = apply(snapshot(t0 + timedelta(minutes=1), ids[::-1]), t0 + timedelta(minutes=1))
    assert (unchanged.new_jobs, unchanged.changed_jobs, unchanged.rows_written) == (0, 0, 2)

    later = t0 + timedelta(minutes=2)
    moved = apply(snapshot(later, ["new", *ids[1:]], finished={"é"}), later)

    assert (moved.new_jobs, moved.changed_jobs) == (1, 1)
    with engine.connect() as conn:
        rows = conn.execute(
            select(import_job_records.c.job_id, import_job_records.c.state).where(
                import_job_records.c.job_id.in_(["é", "new", "10"])
            )
        ).all()
        missed = conn.execute(
            select(import_job_records.c.missed_snapshots).where(import_job_records.c.job_id == "10")
        ).scalar_one()
    assert sorted(rows) == [("10", "Importing"), ("new", "Importing"), ("é", "Completed")]
    assert missed == 1  # not listed by this complete pass


def test_sqlite_reads_active_jobs_through_the_open_jobs_index(tmp_path):
    """Two partial indexes could serve active_jobs (the open jobs, and the jobs present): the
    larger one would read every job a long list shows. Its predicate keeps it out."""
    engine = open_engine(f"sqlite:///{tmp_path / 'plan.db'}")
    ensure_schema(engine)
    with engine.connect() as conn:
        plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN SELECT * FROM active_jobs").fetchall()
    engine.dispose()
    details = " / ".join(row[-1] for row in plan)
    assert "USING INDEX ix_import_job_records_open" in details
    assert "ix_import_job_records_present" not in details
