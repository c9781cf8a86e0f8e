"""Several ``jobsync daemon`` processes on one database: real processes, the simulator, and
judgement by what ``sync_runs`` holds. Replicas share PostgreSQL; SQLite refuses a second."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from jobsync.simulator import Simulator
from jobsync.storage.migrate import upgrade
from jobsync.storage.schema import sync_runs
from jobsync.storage.store import open_engine
from tests import polling
from tests.conftest import API_KEY

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
    # Once per period: a run is recorded a moment after its period was claimed, so a run can
    # land in the period after its claim, but no source has more runs than periods it spans
    # (two replicas syncing every period would have twice as many).
    for cluster in CLUSTERS:
        periods = [_period(r.started_at) for r in runs if r.cluster_id == cluster]
        assert len(periods) <= max(periods) - min(periods) + 1, (cluster, periods)
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
