"""What dashboards and reports read, at size: the views and the report commands.

A throw-away database per backend gets ``--jobs`` jobs of one source through jobsync's own
passes (``apply_pass``, as ``jobsync sync`` writes them): a first pass 30 days ago that lists
them all (the backlog, 99.5% already finished), then ``--passes`` more spread up to an hour
ago, each adding 0.2% new jobs and moving half of the open ones on a state. Then, with nothing
analyzed but what the passes analyzed themselves (autovacuum is off on this machine's server),
it times, as medians of ``--repeat`` reads on one connection:

    daily_job_stats      read whole
    job_durations        the jobs finished in the last 7 days
    active_jobs          read whole

and each ``jobsync report ...`` command as a whole process (start-up included; the size column
then shows the same report run in this process, warm), with the targets of issue 22: under
100 ms per view read and under 1 s per report command.

    python bench/bench_views.py                         # 1,000,000 jobs, both backends
    python bench/bench_views.py --jobs 100000 --backends sqlite
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import harness
from harness import log
from sqlalchemy import create_engine, text

from jobsync.domain.records import JobRecord, Snapshot
from jobsync.storage.store import apply_pass, normalise_url, open_engine, start_run

JOBSYNC = str(Path(sys.executable).with_name("jobsync"))
SOURCE = "in01-0000000000000000"
HISTORY = timedelta(days=30)
VIEW_TARGET = 0.100
REPORT_TARGET = 1.0
VIEWS = {
    "daily_job_stats whole": "SELECT * FROM daily_job_stats",
    "job_durations, last 7 days": "SELECT * FROM job_durations WHERE finished_at >= :since",
    "active_jobs whole": "SELECT * FROM active_jobs",
}
REPORTS = (
    ("summary",),
    ("durations", "--limit", "50"),
    ("failures",),
    ("trend",),
    ("stuck",),
    ("html", "--output", "/dev/null"),
)
NEXT = {"Pending": "Importing", "Importing": "Completed"}


def _pass(engine: Any, at: datetime, states: dict[str, str]) -> None:
    seen = at + timedelta(seconds=5)
    jobs = {
        job_id: JobRecord(job_id, f"coll{int(job_id[1:]) % 7}", state, None, None, seen)
        for job_id, state in states.items()
    }
    snapshot = Snapshot(SOURCE, at, at + timedelta(seconds=10), jobs, complete=True)
    apply_pass(
        engine, SOURCE, start_run(engine, SOURCE, at), snapshot, finished_at=snapshot.finished_at
    )


def build(url: str, jobs: int, passes: int, seed: int) -> datetime:
    """The history; returns the time of the last pass."""
    rng = random.Random(seed)
    finished = ("Completed",) * 30 + ("Failed",) * 2
    states = {
        f"j{i:08d}": rng.choice(finished) if rng.random() < 0.995 else "Importing"
        for i in range(jobs)
    }
    engine = open_engine(url)
    now = datetime.now(UTC).replace(microsecond=0)
    try:
        at = now - HISTORY
        started = time.perf_counter()
        _pass(engine, at, states)
        log(f"first pass: {jobs:,} jobs in {time.perf_counter() - started:.1f}s")
        for n in range(passes):
            at = now - HISTORY + (HISTORY - timedelta(hours=1)) * (n + 1) / passes
            for job_id in [j for j, s in states.items() if s in NEXT]:
                if rng.random() < 0.5:
                    states[job_id] = NEXT[states[job_id]]
            for i in range(len(states), len(states) + jobs // 500):
                states[f"j{i:08d}"] = "Pending"
            started = time.perf_counter()
            _pass(engine, at, states)
            log(f"pass {n + 2}: {time.perf_counter() - started:.1f}s")
        return at
    finally:
        engine.dispose()


def time_views(url: str, now: datetime, repeat: int) -> dict[str, tuple[float, int]]:
    engine = create_engine(normalise_url(url))
    found = {}
    try:
        with engine.connect() as conn:
            for name, sql in VIEWS.items():
                times, rows = [], 0
                for _ in range(repeat):
                    started = time.perf_counter()
                    rows = len(conn.execute(text(sql), {"since": now - timedelta(days=7)}).all())
                    times.append(time.perf_counter() - started)
                found[name] = (statistics.median(times), rows)
    finally:
        engine.dispose()
    return found


def time_reports(url: str, repeat: int) -> dict[str, float]:
    found = {}
    for command in REPORTS:
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            subprocess.run(
                [JOBSYNC, "report", *command, "--db", url]
                + ([] if command[0] == "html" else ["--format", "csv"]),
                check=False,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            times.append(time.perf_counter() - started)
        found[" ".join(command[:1])] = statistics.median(times)
    return found


def time_report_functions(url: str, repeat: int) -> dict[str, float]:
    """The same reports in this process, warm: what the database work costs without the
    command's start-up (interpreter, imports, the schema check)."""
    from jobsync.reporting import report as r

    engine = open_engine(url, readonly=True)
    calls = {
        "summary": lambda: r.summary(engine, since=7 * 86400.0),
        "durations": lambda: r.durations(engine, since=7 * 86400.0, limit=50),
        "failures": lambda: r.failures(engine, since=7 * 86400.0),
        "trend": lambda: r.trend(engine, days=14),
        "stuck": lambda: r.stuck(engine, older_than=7200.0),
        # What the HTML report reads: the others, and jobs first seen per day by state.
        "html": lambda: (
            r.active(engine),
            r.summary(engine, since=7 * 86400.0),
            r.states_per_day(engine, days=14),
            r.durations(engine, since=7 * 86400.0),
            r.failures(engine, since=7 * 86400.0),
            r.trend(engine, days=14),
        ),
    }
    found = {}
    try:
        for name, call in calls.items():
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                call()
                times.append(time.perf_counter() - started)
            found[name] = statistics.median(times)
    finally:
        engine.dispose()
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    harness.add_common_arguments(parser, repeat_help="reads per view and runs per command")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--passes", type=int, default=3, help="passes after the first")
    args = parser.parse_args()
    harness.check_common_arguments(parser, args)
    repeat = max(args.repeat, 3)
    table = []
    for backend in args.backends:
        with harness.database(backend, args.pg_url, prefix="jobsync_views") as url:
            last = build(url, args.jobs, args.passes, args.seed)
            for name, (seconds, rows) in time_views(url, last, repeat).items():
                ok = "ok" if seconds < VIEW_TARGET else "OVER"
                table.append([backend, name, f"{rows:,} rows", f"{seconds * 1000:.1f} ms", ok])
            inside = time_report_functions(url, repeat)
            for name, seconds in time_reports(url, repeat).items():
                ok = "ok" if seconds < REPORT_TARGET else "OVER"
                query = f"{inside[name] * 1000:.0f} ms in-process"
                table.append([backend, f"jobsync report {name}", query, f"{seconds:.2f} s", ok])
    print(harness.format_table(["backend", "what", "size", "median", "target"], table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
