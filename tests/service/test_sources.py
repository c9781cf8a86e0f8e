"""Many sources in one pass: concurrency, isolation of failures, a shared rate limit."""

from __future__ import annotations

import socket

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from jobsync.api.ratelimit import RateLimiter
from jobsync.cli import cli
from jobsync.config import HttpSettings, Settings, Source
from jobsync.observability.redact import Secret
from jobsync.service.sync import sync_all
from jobsync.simulator import Simulator
from jobsync.storage.migrate import ensure_schema
from jobsync.storage.schema import import_job_records
from tests.conftest import API_KEY

CLUSTERS = tuple(f"in01-{i:016x}" for i in range(10))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ten_sources_two_failing_differently_the_other_eight_synced(
    db_url, tmp_path, no_backoff_in_tmp
):
    with Simulator(cluster_ids=CLUSTERS, jobs=20, api_key=API_KEY, seed=2) as sim:
        lines = [f'database_url = "{db_url}"']
        for i, cluster in enumerate(CLUSTERS):
            base = sim.url if i != 8 else f"http://127.0.0.1:{_closed_port()}"
            key = "WRONG_KEY" if i == 9 else "GOOD_KEY"
            lines += [
                "[[sources]]",
                f'cluster_id = "{cluster}"',
                f'base_url = "{base}"',
                f'api_key_env = "{key}"',
            ]
        (tmp_path / "jobsync.toml").write_text("\n".join(lines) + "\n")

        result = CliRunner().invoke(
            cli, ["sync"], env={"GOOD_KEY": API_KEY, "WRONG_KEY": "not-the-key"}
        )

    assert result.exit_code == 1
    ok_lines = [line for line in result.stdout.splitlines() if ": 20 jobs" in line]
    assert sorted(line.split(":")[0] for line in ok_lines) == sorted(CLUSTERS[:8])
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 2
    assert any(CLUSTERS[8] in e and "cannot reach" in e for e in errors)
    assert any(CLUSTERS[9] in e and "API key was rejected" in e for e in errors)
    from jobsync.storage.store import open_engine

    engine = open_engine(db_url)
    with engine.connect() as conn:
        per_cluster = dict(
            conn.execute(
                select(import_job_records.c.cluster_id, func.count()).group_by(
                    import_job_records.c.cluster_id
                )
            ).all()
        )
    engine.dispose()
    assert per_cluster == dict.fromkeys(CLUSTERS[:8], 20)


def test_sources_sharing_a_key_never_exceed_the_rate_limit_together(engine):
    clusters = CLUSTERS[:6]
    with Simulator(cluster_ids=clusters, jobs=40, api_key=API_KEY, seed=3) as sim:
        http = HttpSettings(requests_per_second=25, max_concurrent_sources=6)
        settings = Settings(
            page_size=5,
            http=http,
            details=False,
            sources=tuple(
                Source(name=c, cluster_id=c, base_url=sim.url, api_key=Secret(API_KEY))
                for c in clusters
            ),
        )
        results = sync_all(engine, settings)
        times = sorted(r.time for r in sim.requests)

    assert all(r.ok for r in results)
    assert len(times) >= 6 * 9
    # Six sources at once, one shared pacer: the requests cannot have been sent faster than
    # one per 1/25 s in total. (Arrival times on a loaded machine bunch up, so the bound
    # allows a little jitter; separate limiters per source would take a sixth of the time.)
    span = (times[-1] - times[0]).total_seconds()
    assert span >= (len(times) - 1) / 25 * 0.9


def test_the_limiter_spaces_requests_evenly_with_a_margin():
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    limiter = RateLimiter(20, 1.0, clock=lambda: now[0], sleep=sleep)
    sent = []
    for _ in range(21):
        limiter.acquire()
        sent.append(now[0])
    assert sent[20] - sent[0] >= 1.0  # never 21 requests within one second
    assert sent[20] - sent[0] <= 1.0 * (1 + RateLimiter.MARGIN) + 1e-9


def test_a_limiter_does_not_wait_after_a_quiet_spell():
    now = [0.0]
    waits: list[float] = []
    limiter = RateLimiter(2, 1.0, clock=lambda: now[0], sleep=waits.append)
    limiter.acquire()
    now[0] += 10
    limiter.acquire()
    assert waits == []


@pytest.mark.postgres
def test_only_replicas_share_the_key_budget_through_postgresql(postgres_url, sim):
    # Daemons (replicas=True) reserve each request's slot in rate_slots; a lone sync does not
    # pay two transactions a request for a budget nobody shares with it.
    from jobsync.storage.schema import rate_slots
    from jobsync.storage.store import open_engine
    from tests.conftest import count_rows, settings_for

    engine = open_engine(postgres_url)
    ensure_schema(engine)
    settings = settings_for(sim, postgres_url)
    try:
        assert all(r.ok for r in sync_all(engine, settings))
        assert count_rows(engine, rate_slots) == 0
        assert all(r.ok for r in sync_all(engine, settings, replicas=True))
        with engine.connect() as conn:
            endpoints = set(conn.execute(select(rate_slots.c.endpoint)).scalars())
        assert "/v2/vectordb/jobs/import/list" in endpoints
    finally:
        engine.dispose()
