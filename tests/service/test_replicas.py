"""Several ``jobsync daemon`` processes on one database: real processes, the simulator, and
judgement by what ``sync_runs`` holds. Replicas share PostgreSQL; SQLite refuses a second.
Also what makes "once per period" hold: when passes are due, and which period a run claims."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import make_url, select

from jobsync.config import Source
from jobsync.domain.clock import utcnow
from jobsync.errors import LockedError
from jobsync.observability.metrics import Health
from jobsync.service.claims import DueTimes, PeriodClaims, when_free
from jobsync.service.metrics import DaemonMetrics
from jobsync.service.schedule import SPREAD_SHARE, cron, every, spread
from jobsync.service.sync import sync_all
from jobsync.simulator import Simulator
from jobsync.storage.locking import source_locks
from jobsync.storage.migrate import upgrade
from jobsync.storage.schema import sync_claims, sync_runs
from jobsync.storage.store import open_engine
from tests import polling
from tests.conftest import API_KEY, settings_for
from tests.proxy import Relay

PERIOD = 1.0  # seconds: the replicas' --every
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # what interval periods are aligned on
CLUSTERS = tuple(f"in01-{i:016x}" for i in range(4))


class Replica:
    def __init__(self, tmp_path: Path, name: str, args: list[str]) -> None:
        self.stderr_path = tmp_path / f"{name}.err"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBSYNC_", "ZILLIZ_"))}
        env["JOBSYNC_API_KEY"] = API_KEY
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jobsync", "daemon", *args],
                stdout=subprocess.DEVNULL,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=tmp_path,
                env=env,
            )

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)


@pytest.fixture
def replicas(tmp_path):
    started: list[Replica] = []

    def start(name: str, *args: str) -> Replica:
        r = Replica(tmp_path, name, list(args))
        started.append(r)
        return r

    yield start
    for r in started:
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait()


def _config(tmp_path: Path, sim: Simulator, db_url: str) -> Path:
    lines = [f'database_url = "{db_url}"', "details = false"]
    for cluster in sim.cluster_ids:
        lines += ["[[sources]]", f'cluster_id = "{cluster}"', f'base_url = "{sim.url}"']
    path = tmp_path / "jobsync.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _runs(engine) -> list:
    with engine.connect() as conn:
        return list(conn.execute(select(sync_runs).order_by(sync_runs.c.id)))


def _period(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(seconds=PERIOD)


def _periods_covered(runs: list, pid: int | None = None) -> set[int]:
    """Periods in which every source had a pass (by ``pid``, if given)."""
    seen: dict[int, set[str]] = {}
    for r in runs:
        if pid is None or r.pid == pid:
            seen.setdefault(_period(r.started_at), set()).add(r.cluster_id)
    return {p for p, sources in seen.items() if len(sources) == len(CLUSTERS)}


def test_replicas_sync_each_source_once_per_period_and_take_over_from_a_dead_one(
    tmp_path, postgres_url, replicas
):
    with Simulator(cluster_ids=CLUSTERS, jobs=20, api_key=API_KEY, seed=9) as sim:
        config = _config(tmp_path, sim, postgres_url)
        args = ["--config", str(config), "--every", f"{PERIOD:g}s"]
        engine = open_engine(postgres_url)
        upgrade(engine)  # before the replicas: the test reads sync_runs from the start
        first = replicas("first", *args)
        second = replicas("second", *args)
        try:
            polling.poll(
                lambda: len(_periods_covered(_runs(engine))) >= 3, "three periods synced", 30
            )
            os.kill(first.proc.pid, signal.SIGKILL)
            first.proc.wait()
            killed_at = datetime.now(UTC)
            polling.poll(
                lambda: (
                    len(
                        {
                            p
                            for p in _periods_covered(_runs(engine), second.proc.pid)
                            if p > _period(killed_at) + 1
                        }
                    )
                    >= 2
                ),
                "two full periods synced by the survivor after the kill",
                30,
            )
            assert second.stop() == 0, second.stderr
            runs = _runs(engine)
        finally:
            engine.dispose()
    # Once per period: a run is recorded a moment after its period was claimed, and a run that
    # waited for a worker claims the period it was due in, so a run can land in the period
    # after its claim; but no source has more runs than periods it spans, counting the one
    # before the first (two replicas syncing every period would have twice as many).
    for cluster in CLUSTERS:
        periods = [_period(r.started_at) for r in runs if r.cluster_id == cluster]
        assert len(periods) <= max(periods) - min(periods) + 2, (cluster, periods)
        assert max(Counter(periods).values()) <= 2, (cluster, periods)
    assert {r.pid for r in runs} <= {first.proc.pid, second.proc.pid}
    assert all(r.host for r in runs)
    # A pass the kill cut short is marked abandoned by the survivor's next pass of the source.
    assert not [r for r in runs if r.status == "running"]
    assert "Traceback" not in second.stderr


def test_a_second_daemon_on_a_sqlite_file_is_refused_at_start(tmp_path, replicas):
    db_url = f"sqlite:///{tmp_path / 'jobsync.db'}"
    with Simulator(cluster_ids=CLUSTERS[:1], jobs=5, api_key=API_KEY, seed=2) as sim:
        args = ["--db", db_url, "--base-url", sim.url, "--cluster-id", CLUSTERS[0]]
        upgrade(open_engine(db_url))
        first = replicas("first", "--every", "0.5s", "--no-details", *args)
        engine = open_engine(db_url, readonly=True)
        polling.poll(lambda: _runs(engine), "a pass", 20)
        second = replicas("second", "--every", "0.5s", "--no-details", *args)
        code = second.proc.wait(timeout=20)
        assert first.proc.poll() is None
        assert first.stop() == 0
        engine.dispose()
    assert code == 75
    lines = second.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: another jobsync daemon is already running"), lines
    assert "Traceback" not in second.stderr


def test_a_pass_longer_than_its_interval_logs_one_line_not_a_warning_per_skipped_run(
    tmp_path, postgres_url, replicas
):
    with Simulator(cluster_ids=CLUSTERS[:1], jobs=5, api_key=API_KEY, seed=2, latency=0.9) as sim:
        args = ["--db", postgres_url, "--base-url", sim.url, "--cluster-id", CLUSTERS[0]]
        d = replicas("slow", "--every", "0.2s", "--no-details", *args)
        polling.poll(lambda: d.stderr.count("longer than its interval") >= 2, "two overruns", 30)
        assert d.stop() == 0
    log = d.stderr
    assert "maximum number of running instances" not in log
    assert "was missed by" not in log
    overruns = [line for line in log.splitlines() if "longer than its interval" in line]
    passes = [line for line in log.splitlines() if " jobs in " in line]
    assert len(overruns) <= len(passes)
    assert all("covered" in line and "scheduled runs" in line for line in overruns)


# -- when passes are due, and which period a run claims --------------------------------------


@pytest.mark.parametrize(
    "schedule", [every(10), every(0.25), cron("*/5 * * * *")], ids=["10s", "0.25s", "cron"]
)
def test_a_source_is_due_once_in_every_period_however_long_the_daemon_runs(schedule):
    # What the scheduler does: a first pass at start-up, then each next fire time computed from
    # the one before. APScheduler's interval jitter added each period's jitter to the one
    # before: the pass walked through its period and skipped one every 20 or so.
    start = datetime(2026, 12, 6, 12, 0, 3, 250_000, tzinfo=UTC)
    trigger = schedule.trigger
    fires = []
    previous = start
    for _ in range(400):
        fire = trigger.get_next_fire_time(previous, previous)
        assert fire is not None and fire > previous
        fires.append(fire)
        previous = fire
    periods = [schedule.period_start(f) for f in [start, *fires]]
    # The pass at start-up is its period's: the next is due in the period after, and so on.
    for before, after in itertools.pairwise(periods):
        assert after == schedule.next_start(before), (before, after)


def test_interval_sources_are_due_spread_over_the_period_each_at_its_own_moment():
    period = every(10)
    keys = [f"in01-{i:016x}" for i in range(150)]
    shares = spread(keys, dict.fromkeys(keys, period))
    start = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)  # a period's start
    due = {}
    for key in keys:
        trigger = period.trigger_at(shares[key])
        first = trigger.get_next_fire_time(None, start)
        second = trigger.get_next_fire_time(first, first)
        due[key] = (first - start).total_seconds()
        # The same moment of every period, give or take the jitter.
        assert abs((second - first).total_seconds() - 10) <= period.jitter
    # About 150 / 8 due in each second of the first 8 (not all in the first second, as before;
    # the jitter moves a few across), and none in the last tenth of the period, so each can
    # start within its period.
    per_second = Counter(int(d) for d in due.values())
    evenly = len(keys) / (10 * SPREAD_SHARE)  # per second
    assert max(per_second.values()) <= evenly * (1 + period.jitter) + 1, per_second
    assert max(due.values()) < 10 * SPREAD_SHARE + period.jitter
    # The same shares in another replica with the same sources in another order.
    assert spread(reversed(keys), dict.fromkeys(keys, period)) == shares


def test_a_run_remembers_when_it_was_due_before_it_starts():
    executor = DueTimes(max_workers=1)
    scheduler = BackgroundScheduler(timezone=UTC, executors={"default": executor})
    seen = []
    due_at = datetime.now(UTC) - timedelta(seconds=2)  # late, as behind a queue of passes
    scheduler.add_job(
        lambda: seen.append(executor.due("late")),
        id="late",
        trigger="interval",
        hours=1,
        next_run_time=due_at,
        misfire_grace_time=60,
    )
    scheduler.start()
    try:
        polling.poll(lambda: seen, "the run", 10)
    finally:
        scheduler.shutdown()
    assert seen == [(due_at, due_at)]


def test_a_run_that_starts_after_its_period_ended_claims_the_period_it_was_due_in(postgres_url):
    engine = open_engine(postgres_url)
    upgrade(engine)
    source = Source(name="a", base_url="https://x", cluster_id=CLUSTERS[0])
    schedule = every(10)
    period = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)
    due = period + timedelta(seconds=7)  # due in this period ...
    late = period + timedelta(seconds=13)  # ... started in the next, behind a queue
    health = Health([source.name], 30)

    def claims(now: datetime) -> PeriodClaims:
        metrics = DaemonMetrics([source.name], health)
        return PeriodClaims(engine, {source.key: schedule}, metrics, health, lambda: now)

    try:
        # Claimed until its period ends: a pass of the period before that still holds the
        # source is waited for until then.
        assert claims(late).claim(source, due) == period + timedelta(seconds=10)
        with engine.connect() as conn:
            claimed = conn.execute(select(sync_claims.c.period_start)).scalar_one()
        # Its own period, not the next: the next is left to the run due in it, here another
        # replica's.
        assert claimed == period
        assert claims(late).claim(source, due) is None
        assert claims(late).claim(source, due + timedelta(seconds=10))
        assert claims(late).claim(source, due) is None  # an earlier period, once a later is taken
    finally:
        engine.dispose()


def test_the_replica_that_claimed_a_period_waits_for_a_late_pass_of_the_one_before(
    postgres_url,
):
    # Another replica's pass of the period before still holds the source: the claimed period
    # is still this replica's to sync (no other may claim it), once that pass lets go.
    engine = open_engine(postgres_url)
    upgrade(engine)
    attempts = []
    results = []
    with Simulator(cluster_ids=CLUSTERS[:1], jobs=5, api_key=API_KEY, seed=3) as sim:
        settings = settings_for(sim, postgres_url)

        def attempt():
            attempts.append(datetime.now(UTC))
            return sync_all(engine, settings)

        cancel = threading.Event()
        until = datetime.now(UTC) + timedelta(seconds=60)
        try:
            with source_locks(engine, [CLUSTERS[0]]) as held:
                assert held.held
                waiting = threading.Thread(
                    target=lambda: results.extend(when_free(attempt, until, utcnow, cancel))
                )
                waiting.start()
                polling.poll(lambda: len(attempts) >= 2, "a second attempt", 30)
            waiting.join(timeout=30)
            # Once its period has ended, or with no claim, it is skipped as before.
            with source_locks(engine, [CLUSTERS[0]]):
                for ended in (datetime.now(UTC), None):
                    count = len(attempts)
                    with pytest.raises(LockedError):
                        when_free(attempt, ended, utcnow, cancel)
                    assert len(attempts) == count + 1
        finally:
            engine.dispose()
    assert [r.ok for r in results] == [True]


def test_a_replica_that_loses_its_database_mid_pass_leaves_a_run_the_next_pass_abandons(
    tmp_path, postgres_url, replicas
):
    period = 2.0
    url = make_url(postgres_url)
    relay = Relay(url.host or "127.0.0.1", url.port or 5432)
    relayed = url.set(port=relay.port).render_as_string(hide_password=False)
    step = timedelta(seconds=period)

    def runs_of(pid: int) -> list:
        return [r for r in _runs(engine) if r.pid == pid]

    with Simulator(cluster_ids=CLUSTERS[:1], jobs=5, api_key=API_KEY, seed=4, latency=1.0) as sim:
        common = ["--base-url", sim.url, "--cluster-id", CLUSTERS[0], "--no-details"]
        every_ = ["--every", f"{period:g}s"]
        engine = open_engine(postgres_url)
        upgrade(engine)
        try:
            cut_off = replicas("cut", "--db", relayed, *every_, *common)
            # A pass of the replica behind the relay, in the middle of its 1 s request.
            run = polling.poll(
                lambda: next((r for r in runs_of(cut_off.proc.pid) if r.status == "running"), None),
                "a pass of the replica behind the relay",
                30,
            )
            relay.cut()
            other = replicas("other", "--db", postgres_url, *every_, *common)
            lost_period = (run.started_at - EPOCH) // step
            synced = polling.poll(
                lambda: [r for r in runs_of(other.proc.pid) if r.status == "succeeded"],
                "a pass by the other replica",
                30,
            )
            assert other.stop() == 0, other.stderr
            assert cut_off.stop() == 0, cut_off.stderr
            runs = {r.id: r for r in _runs(engine)}
        finally:
            engine.dispose()
    # The cut-off pass could not record its end: the other replica's first pass of the source
    # marked it abandoned, then synced it, in the first period it could claim.
    assert runs[run.id].status == "abandoned"
    assert (synced[0].started_at - EPOCH) // step <= lost_period + 2
    assert "Traceback" not in cut_off.stderr and "Traceback" not in other.stderr
