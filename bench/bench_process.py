"""Whole ``jobsync sync`` processes against the simulator, as users run them.

Each measurement starts the installed ``jobsync`` command in a process of its own (interpreter
start-up, imports, schema creation and the pass included) against the simulator, which runs in
another process, sleeps its latency before every reply and counts each endpoint's requests and
their peak rate (the most that started within any one second, per API key and endpoint).
Databases are SQLite files in a temporary directory, one per first sync.

Cases (see bench/README.md, "Whole processes"):

    single  1 cluster x 10,000 jobs, 100 ms latency, the commands' defaults (20 requests per
            second, details on), then --no-details; a re-sync with the defaults
    many    200 clusters x 50 jobs sharing one key, the same
    big     1 cluster x 100,000 jobs, no latency, --no-details --requests-per-second 100000:
            first sync and a 1% re-sync, against the minimal client
            (/work/shared/bench/minimal_client.py: one requests session, page after page)

    python bench/bench_process.py                          # every case once (~3 min)
    python bench/bench_process.py --repeat 3 --json out.jsonl
    python bench/bench_process.py --cases big --repeat 3   # the 100,000-job ratios only

The floors of the latency cases are each endpoint's requests divided by the rate: a pass
cannot beat the larger of the two.

jobsync runs from compiled bytecode, as from an installed wheel (pip compiles it on install):
before measuring, the benchmark compiles the package it runs, and the processes it starts may
write bytecode caches even where ``PYTHONDONTWRITEBYTECODE`` is set. Without that an editable
checkout recompiles its own modules in every process, which a user's install never does.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import harness
from harness import ChildProcess, busy_seconds, log

# The minimal client sends this key.
KEY = "test-key"
JOBSYNC = str(Path(sys.executable).with_name("jobsync"))
MINIMAL_CLIENT = Path(
    os.environ.get("JOBSYNC_MINIMAL_CLIENT", "/work/shared/bench/minimal_client.py")
)
RATE = 20.0
LATENCY_TARGET = 1.15
FIRST_TARGET = 1.6
RESYNC_TARGET = 1.3
CASES = {
    "single": (("in01-0000000000000000",), 10_000, 0.1),
    "many": (tuple(f"in01-{i:016x}" for i in range(200)), 50, 0.1),
    "big": (("in01-0000000000000000",), 100_000, 0.0),
}


def _serve(conn: Any, clusters: tuple[str, ...], jobs: int, seed: int, latency: float) -> None:
    """Child process: the simulator, answering 'stats', 'advance', 'reset' until 'stop'."""
    from jobsync.simulator import LIST_PATH, Simulator

    sim = Simulator(cluster_ids=clusters, jobs=jobs, api_key=KEY, seed=seed, latency=latency)

    def stats() -> dict[str, Any]:
        paths = Counter(r.path for r in sim.requests)
        peaks = sim.endpoint_peak_rates()
        progress = [p for p in paths if p != LIST_PATH]
        return {
            "list_requests": paths[LIST_PATH],
            "progress_requests": sum(paths[p] for p in progress),
            "list_peak": peaks.get((KEY, LIST_PATH), 0),
            "progress_peak": max((peaks.get((KEY, p), 0) for p in progress), default=0),
        }

    commands = {
        "stats": lambda _: stats(),
        "reset": lambda _: sim.reset_counters(),
        "advance": lambda n: len(sim.advance(count=n)),
    }
    try:
        conn.send(sim.start("127.0.0.1", 0))
        while True:
            try:
                command, arg = conn.recv()
            except EOFError:
                return
            if command == "stop":
                return
            conn.send(commands[command](arg))
    finally:
        sim.stop()
        conn.close()


class Sim:
    def __init__(self, clusters: tuple[str, ...], jobs: int, seed: int, latency: float) -> None:
        self.child = ChildProcess("the simulator", _serve, (clusters, jobs, seed, latency))
        self.url: str = self.child.receive(harness.SIM_START_TIMEOUT)

    def ask(self, command: str, arg: Any = None) -> Any:
        self.child.send((command, arg))
        return self.child.receive(harness.SIM_REPLY_TIMEOUT)

    def close(self) -> None:
        self.child.close(("stop", None))


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, float, str]:
    """(wall seconds, its CPU seconds, busy cores of the whole machine meanwhile, stdout) of
    one process."""
    busy = busy_seconds()
    cpu = _children_cpu()
    began = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {done.returncode}: {done.stderr[-2000:]}")
    return wall, _children_cpu() - cpu, (busy_seconds() - busy) / wall, done.stdout


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def jobsync_sync(sim: Sim, clusters: tuple[str, ...], db: Path, *extra: str) -> list[str]:
    return [JOBSYNC, "sync", "--db", f"sqlite:///{db}", "--base-url", sim.url, *extra]


def environment(clusters: tuple[str, ...]) -> dict[str, str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("JOBSYNC_", "ZILLIZ_")) and k != "PYTHONDONTWRITEBYTECODE"
    }
    return {**clean, "JOBSYNC_API_KEY": KEY, "JOBSYNC_CLUSTER_ID": ",".join(clusters)}


def compile_jobsync() -> None:
    """Byte-compile the jobsync package the command runs, as installing a wheel does."""
    import compileall

    import jobsync

    compileall.compile_dir(str(Path(jobsync.__file__).parent), quiet=1)


def latency_case(name: str, rep: int, seed: int, workdir: Path) -> list[dict[str, Any]]:
    clusters, jobs, latency = CASES[name]
    env = environment(clusters)
    rows = []
    sim = Sim(clusters, jobs, seed, latency)
    try:
        for step, extra, fresh in (
            ("defaults", (), True),
            ("re-sync, defaults", (), False),
            ("--no-details", ("--no-details",), True),
        ):
            db = workdir / f"{name}-{rep}-{'b' if extra else 'a'}.db"
            if fresh and db.exists():
                db.unlink()
            sim.ask("reset")
            wall, cpu, busy, _ = timed(jobsync_sync(sim, clusters, db, *extra), env)
            stats = sim.ask("stats")
            floors = (stats["list_requests"] / RATE, stats["progress_requests"] / RATE)
            rows.append(
                {
                    "case": name,
                    "step": step,
                    "rep": rep,
                    "wall": wall,
                    "cpu": cpu,
                    "busy_cores": busy,
                    **stats,
                    "list_floor": floors[0],
                    "progress_floor": floors[1],
                    "ratio": wall / max(floors),
                }
            )
            log(f"{name} {step} #{rep}: {wall:.2f}s, {stats}")
    finally:
        sim.close()
    return rows


def big_case(rep: int, seed: int, workdir: Path) -> list[dict[str, Any]]:
    clusters, jobs, _ = CASES["big"]
    env = environment(clusters)
    fast = ("--no-details", "--requests-per-second", "100000")
    db = workdir / f"big-{rep}.db"
    rows = []
    sim = Sim(clusters, jobs, seed, 0.0)
    try:
        client = [sys.executable, str(MINIMAL_CLIENT), sim.url, clusters[0]]
        for step in ("first sync", "1% re-sync"):
            if step == "1% re-sync":
                moved = sim.ask("advance", jobs // 100)
                log(f"advanced {moved} jobs")
            floor, floor_cpu, floor_busy, seen = timed(client, env)
            wall, cpu, busy, out = timed(jobsync_sync(sim, clusters, db, *fast), env)
            rows.append(
                {
                    "case": "big",
                    "step": step,
                    "rep": rep,
                    "wall": wall,
                    "cpu": cpu,
                    "busy_cores": busy,
                    "minimal_client": floor,
                    "minimal_client_cpu": floor_cpu,
                    "minimal_client_busy_cores": floor_busy,
                    "minimal_client_jobs": int(seen.strip()),
                    "ratio": wall / floor,
                    "summary": out.strip(),
                }
            )
            log(f"big {step} #{rep}: {wall:.2f}s vs minimal client {floor:.2f}s")
    finally:
        sim.close()
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[list[str]]:
    table = []
    keys = dict.fromkeys((r["case"], r["step"]) for r in rows)
    for case, step in keys:
        runs = [r for r in rows if (r["case"], r["step"]) == (case, step)]
        wall = statistics.median(r["wall"] for r in runs)
        cpu = statistics.median(r["cpu"] for r in runs)
        busy = statistics.median(r["busy_cores"] for r in runs)
        if case == "big":
            floor = statistics.median(r["minimal_client"] for r in runs)
            floor_cpu = statistics.median(r["minimal_client_cpu"] for r in runs)
            target = FIRST_TARGET if step == "first sync" else RESYNC_TARGET
            table.append(
                [case, step, f"{wall:.2f}", f"{cpu:.2f}",
                 f"minimal client {floor:.2f} s, cpu {floor_cpu:.2f} s", "", "",
                 f"{wall / floor:.2f}x (<= {target})", f"{busy:.2f}"]
            )  # fmt: skip
            continue
        lists = statistics.median(r["list_requests"] for r in runs)
        progress = statistics.median(r["progress_requests"] for r in runs)
        larger = max(lists, progress) / RATE
        peaks = f"{max(r['list_peak'] for r in runs)}/{max(r['progress_peak'] for r in runs)}"
        table.append(
            [case, step, f"{wall:.2f}", f"{cpu:.2f}", f"{lists:g} / {progress:g}",
             f"{lists / RATE:.1f} / {progress / RATE:.1f}", peaks,
             f"{wall / larger:.2f}x (<= {LATENCY_TARGET})", f"{busy:.2f}"]
        )  # fmt: skip
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=harness.name_list(CASES), default=list(CASES))
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; medians shown")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write JSON lines here")
    args = parser.parse_args()
    if not Path(JOBSYNC).exists():
        parser.error(f"{JOBSYNC} not found: install jobsync in this interpreter's environment")
    if "big" in args.cases and not MINIMAL_CLIENT.exists():
        parser.error(f"{MINIMAL_CLIENT} not found (set JOBSYNC_MINIMAL_CLIENT)")
    compile_jobsync()
    workdir = Path(tempfile.mkdtemp(prefix="jobsync-process-"))
    rows: list[dict[str, Any]] = []
    try:
        for rep in range(1, args.repeat + 1):
            seed = args.seed + rep - 1
            for case in args.cases:
                if case == "big":
                    rows += big_case(rep, seed, workdir)
                else:
                    rows += latency_case(case, rep, seed, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    header = ["case", "step", "wall s", "cpu s", "requests list / progress", "floors s",
              "peak/s list/progress", "ratio", "busy cores"]  # fmt: skip
    print(harness.format_table(header, summarise(rows)))
    print(f"medians of {args.repeat} run(s); {harness.code_version()}")
    if args.json:
        harness.write_json_lines(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
