"""Several processes at once: one sync per database, a killed holder frees the lock at once,
concurrent schema upgrades all succeed. Real subprocesses, real databases."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner
from sqlalchemy import event, select

from jobsync.cli import cli
from jobsync.errors import SchemaError
from jobsync.storage.locking import sync_lock
from jobsync.storage.migrate import current_revision, ensure_schema, head_revision, upgrade
from jobsync.storage.schema import sync_runs
from jobsync.storage.store import open_engine
from tests.conftest import API_KEY, CLUSTER

HOLD_LOCK = """
import sys
from jobsync.storage.locking import sync_lock
from jobsync.storage.store import open_engine
with sync_lock(open_engine(sys.argv[1])):
    print("locked", flush=True)
    sys.stdin.read()
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("JOBSYNC_DATABASE_URL", None)
    env["JOBSYNC_API_KEY"] = API_KEY
    return env


def _holder(db_url: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, db_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"  # blocks until the lock is held
    return proc


def test_a_second_sync_exits_75_with_one_line_while_another_holds_the_lock(sim, db_url):
    holder = _holder(db_url)
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "jobsync",
                "sync",
                "--db",
                db_url,
                "--base-url",
                sim.url,
                "--cluster-id",
                CLUSTER,
            ],
            capture_output=True,
            text=True,
            env=_env(),
            timeout=60,
        )
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 75
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("Error: another jobsync sync is running")
    assert sim.request_count == 0


def test_the_lock_is_free_at_once_after_its_holder_is_killed(db_url):
    holder = _holder(db_url)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()

    engine = open_engine(db_url)
    with sync_lock(engine):  # would raise LockedError if the lock had outlived its holder
        pass
    engine.dispose()


def test_the_lock_excludes_a_second_holder_in_the_same_process(db_url):
    from jobsync.errors import LockedError

    engine = open_engine(db_url)
    with sync_lock(engine), pytest.raises(LockedError):
        with sync_lock(engine):
            pass
    with sync_lock(engine):  # released on exit
        pass
    engine.dispose()


def test_a_killed_pass_is_marked_abandoned_by_the_next(sim, db_url):
    runner = CliRunner()
    args = ["sync", "--db", db_url, "--base-url", sim.url, "--cluster-id", CLUSTER]
    assert runner.invoke(cli, args, env={"JOBSYNC_API_KEY": API_KEY}).exit_code == 0
    engine = open_engine(db_url)
    from jobsync.service.sync import utcnow
    from jobsync.storage.store import start_run

    dead = start_run(engine, CLUSTER, utcnow())  # what a process killed mid-pass leaves

    assert runner.invoke(cli, args, env={"JOBSYNC_API_KEY": API_KEY}).exit_code == 0
    with engine.connect() as conn:
        statuses = dict(conn.execute(select(sync_runs.c.id, sync_runs.c.status)).all())
    engine.dispose()
    assert statuses[dead] == "abandoned"
    assert sorted(statuses.values()) == ["abandoned", "succeeded", "succeeded"]


def test_three_concurrent_upgrades_all_succeed_and_one_applies(db_url):
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "jobsync", "db", "upgrade", "--db", db_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    applied = [out for out, _err in outputs if "upgraded" in out]
    assert len(applied) == 1
    engine = open_engine(db_url)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_a_schema_another_process_creates_between_two_reads_is_taken_as_it_is(db_url):
    """Two crontab lines on a new database: one finds no revision, then the other creates the
    whole schema before the first looks again. The first must take it, not refuse it as
    tables without a revision."""
    engine = open_engine(db_url)
    other = open_engine(db_url)
    connects = 0

    def the_other_process_creates_the_schema(_conn):
        nonlocal connects
        connects += 1
        if connects == 2:  # after the read that found no revision
            upgrade(other)

    event.listen(engine, "engine_connect", the_other_process_creates_the_schema)
    try:
        ensure_schema(engine)
        assert connects >= 2
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
        other.dispose()


def test_tables_without_a_revision_are_still_refused(db_url):
    engine = open_engine(db_url)
    try:
        with engine.begin() as conn:
            sync_runs.create(conn)
        with pytest.raises(SchemaError, match="jobsync tables but no schema revision"):
            ensure_schema(engine)
        assert current_revision(engine) is None
    finally:
        engine.dispose()


def test_two_passes_that_bypass_the_outer_lock_still_never_double_write(engine):
    # sync_source skips the process-level lock; the per-source lock inside the write
    # transaction (PostgreSQL advisory lock, SQLite BEGIN IMMEDIATE) serialises them, and the
    # fence lets only the first write: the second began before it and is superseded.
    import threading

    from jobsync.service.sync import sync_source
    from jobsync.simulator import Simulator
    from tests.conftest import settings_for

    with Simulator(cluster_ids=(CLUSTER,), jobs=1500, api_key=API_KEY, seed=11) as sim:
        settings = settings_for(sim, "unused")
        barrier = threading.Barrier(2)
        results = []

        def one_pass() -> None:
            barrier.wait()
            results.append(sync_source(engine, settings.sources[0], settings))

        threads = [threading.Thread(target=one_pass) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)

    from sqlalchemy import func

    from jobsync.errors import SupersededError

    assert sorted(r.ok for r in results) == [False, True]
    assert [r.counts.new_jobs for r in results if r.ok] == [1500]
    assert [type(r.error) for r in results if not r.ok] == [SupersededError]
    with engine.connect() as conn:
        statuses = conn.execute(select(sync_runs.c.status)).scalars().all()
    assert sorted(statuses) == ["failed", "succeeded"]

    from jobsync.storage.schema import import_job_transitions

    with engine.connect() as conn:
        per_job = conn.execute(
            select(func.count()).select_from(import_job_transitions)
        ).scalar_one()
    assert per_job == 1500
