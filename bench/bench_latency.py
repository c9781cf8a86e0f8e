"""Latency-bound syncing at the rate limit: how close does a pass come to what the limit allows?

With 100 ms of latency per request and the documented 20 requests per second per key, a pass is
bound by the limit, not by CPU. Two scenarios, on SQLite and PostgreSQL (see bench/README.md):

    single  one source of 10,000 jobs (100 pages of 100): floor 100 / 20 = 5 s
    many    200 sources x 50 jobs sharing one API key (one page each): floor 200 / 20 = 10 s

Each runs ``sync_all`` (as ``jobsync sync`` does: shared rate limiter, sources four at a time)
twice: a first sync into an empty database and a re-sync of the unchanged list. The simulator
runs in its own process, sleeps the latency before every reply and counts the requests and the
peak number that started within any one second (its sliding-window counter). Progress details
are off unless ``--details`` (``Settings.details`` is off for settings built in code): detail
requests are a separate, bounded cost and not part of these targets; ``--details`` shows what
they add with the CLI's defaults, against the same list-only floor.

    python bench/bench_latency.py                       # both scenarios, both backends
    python bench/bench_latency.py --backends sqlite --scenarios single --repeat 3
    python bench/bench_latency.py --details              # as `jobsync sync` runs by default
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

import jobsync
from jobsync.config import HttpSettings, Settings, Source
from jobsync.observability.redact import Secret
from jobsync.service.sync import sync_all
from jobsync.simulator import Simulator
from jobsync.storage.migrate import upgrade
from jobsync.storage.store import normalise_url, open_engine

KEY = "bench-key"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
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


# -- the simulator, in its own process ----------------------------------------------------------


def _simulator_main(conn: Connection, clusters: tuple[str, ...], jobs: int, latency: float) -> None:
    sim = Simulator(cluster_ids=clusters, jobs=jobs, api_key=KEY, seed=1, latency=latency)
    conn.send(sim.start("127.0.0.1", 0))
    try:
        while True:
            try:
                message = conn.recv()
            except EOFError:  # the benchmark died: do not outlive it
                return
            if message == "stats":
                peaks = sim.peak_rates()
                by_endpoint = sim.endpoint_peak_rates()
                conn.send(
                    {
                        "requests": sim.request_count,
                        "peak_rate": sim.peak_rate(),
                        "peak_rate_key": peaks.get(KEY, 0),
                        # The documented limit: per user and endpoint.
                        "peak_rate_endpoint": max(
                            (n for (key, _), n in by_endpoint.items() if key == KEY), default=0
                        ),
                    }
                )
            elif message == "reset":
                sim.reset_counters()
                conn.send(None)
            else:
                return
    finally:
        sim.stop()


@contextmanager
def simulator(scenario: Scenario, latency: float) -> Iterator[tuple[str, Connection]]:
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(
        target=_simulator_main,
        args=(theirs, scenario.clusters, scenario.jobs, latency),
        daemon=True,
    )
    process.start()
    try:
        deadline = time.monotonic() + 120
        while not ours.poll(0.5):
            if not process.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the simulator did not start (exit code {process.exitcode})")
        yield ours.recv(), ours
    finally:
        with suppress(OSError):
            ours.send("stop")
        process.join(10)
        if process.is_alive():
            process.kill()
            process.join()


def _ask(conn: Connection, message: str) -> Any:
    conn.send(message)
    return conn.recv()


# -- databases ----------------------------------------------------------------------------------


@contextmanager
def database(backend: str, pg_url: str) -> Iterator[str]:
    if backend == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix="jobsync-latency-"))
        try:
            yield f"sqlite:///{folder / 'bench.db'}"
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    name = f"jobsync_latency_{secrets.token_hex(4)}"
    admin = create_engine(normalise_url(pg_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield f"{pg_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# -- other load on the machine ------------------------------------------------------------------


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat (Linux)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields) - idle) / 100, sum(fields) / 100


def wait_idle(limit: float) -> None:
    """Wait up to ``limit`` seconds until other processes use less than 0.2 cores."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        busy, _ = machine_busy()
        time.sleep(1.0)
        if machine_busy()[0] - busy < 0.2:
            return
    log(f"the machine stayed busy for {limit:g}s; measuring anyway")


# -- one scenario -------------------------------------------------------------------------------


def run_scenario(
    scenario: Scenario, backend: str, args: argparse.Namespace, rep: int
) -> list[dict[str, Any]]:
    http = HttpSettings(page_concurrency=args.page_concurrency)
    rows = []
    with simulator(scenario, args.latency) as (url, conn), database(backend, args.pg_url) as db:
        engine = open_engine(db)
        upgrade(engine)
        engine.dispose()
        settings = Settings(
            database_url=db,
            sources=tuple(
                Source(name=c, cluster_id=c, base_url=url, api_key=Secret(KEY))
                for c in scenario.clusters
            ),
            page_size=100,
            http=http,
            details=args.details,
        )
        for step in ("first sync", "re-sync"):
            _ask(conn, "reset")
            if args.wait_idle:
                wait_idle(args.wait_idle)
            engine = open_engine(db)  # a fresh engine, as a cron-started `jobsync sync` has
            cpu = time.process_time()
            busy = machine_busy()[0]
            began = time.perf_counter()
            results = sync_all(engine, settings)
            wall = time.perf_counter() - began
            busy = machine_busy()[0] - busy
            cpu = time.process_time() - cpu
            engine.dispose()
            stats = _ask(conn, "stats")
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
    widths = [max(len(h), *(len(row[i]) for row in lines)) for i, h in enumerate(headers)]
    left = {0, 1, 2, 9, 11}

    def render(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [render(headers), render(["-" * w for w in widths])]
    return "\n".join(out + [render(r) for r in lines])


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _list(value: str, known: set[str]) -> list[str]:
    items = [part.strip() for part in value.split(",") if part.strip()]
    if not items or set(items) - known:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(sorted(known))}")
    return items


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Latency-bound passes at the rate limit (see bench/README.md)."
    )
    parser.add_argument(
        "--backends",
        type=lambda v: _list(v, {"sqlite", "postgresql"}),
        default=["sqlite", "postgresql"],
        metavar="NAME,NAME",
    )
    parser.add_argument(
        "--scenarios",
        type=lambda v: _list(v, set(SCENARIOS)),
        default=list(SCENARIOS),
        metavar="NAME,NAME",
    )
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="server to create databases on")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per request")
    parser.add_argument(
        "--page-concurrency",
        type=int,
        default=HttpSettings.page_concurrency,
        help="pages of one source in flight at once (1: one after the other)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per scenario; medians shown")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0,
        metavar="SECONDS",
        help="before each pass, wait up to this long for other load to stop",
    )
    parser.add_argument(
        "--details",
        action="store_true",
        help="ask for progress details as `jobsync sync` does by default (the floor stays the "
        "list's)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write JSON lines here")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.page_concurrency < 1 or args.latency < 0:
        parser.error("--repeat and --page-concurrency must be at least 1, --latency >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows: list[dict[str, Any]] = []
    for name in args.scenarios:
        for backend in args.backends:
            for rep in range(1, args.repeat + 1):
                rows += run_scenario(SCENARIOS[name], backend, args, rep)
    summary = summarise(rows)
    http = HttpSettings(page_concurrency=args.page_concurrency)
    available = any(f.name == "details" for f in dataclasses.fields(Settings))
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
        with args.json.open("w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps({"kind": "run", **row}) + "\n")
            for s in summary:
                out.write(json.dumps({"kind": "summary", **s}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
