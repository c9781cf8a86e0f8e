"""Reading a source's stored jobs for a pass (``jobsync.storage.scan``), on both backends.

PostgreSQL reads in two ways (chunks as the server sends them, or a server-side cursor where
libpq cannot); both must find the same jobs, across chunk boundaries, and neither may leave the
connection stuck when the reader fails half-way.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from jobsync.storage import scan
from jobsync.storage.backends import postgresql
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
