"""Latency-bound syncing at the rate limit: how close does a pass come to what the limit allows?

With 100 ms of latency per request and the documented 20 requests per second per key, a pass is
bound by the limit, not by CPU. Two scenarios, on SQLite and PostgreSQL (see bench/README.md):

    single  one source of 10,000 jobs (100 pages of 100): floor 100 / 20 = 5 s
    many    200 sources x 50 jobs sharing one API key (one page each): floor 200 / 20 = 10 s

Each runs ``sync_all`` (as ``jobsync sync`` does: shared rate limiter, sources four at a time)
twice: a first sync into an empty database and a re-sync of the unchanged list. The simulator
runs in its own process, sleeps the latency before every reply and counts the requests and the
peak number that started within any one second (its sliding-window counter). Progress details
are off unless ``--details`` (the benchmark sets ``Settings(details=...)`` from it): detail
requests are a separate, bounded cost and not part of these targets; ``--details`` shows what
they add with the CLI's defaults, against the same list-only floor.

    python bench/bench_latency.py                       # both scenarios, both backends
    python bench/bench_latency.py --backends sqlite --scenarios single --repeat 3
    python bench/bench_latency.py --details              # as `jobsync sync` runs by default
    python bench/bench_latency.py --scenarios single     # small: both backends, about 25 s

The simulator process, the databases, the CPU probe, the table and the common options come from
bench/harness.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import harness
from harness import KEY, SimulatorProcess, busy_seconds, log

import jobsync

TARGET = 1.15


@dataclass(frozen=True)
class Scenario:
    name: str
    clusters: tuple[str, ...]
    jobs: int  # per cluster
    floor_requests: int  # what the issue counts: pages, at the limit

    def floor(self, rate: float) -> float:
        return self.floor_requests / rate


SCENARIOS = {
    "single": Scenario("single", ("in01-0000000000000000",), 10_000, 100),
    "many": Scenario("many", tuple(f"in01-{i:016x}" for i in range(200)), 50, 200),
}


# -- one scenario -------------------------------------------------------------------------------


def run_scenario(
    scenario: Scenario, backend: str, args: argparse.Namespace, rep: int
) -> list[dict[str, Any]]:
    http = jobsync.HttpSettings(page_concurrency=args.page_concurrency)
    rows = []
    seed = args.seed + rep - 1
    with (
        SimulatorProcess(scenario.clusters, scenario.jobs, seed, args.latency) as sim,
        harness.database(backend, args.pg_url, prefix="jobsync_latency") as db,
    ):
        settings = jobsync.Settings(
            database_url=db,
            sources=tuple(
                jobsync.Source(name=c, cluster_id=c, base_url=sim.url, api_key=jobsync.Secret(KEY))
                for c in scenario.clusters
            ),
            page_size=100,
            http=http,
            details=args.details,
        )
        for step in ("first sync", "re-sync"):
            sim.reset_counters()
            if args.wait_idle:
                busy_before = harness.wait_until_idle(args.wait_idle, sample=1.0)
                if busy_before > harness.IDLE_BUSY_CORES:
                    log(f"the machine stayed busy for {args.wait_idle:g}s; measuring anyway")
            engine = jobsync.open_engine(db)  # a fresh engine, as a cron-started `jobsync sync` has
            cpu = time.process_time()
            busy = busy_seconds()
            began = time.perf_counter()
            results = jobsync.sync_all(engine, settings)
            wall = time.perf_counter() - began
            busy = busy_seconds() - busy
            cpu = time.process_time() - cpu
            engine.dispose()
            stats = sim.stats()
            failed = [r.summary() for r in results if not r.ok or not r.complete]
            if failed:
                raise RuntimeError(f"{scenario.name} {backend} {step}: {failed[0]}")
            floor = scenario.floor(http.requests_per_second)
            rows.append(
                {
                    "scenario": scenario.name,
                    "backend": backend,
                    "step": step,
                    "rep": rep,
                    "sources": len(scenario.clusters),
                    "jobs": len(scenario.clusters) * scenario.jobs,
                    "pages": sum(r.pages for r in results),
                    "details": args.details,
                    "detail_requests": sum(r.details_requested for r in results),
                    "requests": stats["requests"],
                    "peak_rate": stats["peak_rate"],
                    "peak_rate_key": stats["peak_rate_key"],
                    "peak_rate_endpoint": stats["peak_rate_endpoint"],
                    "wall_s": wall,
                    "cpu_s": cpu,
                    # Every process's CPU over the step, ours and the simulator's included.
                    "machine_busy_cores": busy / wall,
                    "floor_s": floor,
                    "ratio": wall / floor,
                    "latency_s": args.latency,
                    "rate_limit": http.requests_per_second,
                    "page_concurrency": http.page_concurrency,
                    "max_concurrent_sources": http.max_concurrent_sources,
                }
            )
            log(
                f"{scenario.name} {backend} {step} rep {rep}: {wall:.2f}s "
                f"({wall / floor:.3f} x floor), {stats['requests']} requests, "
                f"peak {stats['peak_rate_endpoint']}/s per endpoint, {stats['peak_rate']}/s in all"
            )
    return rows


# -- the table ----------------------------------------------------------------------------------


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["scenario"], row["backend"], row["step"]), []).append(row)
    out = []
    for reps in groups.values():
        first = dict(reps[0])
        for key in ("wall_s", "cpu_s", "ratio", "machine_busy_cores"):
            first[key] = statistics.median(r[key] for r in reps)
        first["ratios"] = [round(r["ratio"], 3) for r in reps]
        first["peak_rate"] = max(r["peak_rate"] for r in reps)
        first["peak_rate_endpoint"] = max(r["peak_rate_endpoint"] for r in reps)
        first["requests"] = max(r["requests"] for r in reps)
        first["reps"] = len(reps)
        first["verdict"] = "PASS" if first["ratio"] <= TARGET else "FAIL"
        limit = first["rate_limit"]
        first["rate_verdict"] = "PASS" if first["peak_rate_endpoint"] <= limit else "FAIL"
        out.append(first)
    return out


def format_table(summary: list[dict[str, Any]]) -> str:
    headers = [
        "scenario",
        "backend",
        "step",
        "jobs",
        "requests",
        "details",
        "wall s",
        "floor s",
        "x floor",
        f"<= {TARGET}",
        "peak req/s",
        "<= limit",
        "all req/s",
        "cpu s",
        "busy cores",
    ]
    lines = [
        [
            s["scenario"],
            s["backend"],
            s["step"],
            f"{s['jobs']:,}",
            f"{s['requests']:,}",
            f"{s['detail_requests']:,}",
            f"{s['wall_s']:.2f}",
            f"{s['floor_s']:.1f}",
            f"{s['ratio']:.3f}",
            s["verdict"],
            str(s["peak_rate_endpoint"]),
            s["rate_verdict"],
            str(s["peak_rate"]),
            f"{s['cpu_s']:.2f}",
            f"{s['machine_busy_cores']:.2f}",
        ]
        for s in summary
    ]
    left = ("scenario", "backend", "step", f"<= {TARGET}", "<= limit")
    return harness.format_table(headers, lines, left=left)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Latency-bound passes at the rate limit (see bench/README.md)."
    )
    parser.add_argument(
        "--scenarios",
        type=harness.name_list(SCENARIOS),
        default=list(SCENARIOS),
        metavar="NAME,NAME",
        help=f"{' and/or '.join(SCENARIOS)} (default: all)",
    )
    harness.add_common_arguments(
        parser, wait_idle_help="before each pass, wait up to this long for other load to stop"
    )
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per request")
    parser.add_argument(
        "--page-concurrency",
        type=int,
        default=jobsync.HttpSettings.page_concurrency,
        help="pages of one source in flight at once (1: one after the other)",
    )
    parser.add_argument(
        "--details",
        action="store_true",
        help="ask for progress details as `jobsync sync` does by default (the floor stays the "
        "list's)",
    )
    args = parser.parse_args(argv)
    harness.check_common_arguments(parser, args)
    if args.page_concurrency < 1 or args.latency < 0:
        parser.error("--page-concurrency must be at least 1, --latency >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows: list[dict[str, Any]] = []
    for name in args.scenarios:
        for backend in args.backends:
            for rep in range(1, args.repeat + 1):
                rows += run_scenario(SCENARIOS[name], backend, args, rep)
    summary = summarise(rows)
    http = jobsync.HttpSettings(page_concurrency=args.page_concurrency)
    available = any(f.name == "details" for f in dataclasses.fields(jobsync.Settings))
    print(
        f"jobsync {jobsync.__version__} latency benchmark, "
        f"{datetime.now(UTC).isoformat(timespec='seconds')}; {args.latency * 1000:.0f} ms per "
        f"request, limit {http.requests_per_second:g} req/s per key, page_concurrency "
        f"{http.page_concurrency}, max_concurrent_sources {http.max_concurrent_sources}; "
        f"progress details "
        f"{('on' if args.details else 'off') if available else 'not available in this version'}"
    )
    if args.repeat > 1:
        print(f"medians of {args.repeat} runs; peak req/s and requests: the highest of them")
    print()
    print(format_table(summary))
    print()
    print(
        "floor s: the issue's floor, pages (single) or sources (many) / the rate limit.\n"
        "requests: every request the simulator answered in the pass, page 1 re-reads,\n"
        "  the one page past the end and progress requests included. details: progress\n"
        "  requests (--details). peak req/s: the most that started within any one second\n"
        "  at one endpoint (the documented limit is per user and endpoint), as the simulator\n"
        "  saw them arrive; all req/s: the same over all endpoints. busy cores: CPU use of\n"
        "  the whole machine during the step (this process, the simulator, PostgreSQL and\n"
        "  anything else)."
    )
    if args.json:
        harness.write_json_lines(
            args.json,
            [{"kind": "run", **row} for row in rows] + [{"kind": "summary", **s} for s in summary],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
