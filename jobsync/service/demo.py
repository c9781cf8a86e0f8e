"""The one-command tour (``jobsync demo``) and the long-running simulator (``jobsync simulate``).

The only library code that runs the bundled simulator: the tour plays both sides of the API in
one process. What the tour shows of the database is the reporting layer's, passed in by the
command (``jobsync.reporting.tour.tour_report``).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

from sqlalchemy import Engine

from jobsync.config import HttpSettings, Settings, Source
from jobsync.domain.clock import SteppingClock
from jobsync.observability.redact import Secret
from jobsync.service.sync import sync_all
from jobsync.simulator import Simulator, StateChange
from jobsync.storage.migrate import upgrade
from jobsync.storage.store import open_engine

__all__ = ["History", "run_demo", "serve_simulator", "simulate_history"]

DEMO_CLUSTERS = ("in01-0123456789abcdef", "in02-fedcba9876543210")
DEMO_KEY = "demo-key"
DEMO_DAYS = 14
PASSES_PER_DAY = 6
DEMO_DETAILS_PER_PASS = 8
STEP = timedelta(hours=1)  # how far the simulated world moves between two of its steps
RETENTION = timedelta(days=2)

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
    rounds: int | None = None,
    days: int = DEMO_DAYS,
    progress: Callable[[str], None] = lambda _line: None,
    now: datetime | None = None,
) -> str:
    """Sync a simulator through ``days`` of simulated history, ``rounds`` passes in all (default
    PASSES_PER_DAY a day), into a fresh SQLite file; return what ``report`` says of it, between
    a line saying what was written and hints to go further. The history ends at ``now``."""
    path = Path(db_file)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    engine = open_engine(f"sqlite:///{path}")
    try:
        upgrade(engine)
        history = simulate_history(
            engine,
            jobs=jobs,
            rounds=rounds,
            days=days,
            end=now or datetime.now(UTC),
            progress=progress,
        )
        shown = report(engine, history.examples)
    finally:
        engine.dispose()
    return (
        f"\nWrote {path} ({history.rounds} passes over {len(DEMO_CLUSTERS)} simulated clusters, "
        f"{history.first:%Y-%m-%d %H:%M} to {history.last:%Y-%m-%d %H:%M} UTC).\n"
        f"{shown}\n"
        "\nEach change happened inside (window_start, observed_at]. Explore further with:\n"
        f"  jobsync jobs --db sqlite:///{path}\n"
        f"  jobsync report html --db sqlite:///{path} -o jobsync-demo.html\n"
        f"  sqlite3 {path} 'SELECT * FROM daily_job_stats ORDER BY day'"
    )


@dataclass(frozen=True)
class History:
    """What ``simulate_history`` did: its passes, their first and last time, example jobs."""

    rounds: int
    first: datetime
    last: datetime
    examples: list[tuple[str, str]]


def simulate_history(
    engine: Engine,
    *,
    jobs: int = 300,
    rounds: int | None = None,
    days: int = DEMO_DAYS,
    end: datetime,
    seed: int = 7,
    progress: Callable[[str], None] = lambda _line: None,
) -> History:
    """Sync the bundled simulator ``rounds`` times over ``days`` simulated UTC days ending at
    ``end`` into a migrated database, on a simulated clock: seconds of real time.

    The first pass is at midnight UTC ``days - 1`` days before ``end``'s day, so the daily
    figures have ``days`` days; the passes are evenly spaced up to ``end``. Between passes the
    simulated world moves on an hour at a time: new jobs arrive (fewer at night and at the
    weekend), about a third of the open ones move on a state each hour, one afternoon two days
    before the end most finishing jobs fail (an incident to find on the failure rate chart),
    and over the last day three jobs stop moving (the stuck jobs to find). Finished jobs leave
    the API's list after two days (or two gaps between passes, if longer), as a real list's
    retention would drop them.
    """
    rounds = rounds if rounds is not None else days * PASSES_PER_DAY
    midnight = end.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first = midnight - timedelta(days=days - 1)
    gap = (end - first) / max(1, rounds - 1)
    incident = (midnight - timedelta(days=2) + timedelta(hours=13), timedelta(hours=5))
    stuck_from = end - timedelta(hours=20)
    rng = random.Random(seed)
    clock = SteppingClock(first)
    with Simulator(
        cluster_ids=DEMO_CLUSTERS,
        jobs=jobs,
        api_key=DEMO_KEY,
        seed=seed,
        clock=clock,
        # Never shorter than two gaps between passes: a pass must see a job finish first.
        retention=max(RETENTION, 2 * gap),
    ) as sim:
        settings = Settings(
            database_url="sqlite://",  # unused: the engine is given
            sources=tuple(
                Source(name=c, cluster_id=c, base_url=sim.url, api_key=Secret(DEMO_KEY))
                for c in DEMO_CLUSTERS
            ),
            # The simulator serves from this process: it has no rate limit to respect, and
            # threads asking it at once would only take turns at one interpreter lock. One
            # request at a time with no pacing, and a few progress requests a pass, keep the
            # tour to seconds while every open job is still sampled every other pass or so.
            http=HttpSettings(
                requests_per_second=100_000.0, page_concurrency=1, max_concurrent_sources=1
            ),
            details_concurrency=1,
            details_max_per_pass=DEMO_DETAILS_PER_PASS,
        )
        held = 0
        for round_number in range(1, rounds + 1):
            for result in sync_all(engine, settings, clock=clock):
                progress(f"pass {round_number} ({clock.now:%a %d %b %H:%M}): {result.summary()}")
            if round_number == rounds:
                break
            target = first + gap * round_number
            while clock.now < target:
                span = min(STEP, target - clock.now)
                clock.skip(span)
                now = clock.now
                in_incident = incident[0] <= now < incident[0] + incident[1]
                sim.failure_ratio = 0.7 if in_incident else 0.15
                sim.advance(fraction=0.35 * (span / STEP))
                for cluster_id in DEMO_CLUSTERS:
                    added = sim.add_jobs(_arrivals(rng, jobs, now, span / STEP), cluster_id)
                    if added and held < 3 and now >= stuck_from:
                        sim.hold_jobs(cluster_id, [added[0].job_id])
                        held += 1
        changes = sim.change_log
    return History(rounds, first, clock.now, _example_jobs(changes))


def _arrivals(rng: random.Random, jobs: int, now: datetime, hours: float) -> int:
    """New jobs in one cluster over ``hours`` simulated hours up to ``now``: about ``jobs / 10``
    a weekday, most of them in working hours, a third as many at the weekend."""
    per_day = max(1.0, jobs / 10)
    share = 1.5 / 24 if 8 <= now.hour < 20 else 0.5 / 24
    if now.weekday() >= 5:
        share /= 3
    expected = per_day * share * hours
    return int(expected) + (1 if rng.random() < expected - int(expected) else 0)


def _example_jobs(changes: Sequence[StateChange]) -> list[tuple[str, str]]:
    # Prefer jobs that changed more than once, each change long after the one before: passes
    # hours apart then saw every change, so their history shows several windows.
    times: dict[tuple[str, str], list[datetime]] = {}
    for change in changes:
        times.setdefault((change.cluster_id, change.job_id), []).append(change.at)

    def shortest_gap(key: tuple[str, str]) -> timedelta:
        moments = times[key]
        return min((b - a for a, b in pairwise(moments)), default=timedelta(0))

    ranked = sorted(times, key=lambda k: (-len(times[k]), -shortest_gap(k), k))
    return ranked[:2]
