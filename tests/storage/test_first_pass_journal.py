"""A new SQLite database's first large pass is written outside the WAL, then the file goes back
to WAL mode (``jobsync.storage.backends.sqlite_connect.outside_wal``); every other pass as
always. (Journal modes are SQLite's: on PostgreSQL ``journal_for_pass`` does nothing, and every
pass test there runs through it.)"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from jobsync.storage import bulk
from jobsync.storage.backends import sqlite as sqlite_backend
from jobsync.storage.migrate import ensure_schema
from jobsync.storage.schema import import_job_records, import_job_transitions
from jobsync.storage.store import apply_pass, open_engine, start_run
from tests.conftest import snapshot_of

T0 = datetime(2026, 7, 1, 9, 0, tzinfo=UTC)
JOBS = 30
OUTSIDE = "writing the first pass of a new database without the WAL"


@pytest.fixture
def small_first_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Passes of JOBS jobs count as large."""
    monkeypatch.setattr(sqlite_backend, "FIRST_PASS_WITHOUT_WAL", JOBS)


@pytest.fixture
def new_db(tmp_path: Path) -> Engine:
    engine = open_engine(f"sqlite:///{tmp_path / 'new.db'}")
    ensure_schema(engine)
    yield engine
    engine.dispose()


def _pass(engine: Engine, hour: int, states: dict[str, str]) -> None:
    when = T0 + timedelta(hours=hour)
    snapshot = snapshot_of(when, states)
    snapshot.source_key = "c"
    run_id = start_run(engine, "c", when)
    apply_pass(engine, "c", run_id, snapshot, finished_at=when + timedelta(seconds=1))


def _listed(n: int = JOBS, state: str = "Pending") -> dict[str, str]:
    return {f"job-{i:03d}": state for i in range(n)}


def _file_state(engine: Engine) -> tuple[str, int, int, str]:
    """(journal mode, jobs, transitions, integrity) as a separate connection reads them."""
    path = engine.url.database
    assert path is not None
    with sqlite3.connect(path) as conn:
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
        (jobs,) = conn.execute("SELECT count(*) FROM import_job_records").fetchone()
        (moves,) = conn.execute("SELECT count(*) FROM import_job_transitions").fetchone()
        (check,) = conn.execute("PRAGMA integrity_check").fetchone()
    return mode, jobs, moves, check


def test_the_first_large_pass_is_written_outside_the_wal_and_the_file_returns_to_it(
    new_db, small_first_pass, caplog
):
    with caplog.at_level(logging.DEBUG, logger="jobsync.storage.backends.sqlite"):
        _pass(new_db, 0, _listed())
    assert OUTSIDE in caplog.text
    assert _file_state(new_db) == ("wal", JOBS, JOBS, "ok")
    # The connection it used checkpoints, reads and writes as any other.
    sqlite_backend.SQLITE.checkpoint(new_db)
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="jobsync.storage.backends.sqlite"):
        _pass(new_db, 1, _listed(state="Importing"))
    assert OUTSIDE not in caplog.text  # the database holds jobs now
    assert _file_state(new_db) == ("wal", JOBS, 2 * JOBS, "ok")


def test_a_small_first_pass_is_written_in_wal_mode(new_db, caplog):
    with caplog.at_level(logging.DEBUG, logger="jobsync.storage.backends.sqlite"):
        _pass(new_db, 0, _listed())
    assert OUTSIDE not in caplog.text
    assert _file_state(new_db) == ("wal", JOBS, JOBS, "ok")


def test_while_another_connection_has_the_file_open_the_pass_is_written_in_wal_mode(
    new_db, small_first_pass, caplog
):
    path = new_db.url.database
    assert path is not None
    reader = sqlite3.connect(path)
    try:
        reader.execute("SELECT count(*) FROM import_job_records").fetchall()
        with caplog.at_level(logging.DEBUG, logger="jobsync.storage.backends.sqlite"):
            _pass(new_db, 0, _listed())
    finally:
        reader.close()
    assert OUTSIDE not in caplog.text
    assert _file_state(new_db) == ("wal", JOBS, JOBS, "ok")


def test_a_first_pass_that_fails_outside_the_wal_writes_nothing_and_the_next_one_works(
    new_db, small_first_pass, monkeypatch
):
    real = bulk.insert_transitions

    def failing(*args, **kwargs):
        real(*args, **kwargs)
        raise RuntimeError("the pass dies after writing its rows")

    monkeypatch.setattr(bulk, "insert_transitions", failing)
    with pytest.raises(RuntimeError):
        _pass(new_db, 0, _listed())
    assert _file_state(new_db) == ("wal", 0, 0, "ok")
    monkeypatch.setattr(bulk, "insert_transitions", real)
    _pass(new_db, 1, _listed())
    assert _file_state(new_db) == ("wal", JOBS, JOBS, "ok")


def test_a_process_killed_in_a_first_pass_outside_the_wal_leaves_the_file_as_before(tmp_path):
    path = tmp_path / "killed.db"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from datetime import UTC, datetime, timedelta
        sys.path.insert(0, {str(Path(__file__).parents[2])!r})
        from jobsync.storage import bulk
        from jobsync.storage.backends import sqlite as sqlite_backend
        from jobsync.storage.migrate import ensure_schema
        from jobsync.storage.store import apply_pass, open_engine, start_run
        from tests.conftest import snapshot_of

        sqlite_backend.FIRST_PASS_WITHOUT_WAL = 1
        real = bulk.insert_transitions

        def dying(*args, **kwargs):
            real(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)  # rows written, not committed

        bulk.insert_transitions = dying
        engine = open_engine("sqlite:///{path}")
        ensure_schema(engine)
        when = datetime(2026, 7, 1, tzinfo=UTC)
        snapshot = snapshot_of(when, {{f"job-{{i}}": "Pending" for i in range(500)}})
        snapshot.source_key = "c"
        apply_pass(engine, "c", start_run(engine, "c", when), snapshot, finished_at=when)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert Path(f"{path}-journal").exists()  # hot: the next connection rolls it back
    engine = open_engine(f"sqlite:///{path}")
    try:
        ensure_schema(engine)
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(import_job_records)).scalar() == 0
        _pass(engine, 0, _listed())
        with engine.connect() as conn:
            moves = select(func.count()).select_from(import_job_transitions)
            assert conn.execute(moves).scalar() == JOBS
        assert _file_state(engine) == ("wal", JOBS, JOBS, "ok")
    finally:
        engine.dispose()
    assert not Path(f"{path}-journal").exists()
    assert os.path.getsize(path) > 0


def test_a_pass_that_cannot_return_the_file_to_wal_still_succeeds_and_the_next_open_does(
    new_db, small_first_pass, monkeypatch, caplog
):
    from jobsync.storage.backends import sqlite_connect

    def locked(_cursor):
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(sqlite_connect, "_switch_to_wal", locked)
    with caplog.at_level(logging.WARNING, logger="jobsync.storage.backends.sqlite_connect"):
        _pass(new_db, 0, _listed())
    assert "stays out of WAL mode" in caplog.text
    assert _file_state(new_db)[1:] == (JOBS, JOBS, "ok")  # committed all the same
    monkeypatch.undo()
    new_db.dispose()
    again = open_engine(str(new_db.url))
    try:
        with again.connect() as conn:
            conn.exec_driver_sql("SELECT 1").fetchall()
    finally:
        again.dispose()
    assert _file_state(new_db) == ("wal", JOBS, JOBS, "ok")
