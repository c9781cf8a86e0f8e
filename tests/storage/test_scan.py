"""Reading a source's stored jobs for a pass (``jobsync.storage.scan``), on both backends.

PostgreSQL reads in two ways (chunks as the server sends them, or a server-side cursor where
libpq cannot); both must find the same jobs, across chunk boundaries, and neither may leave the
connection stuck when the reader fails half-way.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from jobsync.domain.history import StoredJob
from jobsync.domain.records import JobRecord
from jobsync.domain.triage import triage, triage_in_order
from jobsync.storage import scan
from jobsync.storage.backends import backend_for, postgresql
from jobsync.storage.schema import import_job_records
from jobsync.storage.store import apply_pass, start_run
from tests.conftest import snapshot_of

T0 = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
JOBS = [f"job-{n:03d}" for n in range(50)]


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("postgresql-cursor", marks=pytest.mark.postgres),
    ]
)
def db_url(request, tmp_path, monkeypatch):
    """Both databases, PostgreSQL also read through a server-side cursor (as where libpq is
    older than 17), in chunks of 7 rows: 50 stored jobs span several."""
    monkeypatch.setattr(scan, "STREAM_CHUNK", 7)
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobsync.db'}"
    if request.param == "postgresql-cursor":
        monkeypatch.setattr(postgresql, "chunked_reads", lambda: False)
    return request.getfixturevalue("postgres_url")


def snapshot(at, job_ids, importing=()):
    return snapshot_of(at, {j: "Importing" if j in importing else "Completed" for j in job_ids})


def first_pass(engine):
    apply_pass(engine, "c", start_run(engine, "c", T0), snapshot(T0, JOBS), finished_at=T0)


def test_the_stored_jobs_a_pass_may_change_are_found_across_chunks(engine):
    first_pass(engine)
    changed = {"job-000", "job-006", "job-007", "job-049"}
    gone = {"job-013", "job-014"}
    new = {"job-050", "job-0005"}
    later = T0 + timedelta(minutes=1)
    listed = [j for j in JOBS if j not in gone] + sorted(new)

    with engine.begin() as conn:
        stored, unknown = scan.load_for_pass(
            conn, "c", snapshot(later, listed, importing=changed).jobs, {"job-020"}
        )

    assert set(stored) == changed | gone | {"job-020"}  # and the one with details
    assert sorted(unknown) == sorted(new)
    assert stored["job-006"].state == "Completed"  # the stored row, in full


def test_a_reader_failing_half_way_fails_the_pass_and_frees_the_connection(engine, monkeypatch):
    first_pass(engine)

    def failing_walk(rows, jobs, detailed):
        for n, _row in enumerate(rows):
            if n == 10:
                raise RuntimeError("the walk broke")
        raise AssertionError("never reached")

    later = T0 + timedelta(minutes=1)
    outcome: list[BaseException] = []

    def failing_pass():
        try:
            apply_pass(
                engine,
                "c",
                start_run(engine, "c", later),
                snapshot(later, JOBS, importing=JOBS),
                finished_at=later,
            )
        except BaseException as exc:
            outcome.append(exc)

    # In a thread with a deadline: a read left open would make the rollback wait forever.
    with monkeypatch.context() as patch:
        patch.setattr(scan, "triage", failing_walk)
        patch.setattr(scan, "triage_in_order", failing_walk)
        worker = threading.Thread(target=failing_pass, daemon=True)
        worker.start()
        worker.join(timeout=60)
    assert not worker.is_alive(), "the failed pass never finished rolling back"
    assert [type(e) for e in outcome] == [RuntimeError]

    with engine.connect() as conn:
        states = set(conn.execute(select(import_job_records.c.state)).scalars())
    assert states == {"Completed"}  # nothing of the failed pass was written
    counts = apply_pass(
        engine,
        "c",
        start_run(engine, "c", later),
        snapshot(later, JOBS, importing={"job-001"}),
        finished_at=later,
    )
    assert (counts.new_jobs, counts.changed_jobs) == (0, 1)


def test_a_streamed_read_gives_the_rows_a_plain_read_gives(engine):
    """Every way of streaming (SQLite's fetchmany, PostgreSQL's chunks and its server-side
    cursor), read to the end or left early, across chunk boundaries, against one fetchall."""
    first_pass(engine)
    backend = backend_for(engine)
    sql = backend.sql(scan.TRIAGE_SQL) + backend.order_by_code_points("job_id")
    with engine.begin() as conn:
        _columns, plain = backend.fetchall(conn, sql, ("c",))
        with scan.stream(conn, sql, ("c",), to_the_end=True) as rows:
            streamed = list(rows)
        with scan.stream(conn, sql, ("c",)) as rows:
            early = [row for _, row in zip(range(10), rows, strict=False)]
        with scan.stream(conn, sql, ("c",)) as rows:
            whole = list(rows)
        assert conn.execute(select(import_job_records.c.job_id).limit(1)).scalar() is not None
    assert len(plain) == len(JOBS)
    assert [tuple(r) for r in streamed] == [tuple(r) for r in plain]
    assert [tuple(r) for r in whole] == [tuple(r) for r in plain]
    assert [tuple(r) for r in early] == [tuple(r) for r in plain[:10]]


def test_full_rows_are_read_by_column_name_whatever_the_columns_order():
    columns = list(StoredJob._fields)
    at = "2026-03-04 05:06:07.000000"
    parsed = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    # A listed job: no last-seen times; its first sighting (and creation window) always.
    values = ("j", "coll", "Failed", "failed", 5, "disk", 0, 2, 0, 1, None, None, None, at, None, 1)
    unlisted = (*values[:10], at, at, at, at, at, 0)
    shuffled = columns[::-1]
    rows = [values[::-1], unlisted[::-1]]

    listed_job, unlisted_job = scan.stored_jobs(shuffled, rows)

    assert listed_job == StoredJob._make((*values[:13], parsed, None, 1))
    assert unlisted_job == StoredJob._make((*values[:10], *[parsed] * 5, 0))


def _plain_triage(rows, jobs, detailed):
    """What triage decides, stated plainly: a stored job is loaded unless it is quiet, still
    listed the same (progress and reason equal or left out), and has no details coming; a
    listed job that is not stored is unknown."""
    load, stored = [], set()
    for job_id, raw_state, collection_name, progress, reason, quiet in rows:
        stored.add(job_id)
        record = jobs.get(job_id)
        unchanged = (
            record is not None
            and quiet
            and record.raw_state == raw_state
            and record.collection_name == collection_name
            and record.progress in (None, progress)
            and record.reason in (None, reason)
        )
        if not unchanged or job_id in detailed:
            load.append(job_id)
    return sorted(load), sorted(j for j in jobs if j not in stored)


IDS = st.text(alphabet="aBz09-éΩω", min_size=1, max_size=3)
STATES = st.sampled_from(["Completed", "completed", "Importing", None])
SMALL = st.sampled_from([None, 0, 50])
REASONS = st.sampled_from([None, "", "disk full"])


@settings(max_examples=300, deadline=None)
@given(
    stored=st.dictionaries(
        IDS, st.tuples(STATES, st.sampled_from(["c", "d"]), SMALL, REASONS, st.booleans())
    ),
    listed=st.dictionaries(IDS, st.tuples(STATES, st.sampled_from(["c", "d"]), SMALL, REASONS)),
    detailed=st.sets(IDS),
)
def test_both_walks_of_triage_decide_what_the_plain_statement_says(stored, listed, detailed):
    jobs = {
        j: JobRecord(j, coll, raw, progress, reason, T0)
        for j, (raw, coll, progress, reason) in listed.items()
    }
    rows = [(j, raw, coll, p, r, int(q)) for j, (raw, coll, p, r, q) in stored.items()]
    want = _plain_triage(rows, jobs, detailed)

    looked_up = triage(rows, jobs, detailed)
    walked = triage_in_order(sorted(rows), jobs, detailed)

    assert (sorted(looked_up.load), sorted(looked_up.unknown)) == want
    assert (sorted(walked.load), sorted(walked.unknown)) == want
