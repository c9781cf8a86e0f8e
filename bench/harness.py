"""What the benchmarks share: the simulator in a process of its own, throw-away databases, the
CPU and peak-RSS probes, the table formatter, common arguments and JSON lines.

Each benchmark (bench_sync.py, bench_latency.py, bench_arrivals.py) keeps its own measurements,
targets and output; this module only carries the machinery. The benchmarks run as scripts
(``python bench/bench_sync.py``), so bench/ is on ``sys.path`` and ``import harness`` works,
in spawned children too (multiprocessing hands them the parent's ``sys.path``).

Public names from ``jobsync`` and ``jobsync.simulator`` are used directly. The few internals the
benchmarks need are imported below, in one block, and re-exported from here, so that a move
inside the package costs one edit in this file.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy
from sqlalchemy import Engine, create_engine

import jobsync

# -- jobsync internals: the one place the benchmarks import them from ----------------------------
from jobsync.api.client import ApiClient
from jobsync.api.listing import fetch_snapshot
from jobsync.api.ratelimit import RateLimiters
from jobsync.service.memory import keep_large_blocks_unmapped
from jobsync.storage.schema import sync_runs
from jobsync.storage.store import normalise_url

# ------------------------------------------------------------------------------------------------

__all__ = [
    "BACKENDS",
    "DEFAULT_PG_URL",
    "KEY",
    "PEAK_RSS_PER_STEP",
    "ApiClient",
    "ChildProcess",
    "RateLimiters",
    "SimulatorProcess",
    "add_common_arguments",
    "admin_engine",
    "busy_seconds",
    "check_common_arguments",
    "clock_ticks",
    "code_version",
    "create_database",
    "current_rss_mb",
    "database",
    "database_url",
    "drop_database",
    "fetch_snapshot",
    "format_table",
    "int_list",
    "keep_large_blocks_unmapped",
    "log",
    "migrate",
    "name_list",
    "normalise_url",
    "peak_rss_mb",
    "process_cpu",
    "receive_from",
    "reset_peak_rss",
    "server_version",
    "sync_runs",
    "wait_until_idle",
    "write_json_lines",
]

KEY = "bench-key"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
BACKENDS = ("sqlite", "postgresql")

# Building a million-job world takes a while; 100,000 jobs take under a second.
SIM_START_TIMEOUT = 300.0
SIM_REPLY_TIMEOUT = 120.0


def log(message: str) -> None:
    """Progress goes to stderr, so the table on stdout stays clean for copy-paste."""
    print(message, file=sys.stderr, flush=True)


# -- a spawned child with a pipe -----------------------------------------------------------------


def receive_from(
    conn: multiprocessing.connection.Connection,
    process: multiprocessing.process.BaseProcess,
    timeout: float,
    name: str,
) -> Any:
    """A child's next message; TimeoutError if it is silent, RuntimeError if it has died."""
    if not conn.poll(timeout):
        raise TimeoutError(f"{name} did not answer within {timeout:g}s")
    try:
        return conn.recv()
    except EOFError:
        process.join(5)
        raise RuntimeError(f"{name} exited (status {process.exitcode})") from None


class ChildProcess:
    """A spawned process that talks over a pipe: ``target(conn, *args)`` runs in it.

    Spawned, not forked: no copied locks, no shared heap, and the child's peak RSS is its own
    from the start. The child should return when ``recv()`` raises EOFError (the parent died),
    so a killed benchmark never leaves children behind.
    """

    def __init__(self, name: str, target: Any, args: tuple[Any, ...]) -> None:
        self.name = name
        context = multiprocessing.get_context("spawn")
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(
            target=target, args=(child_conn, *args), name=name, daemon=True
        )
        self._process.start()
        child_conn.close()  # so that recv() sees EOF if the child dies

    @property
    def pid(self) -> int:
        assert self._process.pid is not None
        return self._process.pid

    def send(self, message: Any) -> None:
        self._conn.send(message)

    def receive(self, timeout: float) -> Any:
        return receive_from(self._conn, self._process, timeout, self.name)

    def close(self, stop: Any = "stop", wait: float = 10) -> None:
        """Ask the child to stop, then terminate and kill it if it lingers."""
        if self._conn.closed:
            return
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(stop)
        self._process.join(wait)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()


# -- the simulator, in its own process -----------------------------------------------------------
#
# In the same process the simulator's JSON encoding would be billed to the benchmark's CPU and
# its server threads would fight the sync for the GIL; both would hide what jobsync itself costs.


def _serve_simulator(
    conn: multiprocessing.connection.Connection,
    clusters: tuple[str, ...],
    jobs: int,
    seed: int,
    latency: float,
) -> None:
    """Child process: build the world, send the URL, then obey commands until 'stop' or EOF."""
    from jobsync.simulator import LIST_PATH, Simulator

    sim = Simulator(cluster_ids=clusters, jobs=jobs, api_key=KEY, seed=seed, latency=latency)

    def stats() -> dict[str, Any]:
        by_endpoint = sim.endpoint_peak_rates()
        paths = Counter(record.path for record in sim.requests)
        return {
            "requests": sim.request_count,
            "list_requests": paths[LIST_PATH],
            "peak_rate": sim.peak_rate(),
            "peak_rate_key": sim.peak_rates().get(KEY, 0),
            # The documented limit: per user and endpoint.
            "peak_rate_endpoint": max(
                (n for (key, _), n in by_endpoint.items() if key == KEY), default=0
            ),
        }

    commands = {
        "advance": lambda count: len(sim.advance(count=count)),
        "add_jobs": lambda n: len(sim.add_jobs(n)),
        "count": lambda cluster: len(sim.jobs(cluster)),
        "stats": lambda _: stats(),
        "reset": lambda _: sim.reset_counters(),
    }
    try:
        conn.send(sim.start("127.0.0.1", 0))
        while True:
            try:
                command, arg = conn.recv()
            except EOFError:  # the benchmark died: do not outlive it
                return
            if command == "stop":
                return
            try:
                if command not in commands:
                    raise ValueError(f"unknown command {command!r}")
                conn.send(commands[command](arg))
            except Exception as exc:  # hand it to the benchmark, which raises it
                conn.send(exc)
    finally:
        sim.stop()
        conn.close()


class SimulatorProcess:
    """``jobsync.simulator.Simulator`` serving on loopback from a spawned process.

    Waits until it serves (``url``); always torn down on exit, even on errors. Its methods may
    be called from several threads (one request at a time goes over the pipe).
    """

    def __init__(
        self,
        clusters: Sequence[str],
        jobs: int,
        seed: int = 1,
        latency: float = 0.0,
        start_timeout: float = SIM_START_TIMEOUT,
    ) -> None:
        self._lock = threading.Lock()
        self._child = ChildProcess(
            "the simulator", _serve_simulator, (tuple(clusters), jobs, seed, latency)
        )
        try:
            self.url: str = self._receive(start_timeout)
        except BaseException:
            self.close()
            raise

    @property
    def pid(self) -> int:
        return self._child.pid

    def _receive(self, timeout: float) -> Any:
        reply = self._child.receive(timeout)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def request(self, command: str, arg: Any = None) -> Any:
        with self._lock:
            self._child.send((command, arg))
            return self._receive(SIM_REPLY_TIMEOUT)

    def advance(self, count: int) -> int:
        """Move ``count`` open jobs one state on; returns how many changed."""
        return int(self.request("advance", count))

    def add_jobs(self, n: int) -> int:
        """Add ``n`` new jobs at the head of the first cluster's list."""
        return int(self.request("add_jobs", n))

    def count(self, cluster: str | None = None) -> int:
        """How many jobs a cluster lists now (default: the first)."""
        return int(self.request("count", cluster))

    def stats(self) -> dict[str, Any]:
        """Requests since the last reset: all, list requests, and the peak rates."""
        return dict(self.request("stats"))

    def reset_counters(self) -> None:
        self.request("reset")

    def cpu(self) -> float:
        """CPU seconds the simulator process has used so far (see process_cpu)."""
        return process_cpu(self.pid)

    def close(self) -> None:
        with self._lock:
            self._child.close(("stop", None))

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- CPU ----------------------------------------------------------------------------------------
#
# One probe, in clock ticks converted with os.sysconf("SC_CLK_TCK") (not an assumed 100):
#
# - another process: utime + stime from /proc/<pid>/stat (fields 14 and 15), all its threads.
#   Guest time (field 43) is already part of utime and is not added again.
# - the whole machine: the first line of /proc/stat, the sum of user, nice, system, idle,
#   iowait, irq, softirq and steal, minus idle and iowait. The guest and guest_nice columns
#   that follow are already counted in user and nice, so they are left out.
# - this process: time.process_time(), the same user + system of all threads, read from the
#   kernel at nanosecond rather than tick resolution.


def clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, or NaN if it cannot be read."""
    try:
        # The command name may contain spaces and parentheses: split after the last ')'.
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return float("nan")
    # fields[0] is field 3 (state): utime (14) and stime (15) are fields[11] and fields[12].
    return (int(fields[11]) + int(fields[12])) / clock_ticks()


def busy_seconds() -> float:
    """CPU seconds all cores have spent busy since boot (Linux /proc/stat), or NaN."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return float("nan")
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / clock_ticks()  # guest time is already in user time


IDLE_BUSY_CORES = 0.2


def wait_until_idle(max_wait: float, sample: float = 0.5) -> float:
    """Wait up to ``max_wait`` s until other processes leave the CPUs alone; return busy cores.

    Two cores leave no room: a neighbour on one of them slows the client, the simulator or
    PostgreSQL, and the figures with them. Call it while the benchmark's own processes are idle,
    so that whatever keeps the machine busy is someone else. Waits one ``sample`` at least.
    """
    deadline = time.monotonic() + max_wait
    while True:
        before = busy_seconds()
        time.sleep(sample)
        busy = (busy_seconds() - before) / sample
        if busy <= IDLE_BUSY_CORES or time.monotonic() >= deadline:
            return round(busy, 2)


# -- peak RSS -----------------------------------------------------------------------------------


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (Linux >= 4.0), so VmHWM covers one step."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb() -> float:
    """This process's RSS high-water mark in MiB: VmHWM, which reset_peak_rss() clears.

    Not ru_maxrss (only the fallback): that also keeps the peak of the image a process had
    before exec, and a spawned child is forked from its parent first, so it would report the
    parent's size.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def current_rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


# Whether the high-water mark can be reset, i.e. whether "peak RSS" is per step.
PEAK_RSS_PER_STEP = reset_peak_rss()


# -- databases ----------------------------------------------------------------------------------


def admin_engine(pg_url: str) -> Engine:
    """An AUTOCOMMIT engine on the server's maintenance database, for CREATE/DROP DATABASE."""
    return create_engine(normalise_url(pg_url), isolation_level="AUTOCOMMIT")


def database_url(pg_url: str, name: str) -> str:
    """``pg_url`` with its database replaced by ``name`` (credentials kept)."""
    url = sqlalchemy.make_url(normalise_url(pg_url)).set(database=name)
    return url.render_as_string(hide_password=False)


def create_database(admin: Engine, name: str) -> None:
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')


def drop_database(admin: Engine, name: str) -> None:
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrate(url: str) -> None:
    """Bring a database to the current schema (untimed: a one-off, not part of a pass)."""
    engine = jobsync.open_engine(url)
    try:
        jobsync.upgrade(engine)
    finally:
        engine.dispose()


@contextlib.contextmanager
def database(
    backend: str,
    pg_url: str = DEFAULT_PG_URL,
    *,
    prefix: str = "jobsync_bench",
    upgrade: bool = True,
) -> Iterator[str]:
    """A throw-away database, migrated unless ``upgrade`` is false; yields its URL.

    SQLite: ``bench.db`` in a temp dir, removed afterwards. PostgreSQL: ``<prefix>_<random>``
    created on the ``pg_url`` server and dropped ``WITH (FORCE)`` afterwards, even on errors.
    """
    if backend == "sqlite":
        folder = Path(tempfile.mkdtemp(prefix=f"{prefix.replace('_', '-')}-"))
        try:
            url = f"sqlite:///{folder / 'bench.db'}"
            if upgrade:
                migrate(url)
            yield url
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    if backend != "postgresql":
        raise ValueError(f"unknown backend {backend!r}")
    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = admin_engine(pg_url)
    try:
        create_database(admin, name)
        try:
            url = database_url(pg_url, name)
            if upgrade:
                migrate(url)
            yield url
        finally:
            drop_database(admin, name)
    finally:
        admin.dispose()


def server_version(backend: str, pg_url: str = DEFAULT_PG_URL) -> str:
    """'SQLite 3.x' or 'PostgreSQL 15.x (...)', for the header of a table."""
    if backend == "sqlite":
        import sqlite3

        return f"SQLite {sqlite3.sqlite_version}"
    admin = admin_engine(pg_url)
    try:
        with admin.connect() as conn:
            return f"PostgreSQL {conn.exec_driver_sql('SHOW server_version').scalar_one()}"
    finally:
        admin.dispose()


# -- which code was measured ----------------------------------------------------------------------


def code_version() -> dict[str, Any]:
    """Which jobsync was measured: HEAD, uncommitted changes, and a hash of the sources.

    Figures are only comparable between runs of the same code; a working tree that changes
    between two scenarios of one run shows up as two different hashes.
    """
    package = Path(jobsync.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    version: dict[str, Any] = {
        "jobsync_sha256": digest.hexdigest()[:12],
        "jobsync_path": str(package),
    }
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "-C", str(package.parent)]
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True)
        status = subprocess.run(
            [*git, "status", "--porcelain", "--", str(package)], capture_output=True, text=True
        )
        if head.returncode == 0:
            version["git_head"] = head.stdout.decode().strip()
            version["git_dirty"] = [line[3:] for line in status.stdout.splitlines()]
    return version


# -- output -------------------------------------------------------------------------------------


def format_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    left: Iterable[str] = (),
    groups: Sequence[object] | None = None,
) -> str:
    """A plain-text table: the ``left`` columns (by header) left-aligned, the others (numbers)
    right-aligned, a rule under the headers, trailing blanks stripped. With ``groups`` (one key
    per row), a blank line separates rows whose keys differ."""
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    left_columns = {headers.index(h) for h in left}

    def render(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left_columns else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [render(headers), render(["-" * w for w in widths])]
    for index, cells in enumerate(rows):
        if groups is not None and index and groups[index] != groups[index - 1]:
            out.append("")
        out.append(render(cells))
    return "\n".join(out)


def write_json_lines(path: Path, records: Iterable[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record) + "\n")


# -- arguments ----------------------------------------------------------------------------------


def name_list(known: Iterable[str]) -> Any:
    """An argparse type: a comma-separated list of names from ``known``."""
    allowed = set(known)

    def parse(value: str) -> list[str]:
        items = [part.strip() for part in value.split(",") if part.strip()]
        if not items or set(items) - allowed:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(sorted(allowed))}")
        return items

    return parse


def int_list(value: str) -> list[int]:
    """An argparse type: a comma-separated list of integers."""
    try:
        numbers = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {value!r}"
        ) from None
    if not numbers:
        raise argparse.ArgumentTypeError("give at least one number")
    return numbers


def add_common_arguments(
    parser: argparse.ArgumentParser,
    *,
    repeat_help: str = "runs per scenario; medians shown",
    seed_help: str = "simulator seed of the first run (+1 for each further run)",
    wait_idle_help: str = "before each measurement, wait up to this long for other load to stop",
) -> None:
    """--backends, --pg-url, --repeat, --seed, --wait-idle and --json; check them with
    check_common_arguments() after parsing."""
    parser.add_argument(
        "--backends",
        type=name_list(BACKENDS),
        default=list(BACKENDS),
        metavar="NAME,NAME",
        help="sqlite and/or postgresql (default: both)",
    )
    parser.add_argument(
        "--pg-url",
        default=DEFAULT_PG_URL,
        help="server to create throw-away databases on (default: %(default)s)",
    )
    parser.add_argument("--repeat", type=int, default=1, help=repeat_help)
    parser.add_argument("--seed", type=int, default=1, help=seed_help)
    parser.add_argument(
        "--wait-idle", type=float, default=0, metavar="SECONDS", help=wait_idle_help
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write JSON lines here")


def check_common_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.wait_idle < 0:
        parser.error("--wait-idle must be at least 0")
