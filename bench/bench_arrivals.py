"""A busy cluster: is every pass complete, and at what cost, while new jobs keep arriving?

One cluster of 10,000 jobs behind 100 ms of latency per request, paged at the documented limit
of 20 requests per second, while one new job arrives every 3 seconds. A walk over the list takes
about five seconds at that rate, so the list grows under nearly every walk: each arrival heads
the list and pushes every job one place down the pages.

The simulator runs in a process of its own. A thread of the benchmark calls its ``add_jobs(1)``
every ``--arrival-interval`` seconds (over the pipe: the simulator's own lock orders it with the
requests it serves), from just before the first pass until after the last, so the list grows
during the passes and between them. ``--passes`` passes of ``jobsync.sync_source`` then run back
to back, as the daemon runs them: progress details off (``Settings(details=False)``, the CLI's
``--no-details``), one rate limiter shared by the passes (20 requests per second per endpoint),
a fresh engine for each pass. Per pass the table shows:

    list req.   list requests the simulator answered during the pass (re-reads of page 1 and the
                page past the end included), counted by the simulator, not by jobsync
    pages       PassResult.pages: what jobsync says it read
    one walk    the pages of one walk over the list as it stood when the pass ended:
                ceil(count / 100)
    x walk      list req. / one walk
    complete    PassResult.complete: whether the snapshot may conclude that a job has gone
    arrived     jobs that arrived while the pass ran (0 would mean the list stood still: the
                pass then measured nothing of interest; the benchmark says so)

The target: every pass complete, in at most 1.1x the requests of one walk. Only the fields
``ok``, ``complete``, ``pages``, ``jobs`` and ``seconds`` of ``PassResult`` are read, so the
benchmark runs against any rule for when a snapshot is complete.

    python bench/bench_arrivals.py                        # 4 passes, both backends, about 2 min
    python bench/bench_arrivals.py --backends sqlite --passes 2 --jobs 2000 --arrival-interval 0.5
    python bench/bench_arrivals.py --repeat 3 --json arrivals.jsonl

The simulator process, the databases, the CPU probe, the table and the common options come from
bench/harness.py.
"""

from __future__ import annotations

import argparse
import bisect
import math
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

import harness
from harness import KEY, RateLimiters, SimulatorProcess, busy_seconds, log

import jobsync

CLUSTER = "in01-00000000000000a1"
PAGE_SIZE = 100
TARGET_RATIO = 1.1


class Arrivals:
    """A thread that adds one job to the simulator every ``interval`` seconds until stopped.

    Arrivals follow a fixed schedule (start + k x interval), so a slow round trip to the
    simulator does not make the next one late. ``times`` are their moments on the monotonic
    clock, for counting the arrivals within a pass.
    """

    def __init__(self, sim: SimulatorProcess, interval: float) -> None:
        self._sim = sim
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="arrivals", daemon=True)
        self.times: list[float] = []
        self.error: BaseException | None = None

    def _run(self) -> None:
        start = time.monotonic()
        for k in range(1, sys.maxsize):
            if self._stop.wait(max(0.0, start + k * self._interval - time.monotonic())):
                return
            try:
                self._sim.add_jobs(1)
            except BaseException as exc:  # reported by the benchmark, which stops
                self.error = exc
                return
            self.times.append(time.monotonic())

    def between(self, began: float, ended: float) -> int:
        return bisect.bisect_right(self.times, ended) - bisect.bisect_left(self.times, began)

    def __enter__(self) -> Arrivals:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_passes(args: argparse.Namespace, backend: str, rep: int) -> list[dict[str, Any]]:
    """One simulator and one database; ``args.passes`` passes while jobs arrive."""
    seed = args.seed + rep - 1
    http = jobsync.HttpSettings(page_concurrency=args.page_concurrency)
    limiters = RateLimiters(http.requests_per_second)  # shared by the passes, as in the daemon
    rows: list[dict[str, Any]] = []
    with (
        SimulatorProcess((CLUSTER,), args.jobs, seed, args.latency) as sim,
        harness.database(backend, args.pg_url, prefix="jobsync_arrivals") as db,
    ):
        source = jobsync.Source(
            name=CLUSTER, cluster_id=CLUSTER, base_url=sim.url, api_key=jobsync.Secret(KEY)
        )
        settings = jobsync.Settings(
            database_url=db, sources=(source,), page_size=PAGE_SIZE, http=http, details=False
        )
        rate_limit = limiters.for_key(source.api_key, source.base_url)
        with Arrivals(sim, args.arrival_interval) as arrivals:
            for number in range(1, args.passes + 1):
                if args.wait_idle:
                    harness.wait_until_idle(args.wait_idle)
                count_before = sim.count(CLUSTER)
                sim.reset_counters()
                engine = jobsync.open_engine(db)  # a fresh engine for every pass
                try:
                    busy = busy_seconds()
                    began = time.monotonic()
                    result = jobsync.sync_source(engine, source, settings, rate_limit=rate_limit)
                    ended = time.monotonic()
                    busy = busy_seconds() - busy
                finally:
                    engine.dispose()
                stats = sim.stats()
                count_after = sim.count(CLUSTER)
                if arrivals.error is not None:
                    raise RuntimeError(f"adding a job failed: {arrivals.error}")
                one_walk = math.ceil(count_after / PAGE_SIZE)
                row = {
                    "backend": backend,
                    "rep": rep,
                    "seed": seed,
                    "pass": number,
                    "ok": result.ok,
                    "error": None if result.ok else str(getattr(result, "error", None)),
                    "complete": bool(result.ok and result.complete),
                    "pages": result.pages,
                    "jobs_seen": result.jobs,
                    "seconds": result.seconds,
                    "wall_s": ended - began,
                    "list_requests": stats["list_requests"],
                    "requests": stats["requests"],
                    "count_before": count_before,
                    "count_after": count_after,
                    "one_walk_pages": one_walk,
                    "ratio": stats["list_requests"] / one_walk,
                    "arrivals": arrivals.between(began, ended),
                    "peak_rate_endpoint": stats["peak_rate_endpoint"],
                    "busy_cores": busy / (ended - began),
                }
                rows.append(row)
                log(
                    f"{backend} rep {rep} pass {number}: {row['list_requests']} list requests "
                    f"({row['ratio']:.2f}x one walk of {one_walk}), PassResult.pages "
                    f"{row['pages']}, {'complete' if row['complete'] else 'INCOMPLETE'}, "
                    f"{row['arrivals']} arrived, {row['seconds']:.1f}s"
                    + ("" if result.ok else f"; failed: {row['error']}")
                )
    return rows


def verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether every pass of ``rows`` was complete within TARGET_RATIO x one walk's requests."""
    complete = sum(1 for r in rows if r["complete"])
    worst = max(r["ratio"] for r in rows)
    return {
        "passes": len(rows),
        "complete_passes": complete,
        "list_requests": sum(r["list_requests"] for r in rows),
        "one_walk_pages": sum(r["one_walk_pages"] for r in rows),
        "max_ratio": worst,
        "still_passes": sum(1 for r in rows if r["arrivals"] == 0),
        "verdict": "PASS" if complete == len(rows) and worst <= TARGET_RATIO else "FAIL",
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    headers = [
        "backend",
        "rep",
        "pass",
        "list req.",
        "pages",
        "one walk",
        "x walk",
        f"<= {TARGET_RATIO}",
        "complete",
        "jobs seen",
        "arrived",
        "seconds",
        "peak req/s",
        "busy cores",
    ]
    lines = [
        [
            r["backend"],
            str(r["rep"]),
            str(r["pass"]),
            f"{r['list_requests']:,}",
            f"{r['pages']:,}",
            f"{r['one_walk_pages']:,}",
            f"{r['ratio']:.2f}",
            "yes" if r["ratio"] <= TARGET_RATIO else "no",
            ("yes" if r["complete"] else "no") + ("" if r["ok"] else " (failed)"),
            f"{r['jobs_seen']:,}",
            str(r["arrivals"]),
            f"{r['seconds']:.1f}",
            str(r["peak_rate_endpoint"]),
            f"{r['busy_cores']:.2f}",
        ]
        for r in rows
    ]
    return harness.format_table(
        headers,
        lines,
        left=("backend", f"<= {TARGET_RATIO}", "complete"),
        groups=[(r["backend"], r["rep"]) for r in rows],
    )


NOTES = """\
list req.: list requests the simulator answered during the pass. pages: PassResult.pages.
one walk: ceil(jobs listed at the end of the pass / {page_size}). x walk: list req. / one walk;
  a clean walk also re-reads page 1 and, when the count is a multiple of {page_size}, reads the
  empty page past the end: 1.02x at 10,000 jobs, more on short lists.
complete: PassResult.complete. jobs seen: PassResult.jobs. arrived: jobs added while the pass
  ran. seconds: PassResult.seconds. peak req/s: the most list or progress requests that started
  within one second at one endpoint. busy cores: CPU use of the whole machine during the pass.
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Passes over a job list that grows while it is read (a busy cluster)."
    )
    harness.add_common_arguments(
        parser,
        repeat_help="runs of the whole sequence of passes, each with a new simulator",
        wait_idle_help="before each pass, wait up to this long for other load to stop",
    )
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs in the cluster at start")
    parser.add_argument("--passes", type=int, default=4, help="passes per run (default: 4)")
    parser.add_argument(
        "--arrival-interval",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="one new job every this many seconds (default: 3)",
    )
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per request")
    parser.add_argument(
        "--page-concurrency",
        type=int,
        default=jobsync.HttpSettings.page_concurrency,
        help="pages of one source in flight at once (1: one after the other)",
    )
    args = parser.parse_args(argv)
    harness.check_common_arguments(parser, args)
    if args.jobs < 1 or args.passes < 1 or args.page_concurrency < 1:
        parser.error("--jobs, --passes and --page-concurrency must be at least 1")
    if args.arrival_interval <= 0 or args.latency < 0:
        parser.error("--arrival-interval must be positive, --latency at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    version = harness.code_version()
    rows: list[dict[str, Any]] = []
    verdicts: list[dict[str, Any]] = []
    servers = []
    for backend in args.backends:
        servers.append(harness.server_version(backend, args.pg_url))
        for rep in range(1, args.repeat + 1):
            run = run_passes(args, backend, rep)
            rows += run
            verdicts.append({"backend": backend, "rep": rep, **verdict(run)})
    http = jobsync.HttpSettings(page_concurrency=args.page_concurrency)
    print(
        f"jobsync {jobsync.__version__} arrivals benchmark, "
        f"{datetime.now(UTC).isoformat(timespec='seconds')}; {args.jobs:,} jobs at start, one "
        f"more every {args.arrival_interval:g}s; {args.latency * 1000:.0f} ms per request, limit "
        f"{http.requests_per_second:g} req/s per key, page_concurrency {http.page_concurrency}; "
        f"progress details off; {', '.join(servers)}"
    )
    where = version["jobsync_path"]
    if "git_head" in version:
        where = f"git {version['git_head']} + {len(version['git_dirty'])} changed files"
    print(f"code: {where}; jobsync sources sha256 {version['jobsync_sha256']}")
    print()
    print(format_table(rows))
    print()
    print(NOTES.format(page_size=PAGE_SIZE), end="")
    print()
    for v in verdicts:
        still = f"; {v['still_passes']} pass(es) saw no arrival" if v["still_passes"] else ""
        print(
            f"{v['backend']} rep {v['rep']}: {v['complete_passes']}/{v['passes']} passes "
            f"complete; {v['list_requests']:,} list requests where one walk per pass would "
            f"take {v['one_walk_pages']:,}; at most {v['max_ratio']:.2f}x one walk in a pass{still}"
        )
    overall = "PASS" if all(v["verdict"] == "PASS" for v in verdicts) else "FAIL"
    print(
        f"target: every pass complete, in at most {TARGET_RATIO}x the requests of one walk: "
        f"{overall}"
    )
    if args.json:
        common = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "jobsync": jobsync.__version__,
            **version,
            "jobs": args.jobs,
            "arrival_interval_s": args.arrival_interval,
            "latency_s": args.latency,
            "rate_limit": http.requests_per_second,
            "page_concurrency": http.page_concurrency,
            "target_ratio": TARGET_RATIO,
        }
        harness.write_json_lines(
            args.json,
            [{"kind": "pass", **common, **row} for row in rows]
            + [{"kind": "verdict", **common, **v} for v in verdicts],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
