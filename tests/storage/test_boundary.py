"""The database's errors leave storage as StorageError, once, at its boundary
(``jobsync.storage.boundary``): naming the database without its password, saying what the
database said, and leaving what it wrote as it was."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from jobsync.domain.records import JobRecord
from jobsync.errors import StorageError
from jobsync.service.sync import sync_source
from jobsync.storage.locking import sync_lock
from jobsync.storage.migrate import (
    current_revision,
    ensure_schema,
    require_current_schema,
    upgrade,
)
from jobsync.storage.samples import load_known_jobs, stored_among
from jobsync.storage.schema import import_job_records, import_job_transitions, sync_runs
from jobsync.storage.store import (
    abandon_stale_runs,
    apply_pass,
    fail_run,
    open_engine,
    start_run,
)
from tests.conftest import count_rows, listed_snapshot, settings_for

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
PASSWORD = "s3cret-pw"


def _with_lock(engine):
    with sync_lock(engine):
        pass


ENTRY_POINTS = {
    "start_run": lambda e: start_run(e, "c", NOW),
    "apply_pass": lambda e: apply_pass(e, "c", 1, listed_snapshot(3, NOW), finished_at=NOW),
    "abandon_stale_runs": lambda e: abandon_stale_runs(e, NOW, ["c"]),
    "load_known_jobs": lambda e: load_known_jobs(e, "c"),
    "stored_among": lambda e: stored_among(e, "c", ["a"]),
    "ensure_schema": ensure_schema,
    "upgrade": upgrade,
    "current_revision": current_revision,
    "require_current_schema": require_current_schema,
}


@pytest.fixture(params=["sqlite-not-a-database", "postgresql-refused"])
def broken(request, tmp_path):
    """An engine on a database that cannot answer: a file that is not SQLite's, or a
    PostgreSQL URL with a password where nothing listens."""
    if request.param == "sqlite-not-a-database":
        path = tmp_path / "garbage.db"
        path.write_bytes(b"this is not a SQLite database, not even close\n" * 100)
        engine = open_engine(f"sqlite:///{path}")
    else:
        engine = open_engine(f"postgresql://jobsync:{PASSWORD}@127.0.0.1:1/jobsync")
    yield engine
    engine.dispose()


@pytest.mark.parametrize("call", list(ENTRY_POINTS.values()), ids=list(ENTRY_POINTS))
def test_every_entry_point_raises_storage_error_naming_the_database(broken, call):
    with pytest.raises(StorageError) as raised:
        call(broken)
    message = str(raised.value)
    assert message.startswith("database ") and "\n" not in message
    assert broken.url.database in message
    assert PASSWORD not in message
    assert raised.value.__cause__ is not None


def test_taking_the_sync_lock_on_a_server_that_does_not_answer_raises_storage_error():
    engine = open_engine(f"postgresql://jobsync:{PASSWORD}@127.0.0.1:1/jobsync")
    try:
        with pytest.raises(StorageError) as raised:
            _with_lock(engine)
    finally:
        engine.dispose()
    assert PASSWORD not in str(raised.value)


def test_recording_a_failure_is_best_effort_and_never_raises(broken, caplog):
    with caplog.at_level(logging.WARNING, logger="jobsync.storage.store"):
        fail_run(broken, 1, NOW, "the real error")
    assert "could not record the failure of run 1" in caplog.text
    assert PASSWORD not in caplog.text


@pytest.mark.parametrize("where", ["new job", "changed job"])
def test_text_no_driver_can_encode_is_a_storage_error_and_writes_nothing(engine, where):
    """A lone surrogate (what JSON's "\\ud800" decodes to) makes both drivers raise
    UnicodeEncodeError, which is no DBAPI error: it still fails the pass cleanly."""
    apply_pass(engine, "c", start_run(engine, "c", NOW), listed_snapshot(3, NOW), finished_at=NOW)
    snapshot = listed_snapshot(3, NOW)
    bad = "bad\ud800state"
    if where == "new job":
        snapshot.jobs["new"] = JobRecord("new", "coll", bad, None, None, NOW)
    else:
        old = snapshot.jobs["j0000"]
        snapshot.jobs["j0000"] = JobRecord(old.job_id, "coll", bad, None, None, NOW)
    run_id = start_run(engine, "c", NOW)

    with pytest.raises(StorageError, match=r"surrogates not allowed|can't encode"):
        apply_pass(engine, "c", run_id, snapshot, finished_at=NOW)

    assert count_rows(engine, import_job_records) == 3
    assert count_rows(engine, import_job_transitions) == 3
    with engine.connect() as conn:
        status = conn.execute(select(sync_runs.c.status).where(sync_runs.c.id == run_id))
        assert status.scalar_one() == "running"


def test_a_pass_whose_run_cannot_be_recorded_is_returned_failed_not_raised(sim, db_url):
    engine = open_engine(db_url)  # no schema: there is no sync_runs table to record in
    try:
        settings = settings_for(sim, db_url)
        result = sync_source(engine, settings.sources[0], settings)
    finally:
        engine.dispose()
    assert not result.ok and result.run_id is None
    assert isinstance(result.error, StorageError)
    assert "sync_runs" in str(result.error)
    assert "failed: database " in result.summary()
