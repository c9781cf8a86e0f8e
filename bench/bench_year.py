"""A year, compressed: does the run metadata stop growing once retention applies?

``--sources`` sources polled every ``--every`` simulated seconds through ``--days`` simulated
days, driving the storage side of each pass directly (``start_run``, ``load_known_jobs``,
``apply_pass``; ``fail_run`` for the passes that fail), with an injected clock and no HTTP.
Per source, import jobs arrive at random (``--arrivals`` a day), wait a few minutes
``Pending``, import for 20 to 120 minutes (progress details change on every pass while they
do, so each such pass writes a progress sample), then end ``Completed`` (or ``Failed``, 5%);
the list shows the latest ``--listed`` jobs, so older ones drop off it and are marked vanished.
1 pass in 200 fails. Once a simulated day the daemon's default retention (90 days) is applied
through ``jobsync.service.retention.prune_database``, as the daemon would.

At the end of every simulated month it prints (and with ``--json`` writes) the database's
size, its rows and the time so far; at the end it measures the bytes a pass keeps in
``sync_runs`` and times ``jobsync status`` and every ``jobsync report`` command against the
database (each a fresh process, as a user would run it).

    python bench/bench_year.py --backend sqlite                   # the full year (~1 M passes)
    python bench/bench_year.py --backend postgresql --days 120
    python bench/bench_year.py --backend sqlite --days 3 --sources 2   # a quick look

On PostgreSQL the benchmark's own connection commits with ``synchronous_commit = off``: a
million passes each waiting about 1.5 ms for the disk would add hours to the run and nothing
to what it measures (the sizes and the rows; the commands at the end connect as users do).

Figures: bench/README.md, "A year, compressed".
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import create_engine, func, select, text

from jobsync.domain.records import JobDetails, JobRecord, Snapshot
from jobsync.service.retention import prune_database
from jobsync.storage.migrate import upgrade
from jobsync.storage.schema import (
    import_job_progress,
    import_job_records,
    import_job_transitions,
    sync_run_days,
    sync_runs,
)
from jobsync.storage.store import (
    apply_pass,
    checkpoint,
    fail_run,
    load_known_jobs,
    open_engine,
    start_run,
)

# Set in main so that the simulated year ends today: the reports' "since" windows then cover it.
START = datetime(2026, 1, 1, tzinfo=UTC)
RETENTION = 90 * 86400.0
DETAILS_LIMIT = 20


@dataclass
class Job:
    job_id: str
    created: float  # seconds since START
    pending: float
    importing: float
    fails: bool
    total_rows: int

    def at(self, now: float) -> tuple[str, int, str | None]:
        """Raw state, progress and reason at ``now``."""
        started = self.created + self.pending
        if now < started:
            return "Pending", 0, None
        if now < started + self.importing:
            return "Importing", int(100 * (now - started) / self.importing), None
        if self.fails:
            return "Failed", 60, "bad file"
        return "Completed", 100, None


@dataclass
class Source:
    key: str
    rng: random.Random
    listed: list[Job] = field(default_factory=list)
    made: int = 0

    def arrive(self, now: float, rate_per_second: float, step: float, keep: int) -> None:
        count = _poisson(self.rng, rate_per_second * step)
        for _ in range(count):
            self.made += 1
            self.listed.append(
                Job(
                    job_id=f"{self.key}-job-{self.made:06d}",
                    created=now - self.rng.uniform(0, step),
                    pending=self.rng.expovariate(1 / 300),
                    importing=self.rng.uniform(1200, 7200),
                    fails=self.rng.random() < 0.05,
                    total_rows=self.rng.randint(10_000, 5_000_000),
                )
            )
        del self.listed[:-keep]


def _poisson(rng: random.Random, mean: float) -> int:
    count, total = 0, rng.expovariate(1.0)
    while total < mean:
        count += 1
        total += rng.expovariate(1.0)
    return count


def _one_pass(engine: Any, source: Source, now: float, fail: bool) -> None:
    started = START + timedelta(seconds=now)
    run_id = start_run(engine, source.key, started)
    if fail:
        fail_run(engine, run_id, started + timedelta(seconds=2), "list failed: HTTP 503", 3)
        return
    snapshot = Snapshot(source_key=source.key, started_at=started, finished_at=started)
    details: dict[str, JobDetails] = {}
    for job in source.listed:
        state, progress, reason = job.at(now)
        snapshot.jobs[job.job_id] = JobRecord(job.job_id, "coll", state, progress, reason, started)
        if state == "Importing":
            details[job.job_id] = JobDetails(
                job_id=job.job_id,
                raw_state=state,
                progress=progress,
                reason=None,
                total_rows=job.total_rows,
                imported_rows=job.total_rows * progress // 100,
                file_size=job.total_rows * 100,
                complete_time=None,
                sampled_at=started + timedelta(milliseconds=200),
            )
    finished = started + timedelta(milliseconds=300)
    snapshot.finished_at = finished
    snapshot.pages = 1
    snapshot.records = len(snapshot.jobs)
    snapshot.reported_count = len(snapshot.jobs)
    snapshot.complete = True
    known = load_known_jobs(engine, source.key)
    del known  # read as a pass reads it; the benchmark asks about its importing jobs
    apply_pass(
        engine,
        source.key,
        run_id,
        snapshot,
        finished_at=finished,
        details=dict(list(details.items())[:DETAILS_LIMIT]),
        details_requested=len(details),
    )


def _size(engine: Any, backend: str, path: str | None) -> int:
    if backend == "sqlite":
        assert path is not None
        return sum(os.path.getsize(p) for p in (path, f"{path}-wal") if os.path.exists(p))
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar())


def _rows(engine: Any) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            table.name: int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)
            for table in (
                sync_runs,
                sync_run_days,
                import_job_records,
                import_job_transitions,
                import_job_progress,
            )
        }


def _bytes_per_run(engine: Any, backend: str, runs: int) -> float | None:
    with engine.connect() as conn:
        if backend == "sqlite":
            try:
                used = conn.execute(
                    text(
                        "SELECT sum(pgsize - unused) FROM dbstat "
                        "WHERE name IN ('sync_runs', 'ix_sync_runs_cluster_started')"
                    )
                ).scalar()
            except Exception:  # dbstat is optional in SQLite builds
                return None
        else:
            used = conn.execute(text("SELECT pg_total_relation_size('sync_runs')")).scalar()
    return None if not runs or used is None else float(used) / runs


def _time_commands(url: str) -> dict[str, float]:
    commands = {
        "status": ["status"],
        "report summary": ["report", "summary"],
        "report durations": ["report", "durations"],
        "report failures": ["report", "failures"],
        "report trend": ["report", "trend"],
        "report stuck": ["report", "stuck"],
        "report html": ["report", "html", "-o", os.devnull],
    }
    timings: dict[str, float] = {}
    env = {**os.environ, "JOBSYNC_DATABASE_URL": url}
    for name, args in commands.items():
        began = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "jobsync", *args], env=env, capture_output=True, text=True
        )
        timings[name] = round(time.perf_counter() - began, 3)
        # status exits 1 when a source is overdue (the simulated year ended a while ago),
        # report stuck 3 when it finds stuck jobs: answers, not failures.
        if done.returncode not in (0, 1, 3) or done.stderr.strip():
            print(f"  {name} exited {done.returncode}: {done.stderr.strip()[:200]}")
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "jobsync", "--version"], env=env, capture_output=True)
    timings["start-up only (--version)"] = round(time.perf_counter() - began, 3)
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--sources", type=int, default=10)
    parser.add_argument("--every", type=float, default=300.0, help="seconds between passes")
    parser.add_argument("--arrivals", type=float, default=24.0, help="new jobs a day per source")
    parser.add_argument("--listed", type=int, default=50, help="jobs the list shows")
    parser.add_argument("--month", type=int, default=30, help="days per reported month")
    parser.add_argument(
        "--retention-days", type=float, default=RETENTION / 86400, help="the window pruned to"
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="sources' passes in flight at once (default: 4 on PostgreSQL, as the daemon's "
        "max_concurrent_sources; 1 on SQLite, whose writes take turns anyway)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep-db", action="store_true", help="leave the database behind")
    parser.add_argument("--json", help="write one JSON line per month here")
    args = parser.parse_args()

    global START
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    START = today - timedelta(days=args.days)
    rng = random.Random(args.seed)
    path: str | None = None
    admin = None
    name = f"jobsync_bench_year_{uuid.uuid4().hex[:8]}"
    if args.backend == "sqlite":
        path = os.path.join(tempfile.mkdtemp(prefix="bench_year_"), "year.db")
        url = f"sqlite:///{path}"
    else:
        admin = create_engine(
            args.pg_url.replace("postgresql://", "postgresql+psycopg://"),
            isolation_level="AUTOCOMMIT",
        )
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = args.pg_url.rsplit("/", 1)[0] + f"/{name}"
    # See the docstring: the sizes do not depend on waiting for the disk at each commit.
    engine = open_engine(url + ("?options=-c%20synchronous_commit%3Doff" if admin else ""))
    upgrade(engine)
    sources = [Source(f"cluster-{i:03d}", random.Random(rng.random())) for i in range(args.sources)]
    workers = args.workers or (4 if args.backend == "postgresql" else 1)
    out = open(args.json, "a", encoding="utf-8") if args.json else None  # noqa: SIM115
    print(
        f"{args.backend}: {args.sources} sources every {args.every:g}s for {args.days} days "
        f"({workers} at once), "
        f"{args.arrivals:g} arrivals/day/source, {args.listed} listed; database {url}"
    )
    print(
        f"{'day':>5} {'passes':>9} {'size MB':>9} {'runs':>8} {'rolled':>7} "
        f"{'transitions':>11} {'samples':>8} {'prune s':>8} {'ms/pass':>8} {'elapsed':>8}"
    )
    began = time.perf_counter()
    passes = 0
    prune_seconds = 0.0
    per_day = int(86400 / args.every)
    pool = ThreadPoolExecutor(workers) if workers > 1 else None
    try:
        for day in range(1, args.days + 1):
            day_began = time.perf_counter()
            for step in range(per_day):
                now = (day - 1) * 86400 + step * args.every
                # The simulated world moves on first, in a fixed order (the results do not
                # depend on the workers); then the sources' passes, each on its own rows.
                due = []
                for i, source in enumerate(sources):
                    source.arrive(now, args.arrivals / 86400, args.every, args.listed)
                    due.append((source, now + i, rng.random() < 0.005))
                if pool is None:
                    for source, at, fail in due:
                        _one_pass(engine, source, at, fail)
                else:
                    list(pool.map(lambda job: _one_pass(engine, *job), due))
                passes += len(due)
                checkpoint(engine)
            pass_seconds = time.perf_counter() - day_began
            t0 = time.perf_counter()
            keep = args.retention_days * 86400
            prune_database(engine, keep, clock=lambda d=day: START + timedelta(days=d))
            prune_seconds = time.perf_counter() - t0
            if day % args.month == 0 or day == args.days:
                checkpoint(engine)
                rows = _rows(engine)
                size = _size(engine, args.backend, path)
                line = {
                    "backend": args.backend,
                    "day": day,
                    "passes": passes,
                    "size_bytes": size,
                    "rows": rows,
                    "prune_seconds": round(prune_seconds, 3),
                    "ms_per_pass": round(1000 * pass_seconds / (per_day * len(sources)), 3),
                    "elapsed": round(time.perf_counter() - began, 1),
                }
                print(
                    f"{day:>5} {passes:>9} {size / 1e6:>9.1f} {rows['sync_runs']:>8} "
                    f"{rows['sync_run_days']:>7} {rows['import_job_transitions']:>11} "
                    f"{rows['import_job_progress']:>8} {prune_seconds:>8.2f} "
                    f"{line['ms_per_pass']:>8.2f} {line['elapsed']:>8.0f}",
                    flush=True,
                )
                if out:
                    out.write(json.dumps(line) + "\n")
                    out.flush()
        rows = _rows(engine)
        per_run = _bytes_per_run(engine, args.backend, rows["sync_runs"])
        timings = _time_commands(url)
        final = {
            "backend": args.backend,
            "final": True,
            "passes": passes,
            "bytes_per_kept_run": per_run,
            "commands_seconds": timings,
        }
        if per_run:
            # The most a retention window can hold: every pass of the window.
            kept = 200 * 1440 * 90 * per_run
            final["200_sources_each_minute_90d_bytes"] = kept
            print(
                f"sync_runs keeps {per_run:.0f} bytes a pass (rows and index): 200 sources "
                f"each minute keep at most {kept / 1e9:.1f} GB of passes in 90 days"
            )
        print("commands (seconds, fresh process each):", json.dumps(timings))
        if out:
            out.write(json.dumps(final) + "\n")
    finally:
        if pool is not None:
            pool.shutdown()
        engine.dispose()
        if out:
            out.close()
        if admin is not None:
            if not args.keep_db:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
        elif path and not args.keep_db:
            for p in (path, f"{path}-wal", f"{path}-shm", f"{path}.lock"):
                if os.path.exists(p):
                    os.remove(p)
            os.rmdir(os.path.dirname(path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
