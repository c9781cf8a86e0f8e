"""Passes lock their source, not the database: different sources at once, the same one never;
upgrades still exclude passes; runs say which process ran them; claims and request slots."""

from __future__ import annotations

import itertools
import os
import socket
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from jobsync.errors import LockedError
from jobsync.service.sync import sync_all
from jobsync.simulator import Simulator
from jobsync.storage.coordination import (
    claim_period,
    replicas_possible,
    reserve_slot,
    take_send,
)
from jobsync.storage.locking import daemon_lock, maintenance_lock, source_locks
from jobsync.storage.migrate import current_revision, head_revision, upgrade
from jobsync.storage.schema import sync_runs
from jobsync.storage.store import abandon_stale_runs, open_engine, start_run
from tests.conftest import API_KEY, settings_for

A, B = "in01-aaaaaaaaaaaaaaaa", "in01-bbbbbbbbbbbbbbbb"
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@pytest.fixture
def engine(db_url):
    eng = open_engine(db_url)
    upgrade(eng)
    yield eng
    eng.dispose()


def _statuses(engine) -> dict[int, tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(select(sync_runs.c.id, sync_runs.c.cluster_id, sync_runs.c.status))
        return {r.id: (r.cluster_id, r.status) for r in rows}


def test_two_sources_are_locked_at_once_and_one_source_only_once(engine):
    with source_locks(engine, [A]) as first:
        with source_locks(engine, [B]) as second:
            assert list(first.held) == [A] and list(second.held) == [B]
            with source_locks(engine, [A, B]) as third:
                assert third.held == {} and third.refused == (A, B)
        with source_locks(engine, [A, B]) as fourth:
            assert list(fourth.held) == [B] and fourth.refused == (A,)
    with source_locks(engine, [A, B]) as fifth:  # all released on exit
        assert sorted(fifth.held) == [A, B]


def test_two_sources_synced_at_the_same_instant_both_succeed(db_url, engine):
    with Simulator(cluster_ids=(A, B), jobs=30, api_key=API_KEY, seed=3, latency=0.05) as sim:
        settings = settings_for(sim, db_url)
        start = threading.Barrier(2)
        results: dict[str, list] = {}

        def one(index: int) -> None:
            source = settings.sources[index]
            start.wait()
            results[source.key] = sync_all(engine, settings, sources=[source])

        threads = [threading.Thread(target=one, args=(i,)) for i in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert [r.ok for r in results[A]] == [True] and [r.ok for r in results[B]] == [True]
    assert sorted(_statuses(engine).values()) == [(A, "succeeded"), (B, "succeeded")]


def test_a_source_locked_elsewhere_fails_without_a_request_and_the_others_sync(db_url, engine):
    with Simulator(cluster_ids=(A, B), jobs=10, api_key=API_KEY, seed=4) as sim:
        settings = settings_for(sim, db_url)
        with source_locks(engine, [A]):
            results = sync_all(engine, settings)
            with pytest.raises(LockedError, match=r"^another jobsync sync is running"):
                sync_all(engine, settings, sources=[settings.sources[0]])
        requests = sim.request_count
    assert [(r.source, r.ok) for r in results] == [(A, False), (B, True)]
    assert isinstance(results[0].error, LockedError)
    assert requests == 1  # B's one page; A sent nothing
    assert sorted(_statuses(engine).values()) == [(B, "succeeded")]


def test_the_maintenance_lock_and_passes_exclude_each_other(engine):
    with maintenance_lock(engine):
        with pytest.raises(LockedError, match="upgraded or pruned"), source_locks(engine, [A]):
            pass
    with source_locks(engine, [A]):
        with pytest.raises(LockedError), maintenance_lock(engine, wait=0.2):
            pass
    with maintenance_lock(engine):  # free again once the pass is done
        pass


def test_an_upgrade_waits_for_passes_and_gives_up_with_locked_error(db_url):
    engine = open_engine(db_url)
    upgrade(engine, "0006")
    with source_locks(engine, [A]), pytest.raises(LockedError):
        upgrade(engine, wait=0.2)
    assert current_revision(engine) == "0006"
    upgrade(engine, wait=0.2)
    assert current_revision(engine) == head_revision()
    engine.dispose()


def test_runs_record_the_host_and_pid_of_their_process(engine):
    run = start_run(engine, A, NOW)
    with engine.connect() as conn:
        row = conn.execute(select(sync_runs).where(sync_runs.c.id == run)).one()
    assert (row.host, row.pid) == (socket.gethostname(), os.getpid())


def test_a_pass_abandons_only_runs_of_the_sources_it_holds(engine):
    mine, theirs = start_run(engine, A, NOW), start_run(engine, B, NOW)
    assert abandon_stale_runs(engine, NOW, [A]) == 1
    assert _statuses(engine) == {mine: (A, "abandoned"), theirs: (B, "running")}


def test_a_period_is_claimed_once_and_the_next_one_again(engine):
    period = NOW
    assert claim_period(engine, A, period, NOW)
    assert not claim_period(engine, A, period, NOW)
    assert not claim_period(engine, A, period - timedelta(seconds=10), NOW)
    assert claim_period(engine, B, period, NOW)
    assert claim_period(engine, A, period + timedelta(seconds=10), NOW)


def test_a_second_daemon_is_refused_on_sqlite_only(engine):
    with daemon_lock(engine):
        if replicas_possible(engine):
            with daemon_lock(engine):
                pass
        else:
            with pytest.raises(LockedError, match="another jobsync daemon is already running"):
                with daemon_lock(engine):
                    pass
    with daemon_lock(engine):  # released
        pass


def test_request_slots_are_spaced_across_reservations(postgres_url):
    engine = open_engine(postgres_url)
    upgrade(engine)
    waits = [reserve_slot(engine, "f" * 32, "/list", 0.5) for _ in range(4)]
    other = reserve_slot(engine, "f" * 32, "/describe", 0.5)
    engine.dispose()
    assert waits[0] < 0.05 and other < 0.05  # the first slot of each endpoint is now
    # Each next slot is one interval after the previous (less the time the calls took).
    for before, after in itertools.pairwise(waits):
        assert 0.4 < after - before <= 0.5


def test_requests_go_one_interval_apart_whenever_they_ask(postgres_url):
    engine = open_engine(postgres_url)
    upgrade(engine)
    reserve_slot(engine, "e" * 32, "/list", 0.5)  # makes the row; the first may go at once
    first = take_send(engine, "e" * 32, "/list", 0.5)
    second = take_send(engine, "e" * 32, "/list", 0.5)  # right behind it: must wait
    engine.dispose()
    assert first == 0.0
    assert 0.4 < second <= 0.5


def test_sync_of_a_source_another_pass_holds_exits_75_with_one_line(db_url, engine):
    from click.testing import CliRunner

    from jobsync.cli import cli

    with Simulator(cluster_ids=(A,), jobs=10, api_key=API_KEY, seed=5) as sim:
        args = ["sync", "--db", db_url, "--base-url", sim.url, "--cluster-id", A]
        with source_locks(engine, [A]):
            result = CliRunner().invoke(
                cli, args, env={"JOBSYNC_API_KEY": API_KEY, "JOBSYNC_CONFIG": None}
            )
        assert sim.request_count == 0
    assert result.exit_code == 75
    assert result.output.startswith("Error: another jobsync sync is running on this database")
    assert result.output.count("\n") == 1


def test_a_run_cut_off_mid_pass_is_abandoned_and_the_next_period_synced_by_another(db_url, engine):
    with Simulator(cluster_ids=(A,), jobs=10, api_key=API_KEY, seed=6) as sim:
        settings = settings_for(sim, db_url)
        period = NOW
        # One replica claimed the period and started its pass, then lost its connection: its
        # session locks went with it, and its run stays 'running'.
        assert claim_period(engine, A, period, NOW)
        cut_off = start_run(engine, A, NOW)
        # Another replica finds this period taken, and claims and syncs the next one.
        assert not claim_period(engine, A, period, NOW)
        assert claim_period(engine, A, period + timedelta(seconds=10), NOW)
        [result] = sync_all(engine, settings)
    assert result.ok
    statuses = _statuses(engine)
    assert statuses[cut_off] == (A, "abandoned")
    assert statuses[result.run_id] == (A, "succeeded")
