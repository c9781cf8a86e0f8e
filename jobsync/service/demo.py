"""The one-command tour (``jobsync demo``) and the long-running simulator (``jobsync simulate``).

The only library code that runs the bundled simulator: the tour plays both sides of the API in
one process. What the tour shows of the database is the reporting layer's, passed in by the
command (``jobsync.reporting.tour.tour_report``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine

from jobsync.config import HttpSettings, Settings, Source
from jobsync.domain.clock import SteppingClock
from jobsync.observability.redact import Secret
from jobsync.service.sync import sync_all
from jobsync.simulator import Simulator, StateChange
from jobsync.storage.migrate import upgrade
from jobsync.storage.store import open_engine

__all__ = ["run_demo", "serve_simulator"]

DEMO_CLUSTERS = ("in01-0123456789abcdef", "in02-fedcba9876543210")
DEMO_KEY = "demo-key"
ROUND = timedelta(minutes=10)

# What the tour shows of the database, given the (cluster_id, job_id) of jobs worth showing.
Report = Callable[[Engine, Sequence[tuple[str, str]]], str]


def serve_simulator(
    *,
    host: str,
    port: int,
    jobs: int,
    cluster_ids: tuple[str, ...],
    api_key: str,
    seed: int,
    interval: float,
    announce: Callable[[str], None],
    stop: threading.Event | None = None,
) -> None:
    """Serve until interrupted (or until ``stop`` is set), with jobs progressing meanwhile."""
    sim = Simulator(cluster_ids=cluster_ids, jobs=jobs, api_key=api_key, seed=seed)
    url = sim.start(host=host, port=port)
    sim.run_progression(interval=interval)
    announce(url)
    announce(
        f"simulating {jobs} jobs in each of {', '.join(cluster_ids)}; try:\n"
        f"  JOBSYNC_API_KEY={api_key} jobsync sync --base-url {url} "
        f"--cluster-id {cluster_ids[0]}\n"
        "Press Ctrl-C to stop."
    )
    try:
        (stop or threading.Event()).wait()
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    announce(sim.rate_summary())


def run_demo(
    db_file: str,
    *,
    report: Report,
    jobs: int = 300,
    rounds: int = 4,
    progress: Callable[[str], None] = lambda _line: None,
) -> str:
    """Sync a progressing simulator ``rounds`` times into a fresh SQLite file; return what
    ``report`` says of it, between a line saying what was written and hints to go further."""
    path = Path(db_file)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    engine = open_engine(f"sqlite:///{path}")
    upgrade(engine)
    # Demo time runs fast: each round is ten simulated minutes, so the windows read naturally.
    clock = SteppingClock(datetime.now(UTC) - ROUND * rounds)
    with Simulator(
        cluster_ids=DEMO_CLUSTERS, jobs=jobs, api_key=DEMO_KEY, seed=7, clock=clock
    ) as sim:
        settings = Settings(
            database_url=f"sqlite:///{path}",
            sources=tuple(
                Source(name=c, cluster_id=c, base_url=sim.url, api_key=Secret(DEMO_KEY))
                for c in DEMO_CLUSTERS
            ),
            # The bundled simulator has no rate limit; the real API's would make the tour slow.
            http=HttpSettings(requests_per_second=500.0),
        )
        for round_number in range(1, rounds + 1):
            for result in sync_all(engine, settings, clock=clock):
                progress(f"pass {round_number}: {result.summary()}")
            if round_number < rounds:
                clock.skip(ROUND / 2)
                sim.advance(fraction=0.35)
                sim.add_jobs(max(1, jobs // 20), cluster_id=DEMO_CLUSTERS[0])
                clock.skip(ROUND / 2)
        changes = sim.change_log
    try:
        shown = report(engine, _example_jobs(changes))
    finally:
        engine.dispose()
    return (
        f"\nWrote {path} ({rounds} passes over {len(DEMO_CLUSTERS)} simulated clusters).\n"
        f"{shown}\n"
        "\nEach change happened inside (window_start, observed_at]. Explore further with:\n"
        f"  jobsync jobs --db sqlite:///{path}\n"
        f"  sqlite3 {path} 'SELECT * FROM import_job_transitions LIMIT 20'"
    )


def _example_jobs(changes: Sequence[StateChange]) -> list[tuple[str, str]]:
    # Prefer jobs that changed more than once: their history shows several windows.
    counts: dict[tuple[str, str], int] = {}
    for change in changes:
        key = (change.cluster_id, change.job_id)
        counts[key] = counts.get(key, 0) + 1
    ranked = sorted(counts, key=lambda k: (-counts[k], k))
    return ranked[:2]
