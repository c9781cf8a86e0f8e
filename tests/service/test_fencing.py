"""A pass writes only if the source did not move on without it, whatever became of its lock.

The sync lock can be lost while it is held: PostgreSQL ends the session on an idle-session
timeout or ``pg_terminate_backend``, a pooler in transaction mode never keeps session locks,
someone removes the SQLite lock file. A pass that finds its lock gone before writing, or whose
source had another pass applied while it fetched, or whose run another process marked
abandoned, writes nothing and is recorded ``failed``, its error saying why (see
``jobsync.domain.fencing``); ``jobsync sync`` exits 75 for it, as for a lock held by another.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy import create_engine, select, text

from jobsync.domain.clock import utcnow
from jobsync.domain.fencing import check_fence
from jobsync.errors import SupersededError
from jobsync.service.sync import sync_all, sync_source
from jobsync.simulator import Simulator
from jobsync.storage.backends.sqlite import lock_path
from jobsync.storage.locking import SyncLock, sync_lock
from jobsync.storage.migrate import upgrade
from jobsync.storage.schema import import_job_records, import_job_transitions, sync_runs
from jobsync.storage.store import abandon_stale_runs, normalise_url, open_engine
from tests.conftest import API_KEY, CLUSTER, count_rows, settings_for
from tests.polling import poll

DEADLINE = 30.0


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    poll(condition, what, DEADLINE, interval=0.01)


def _statuses(engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(sync_runs.c.status).order_by(sync_runs.c.id)).scalars())


def _backwards(engine) -> int:
    """Changes that leave a finished state or go back to Pending: never true of an import."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(import_job_transitions.c.from_state, import_job_transitions.c.to_state).where(
                import_job_transitions.c.kind == "change"
            )
        ).all()
    return sum(
        1
        for old, new in rows
        if old in ("Completed", "Failed") or (old == "Importing" and new == "Pending")
    )


def _stored_states(engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(
            conn.execute(select(import_job_records.c.job_id, import_job_records.c.state)).all()
        )


def _sim_states(sim: Simulator) -> dict[str, str]:
    return {job.job_id: job.state for job in sim.jobs(CLUSTER)}


@pytest.mark.parametrize(
    ("status", "base", "last", "allowed"),
    [
        ("running", None, None, True),
        ("running", 7, 7, True),
        ("running", 7, 8, False),  # another pass was applied while this one fetched
        ("running", None, 3, False),
        ("abandoned", 7, 7, False),  # another process took the lock and marked it
        (None, 7, 7, False),
    ],
)
def test_the_fence(status, base, last, allowed):
    if allowed:
        check_fence(9, status, base, last)
    else:
        with pytest.raises(SupersededError):
            check_fence(9, status, base, last)


def test_a_pass_overtaken_while_it_fetched_writes_nothing(sim, db_url, engine):
    """Pass A fetches an older list; pass B, started after it, writes a newer one first.
    A must not put its older states back on top (jobs would move backwards)."""
    settings = settings_for(sim, db_url)
    source = settings.sources[0]
    assert sync_source(engine, source, settings).ok

    def run_b_first() -> None:
        sim.advance(fraction=1.0)
        assert sync_source(engine, source, settings).ok

    # The lock check runs just before A writes: a lost lock, with B run in the meantime.
    result = sync_source(engine, source, settings, lock=SyncLock(lambda: run_b_first()))
    assert not result.ok and isinstance(result.error, SupersededError)
    assert "pass 3 of the same source was written while pass 2 was fetching" in str(result.error)
    assert _statuses(engine) == ["succeeded", "failed", "succeeded"]  # A is run 2, B run 3
    assert _backwards(engine) == 0
    assert _stored_states(engine) == _sim_states(sim)


def test_a_pass_marked_abandoned_by_another_process_writes_nothing(sim, db_url, engine):
    settings = settings_for(sim, db_url)
    source = settings.sources[0]
    assert sync_source(engine, source, settings).ok
    sim.advance(fraction=1.0)
    before = count_rows(engine, import_job_transitions)

    def taken_over() -> None:
        # What another process does when it finds the lock free: this run is 'running'.
        assert abandon_stale_runs(engine, utcnow(), [source.key]) == 1

    result = sync_source(engine, source, settings, lock=SyncLock(taken_over))
    assert isinstance(result.error, SupersededError)
    assert "lost its lock" in str(result.error)
    assert _statuses(engine) == ["succeeded", "failed"]
    assert count_rows(engine, import_job_transitions) == before
    with engine.connect() as conn:
        error = conn.execute(select(sync_runs.c.error).where(sync_runs.c.id == 2)).scalar_one()
    assert "lost its lock" in error and "stopped before it finished" not in error


def test_a_pass_that_finds_its_lock_lost_writes_nothing(sim, db_url, engine):
    settings = settings_for(sim, db_url)
    result = sync_source(
        engine, settings.sources[0], settings, lock=SyncLock(lambda: "its session ended")
    )
    assert isinstance(result.error, SupersededError)
    assert "the sync lock was lost before this pass wrote: its session ended" in str(result.error)
    assert _statuses(engine) == ["failed"]
    assert count_rows(engine, import_job_records) == 0


# -- the real ways a lock is lost -----------------------------------------------------------------


def _slow_pass_then_overtake(
    sim: Simulator,
    db_url: str,
    engine,
    lose_lock: Callable[[], None],
    before_a: Callable[[], None] = lambda: None,
) -> tuple[list, list]:
    """After one normal pass and ``before_a``, pass A is slow (latency); when its first list
    request arrives, ``lose_lock`` runs; then every job advances and pass B runs to the end.
    Returns (A's results, B's results)."""
    settings = settings_for(sim, db_url, page_size=10)
    first = sync_all(engine, settings)
    assert all(r.ok for r in first), first
    before_a()
    sim.latency = 0.3
    started = threading.Event()
    sim.on_request(lambda number, path, body: started.set())
    results_a: list = []
    thread = threading.Thread(target=lambda: results_a.extend(sync_all(engine, settings)))
    thread.start()
    try:
        _wait_for(started.is_set, "pass A's first request")
        lose_lock()
        sim.latency = 0.0
        sim.advance(fraction=1.0)
        deadline = time.monotonic() + DEADLINE
        while True:  # B may meet A's lock until it is really gone
            try:
                results_b = sync_all(engine, settings)
                break
            except SupersededError:
                raise
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        thread.join(DEADLINE)
    return results_a, results_b


def _assert_a_superseded(engine, sim, results_a, results_b) -> None:
    assert [r.ok for r in results_b] == [True]
    assert [type(r.error) for r in results_a] == [SupersededError]
    statuses = _statuses(engine)
    assert statuses[0] == "succeeded" and sorted(statuses[1:]) == ["failed", "succeeded"]
    assert _backwards(engine) == 0
    assert _stored_states(engine) == _sim_states(sim)


@pytest.mark.postgres
def test_postgres_idle_session_timeout_ends_the_lock_and_the_pass_stands_down(postgres_url):
    engine = open_engine(postgres_url)
    upgrade(engine)
    name = postgres_url.rsplit("/", 1)[1]

    def time_out_idle_sessions() -> None:
        with engine.connect() as conn:
            conn.execute(text(f"ALTER DATABASE \"{name}\" SET idle_session_timeout = '1s'"))
            conn.commit()

    def idle_lock_session_ended() -> None:
        # The lock's session idles while A fetches: the server ends it after a second.
        with engine.connect() as conn:
            _wait_for(
                lambda: (
                    not conn.execute(
                        text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
                    ).scalar_one()
                ),
                "the idle lock session to end",
            )
            # B, on a loaded machine, must not lose its own lock the same way.
            conn.execute(text(f'ALTER DATABASE "{name}" RESET idle_session_timeout'))
            conn.commit()
        engine.dispose()

    with Simulator(cluster_ids=(CLUSTER,), jobs=60, api_key=API_KEY, seed=5) as sim:
        results_a, results_b = _slow_pass_then_overtake(
            sim, postgres_url, engine, idle_lock_session_ended, time_out_idle_sessions
        )
        _assert_a_superseded(engine, sim, results_a, results_b)
    engine.dispose()


@pytest.mark.postgres
def test_postgres_terminated_lock_session_and_the_pass_stands_down(postgres_url):
    engine = open_engine(postgres_url)
    upgrade(engine)
    admin = create_engine(normalise_url(postgres_url))

    def terminate_the_lock_holder() -> None:
        with admin.connect() as conn:
            killed = conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM (SELECT DISTINCT pid FROM pg_locks "
                    "WHERE locktype = 'advisory' AND granted AND database = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database())) AS held"
                )
            ).all()
            conn.commit()
        assert killed == [(True,)]

    with Simulator(cluster_ids=(CLUSTER,), jobs=60, api_key=API_KEY, seed=6) as sim:
        results_a, results_b = _slow_pass_then_overtake(
            sim, postgres_url, engine, terminate_the_lock_holder
        )
        _assert_a_superseded(engine, sim, results_a, results_b)
    admin.dispose()
    engine.dispose()


def test_sqlite_lock_file_removed_while_held(tmp_path):
    url = f"sqlite:///{tmp_path / 'jobsync.db'}"
    engine = open_engine(url)
    upgrade(engine)
    with Simulator(cluster_ids=(CLUSTER,), jobs=60, api_key=API_KEY, seed=7) as sim:
        results_a, results_b = _slow_pass_then_overtake(
            sim, url, engine, lambda: os.remove(lock_path(str(tmp_path / "jobsync.db")))
        )
        _assert_a_superseded(engine, sim, results_a, results_b)
        assert "jobsync.db.lock was re" in str(results_a[0].error)  # removed, or replaced
    engine.dispose()


def test_sqlite_two_paths_to_one_file_share_one_lock(tmp_path):
    real = tmp_path / "data" / "jobsync.db"
    real.parent.mkdir()
    link = tmp_path / "link.db"
    link.symlink_to(real)
    by_real, by_link = open_engine(f"sqlite:///{real}"), open_engine(f"sqlite:///{link}")
    upgrade(by_real)
    from jobsync.errors import LockedError

    with sync_lock(by_real), pytest.raises(LockedError), sync_lock(by_link):
        pass
    assert lock_path(str(link)) == lock_path(str(real)) == real.parent / "jobsync.db.lock"
    by_real.dispose()
    by_link.dispose()
