"""Shared fixtures: a real database of each kind, and the simulator on a loopback port.

PostgreSQL tests use ``JOBSYNC_TEST_POSTGRES_URL`` (default: the local server, database
``postgres``) to create a throw-away database per test. Where no server answers they are
skipped with the reason, unless ``JOBSYNC_TEST_REQUIRE_POSTGRES=1`` (set by CI) makes that a
failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import (
    Connection,
    Engine,
    MetaData,
    Table,
    create_engine,
    func,
    insert,
    select,
    text,
)

from jobsync.api.progress import KNOWN_PATHS
from jobsync.config import HttpSettings, Settings, Source
from jobsync.domain.records import JobRecord, Snapshot
from jobsync.observability import redact
from jobsync.observability.redact import Secret
from jobsync.service.sync import sync_source
from jobsync.simulator import Simulator
from jobsync.storage.migrate import upgrade
from jobsync.storage.schema import import_job_records
from jobsync.storage.store import apply_pass, normalise_url, open_engine, start_run
from tests.receiver import Receiver

PG_ADMIN_URL = os.environ.get(
    "JOBSYNC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REQUIRE_PG = os.environ.get("JOBSYNC_TEST_REQUIRE_POSTGRES") == "1"
API_KEY = "sim-key-0123456789"
CLUSTER = "in01-0123456789abcdef"
# Short timeouts and retries that do not wait: a simulator on loopback answers at once.
FAST_HTTP = HttpSettings(
    connect_timeout=2,
    read_timeout=5,
    request_deadline=10,
    max_retries=3,
    backoff_factor=0.0,
    backoff_jitter=0.0,
)

_pg_problem: str | None = None
_pg_checked = False


def _postgres_problem() -> str | None:
    global _pg_checked, _pg_problem
    if not _pg_checked:
        _pg_checked = True
        try:
            engine = create_engine(normalise_url(PG_ADMIN_URL), connect_args={"connect_timeout": 3})
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            engine.dispose()
        except Exception as exc:
            _pg_problem = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return _pg_problem


def require_postgres() -> None:
    problem = _postgres_problem()
    if problem is None:
        return
    message = (
        f"PostgreSQL is not reachable at {redact.redact(PG_ADMIN_URL)} ({problem}); "
        "set JOBSYNC_TEST_POSTGRES_URL to run the PostgreSQL tests"
    )
    if REQUIRE_PG:
        pytest.fail(message + " [required: JOBSYNC_TEST_REQUIRE_POSTGRES=1]")
    pytest.skip(message)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    require_postgres()
    name = f"jobsync_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalise_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind: every storage and sync test runs on both."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobsync.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on a migrated database."""
    eng = open_engine(db_url)
    upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(cluster_ids=(CLUSTER,), jobs=50, api_key=API_KEY, seed=1) as simulator:
        yield simulator


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A notification receiver on loopback, closed after the test."""
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def no_backoff_in_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Commands run in a temporary directory, and the client's retries do not sleep."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("jobsync.api.client.time.sleep", lambda _s: None)


def sync_args(sim: Simulator, db_url: str, *more: str) -> list[str]:
    """The arguments of ``jobsync sync`` from the simulator's first cluster into ``db_url``."""
    return ["sync", "--db", db_url, "--base-url", sim.url, "--cluster-id", CLUSTER, *more]


def settings_for(sim: Simulator, db_url: str, **overrides: object) -> Settings:
    """Settings for syncing the simulator's clusters, fast retries, injected nothing, and no
    progress details (tests that count requests count list requests)."""
    values: dict[str, object] = {
        "database_url": db_url,
        "sources": tuple(
            Source(name=c, cluster_id=c, base_url=sim.url, api_key=Secret(API_KEY))
            for c in sim.cluster_ids
        ),
        "http": FAST_HTTP,
        "details": False,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def insert_job_record(
    conn: Connection, *, cluster_id: str, job_id: str, state: str, seen_at: datetime, **columns: Any
) -> None:
    """One import_job_records row, first seen, in its state since and last seen at ``seen_at``
    unless ``columns`` say otherwise."""
    times = ("first_seen_at", "state_since", "last_seen_at", "last_seen_started_at")
    values = {"cluster_id": cluster_id, "job_id": job_id, "state": state}
    conn.execute(
        insert(import_job_records).values({**values, **dict.fromkeys(times, seen_at), **columns})
    )


def count_rows(engine: Engine, table: Table, *where: object) -> int:
    """Rows of ``table`` (matching ``where``), read in a connection of its own."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def database_text(db_url: str) -> str:
    """Every row of every table, and on SQLite the bytes of the file and its WAL: whatever a
    secret could have been written into."""
    engine = open_engine(db_url)
    meta = MetaData()
    meta.reflect(engine)
    dump = []
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            dump += [repr(tuple(row)) for row in conn.execute(select(table))]
    engine.dispose()
    if db_url.startswith("sqlite:///"):
        path = Path(db_url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal"):
            if Path(f"{path}{suffix}").exists():
                dump.append(Path(f"{path}{suffix}").read_bytes().decode("latin-1"))
    return "\n".join(dump)


def listed_snapshot(count: int, observed_at: datetime, prefix: str = "j") -> Snapshot:
    """A complete snapshot of ``count`` jobs, ``<prefix>0000`` on, cycling through the four
    kinds of state (a failed one with a reason), all seen at ``observed_at``."""
    snapshot = Snapshot(source_key="c", started_at=observed_at, finished_at=observed_at)
    states = ("Pending", "ImportRunning", "Completed", "Failed")
    for i in range(count):
        state = states[i % 4]
        reason = "bad file" if state == "Failed" else None
        job_id = f"{prefix}{i:04d}"
        snapshot.jobs[job_id] = JobRecord(job_id, "coll", state, 10, reason, observed_at)
    snapshot.complete = True
    return snapshot


def snapshot_of(observed_at: datetime, states: Mapping[str, str]) -> Snapshot:
    """A complete snapshot of the given jobs, listed in that order, in the given states, all
    seen at ``observed_at``."""
    snapshot = listed_snapshot(0, observed_at)
    for job_id, state in states.items():
        snapshot.jobs[job_id] = JobRecord(job_id, "coll", state, 10, None, observed_at)
    return snapshot


def daily_passes(db_url: str, cluster_id: str, first: datetime, days: int) -> None:
    """One pass a day from ``first`` on, each listing one Pending job: passes that record
    nothing after the first, for pruning to roll up."""
    engine = open_engine(db_url)
    upgrade(engine)
    for n in range(days):
        when = first + timedelta(days=n)
        run_id = start_run(engine, cluster_id, when)
        snapshot = snapshot_of(when, {"a": "Pending"})
        snapshot.source_key = cluster_id
        apply_pass(engine, cluster_id, run_id, snapshot, finished_at=when + timedelta(seconds=1))
    engine.dispose()


def sync_backlog_then_new_jobs(engine: Engine, settings: Settings, sim: Simulator) -> None:
    """Three passes of the first source: the backlog; then jobs a pass saw start; then the
    same jobs seen finished, beside three new ones still active. Facts of both kinds: backlog
    and observed jobs, finishes of each, and open jobs."""
    source = settings.sources[0]
    assert sync_source(engine, source, settings).ok
    sim.add_jobs(10)
    assert sync_source(engine, source, settings).ok
    for _step in range(3):  # Pending, Importing, then Completed or Failed
        sim.advance(fraction=1.0)
    sim.add_jobs(3)
    assert sync_source(engine, source, settings).ok


@pytest.fixture(autouse=True)
def _reset_secret_registry() -> Iterator[None]:
    yield
    redact._reset_for_tests()


@pytest.fixture(autouse=True)
def _forget_progress_paths() -> None:
    # The process remembers which progress path each API address answered on; tests reuse
    # loopback ports, so a test could start with what an earlier simulator at its port taught.
    KNOWN_PATHS.forget()
