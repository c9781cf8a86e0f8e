"""A BI tool holding a read transaction open for minutes: syncs keep succeeding beside it, and on
SQLite the write-ahead log shrinks back once the reader ends (docs/deployment.md)."""

from __future__ import annotations

import os
import sqlite3
from typing import Any

import psycopg

from jobsync.service.sync import sync_all
from jobsync.storage.store import sqlite_file
from tests.conftest import settings_for


def _open_reader(db_url: str) -> tuple[Any, int]:
    """A second, real connection in a read transaction that stays open; the jobs it sees."""
    path = sqlite_file(db_url)
    if path is not None:
        reader: Any = sqlite3.connect(path, isolation_level=None)
        reader.execute("BEGIN")
    else:
        reader = psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://"))
        reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    return reader, _count(reader)


def _count(reader: Any) -> int:
    return int(reader.execute("SELECT count(*) FROM import_job_records").fetchone()[0])


def _wal_size(db_url: str) -> int | None:
    path = sqlite_file(db_url)
    if path is None:
        return None
    wal = f"{path}-wal"
    return os.path.getsize(wal) if os.path.exists(wal) else 0


def test_syncs_succeed_beside_a_long_reader_and_the_wal_shrinks_after_it(sim, db_url, engine):
    settings = settings_for(sim, db_url)
    assert all(r.ok for r in sync_all(engine, settings, sleep=lambda _s: None))
    reader, seen = _open_reader(db_url)
    try:
        for _ in range(5):
            sim.add_jobs(40)
            sim.advance(fraction=0.5)
            results = sync_all(engine, settings, sleep=lambda _s: None)
            assert all(r.ok for r in results), [str(r.error) for r in results]
        assert _count(reader) == seen  # the reader's snapshot held all along
        during = _wal_size(db_url)
        # While the reader holds its snapshot, the WAL cannot be reset: it holds the passes.
        assert during is None or during > 0
    finally:
        reader.rollback() if not isinstance(reader, sqlite3.Connection) else reader.execute(
            "ROLLBACK"
        )
        reader.close()

    sim.advance(fraction=0.5)
    assert all(r.ok for r in sync_all(engine, settings, sleep=lambda _s: None))
    assert _wal_size(db_url) in (None, 0)  # checkpointed into the database and truncated
