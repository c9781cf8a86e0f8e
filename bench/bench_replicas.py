"""Replicas: N ``jobsync daemon`` processes on one PostgreSQL database, sharing one API key.

Defaults are the issue's scenario: 3 daemons, 150 sources, 100 ms simulated latency, a 10 s
period, 2 minutes, one replica killed with ``kill -9`` halfway. Reports passes per source per
period, the share of passes each replica ran, the peak request rate on the key per endpoint
(the simulator's own measure), and transitions recorded twice or never made, judged against
the simulator's own log of state changes. See bench/README.md for the method and figures.

    python bench/bench_replicas.py [--replicas 3] [--sources 150] [--period 10] [--duration 120]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import harness
from harness import log
from sqlalchemy import func, select

import jobsync
from jobsync.simulator import Simulator
from jobsync.storage.schema import import_job_transitions, sync_runs

KEY = "bench-replicas-key"
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # interval periods are aligned on it


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--sources", type=int, default=150)
    parser.add_argument("--jobs", type=int, default=20, help="jobs per source at the start")
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--period", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--kill-at", type=float, default=None, help="default: half-way")
    parser.add_argument("--pg-url", default=harness.DEFAULT_PG_URL)
    parser.add_argument("--details", action="store_true", help="progress details on")
    parser.add_argument("--logs", type=Path, help="keep the replicas' JSON logs here")
    parser.add_argument("--keep-db", action="store_true", help="leave the database behind")
    args = parser.parse_args()
    kill_at = args.duration / 2 if args.kill_at is None else args.kill_at

    admin = harness.admin_engine(args.pg_url)
    name = f"bench_replicas_{uuid.uuid4().hex[:8]}"
    harness.create_database(admin, name)
    url = harness.database_url(args.pg_url, name)
    clusters = tuple(f"in01-{i:016x}" for i in range(args.sources))
    try:
        harness.migrate(url)
        with (
            tempfile.TemporaryDirectory() as tmp,
            Simulator(
                cluster_ids=clusters, jobs=args.jobs, api_key=KEY, seed=7, latency=args.latency
            ) as sim,
        ):
            config = _config(Path(tmp), sim.url, url, clusters, args.details)
            sim.run_progression(interval=1.0, fraction=0.05, new_jobs=0)
            began = datetime.now(UTC)
            logs = args.logs or Path(tmp)
            logs.mkdir(parents=True, exist_ok=True)
            procs = [_start(logs, i, config, args.period) for i in range(args.replicas)]
            killed: int | None = None
            killed_at: datetime | None = None
            t0 = time.monotonic()
            while (elapsed := time.monotonic() - t0) < args.duration:
                if killed is None and elapsed >= kill_at:
                    killed, killed_at = procs[0].pid, datetime.now(UTC)
                    os.kill(killed, signal.SIGKILL)
                    procs[0].wait()
                    log(f"killed replica pid {killed} at {elapsed:.1f}s")
                time.sleep(0.5)
            # The stop: the period it falls in is not whole (passes due later in it never run).
            ended = datetime.now(UTC)
            alive = [p for p in procs if p.poll() is None]
            for p in alive:
                p.send_signal(signal.SIGTERM)
            for p in alive:
                p.wait(timeout=30)
            sim.stop_progression()
            peaks = sim.endpoint_peak_rates()
            changes = sim.change_log
            served = sim.request_count
        _report(url, args, clusters, began, ended, killed, killed_at, peaks, changes, served)
    finally:
        if args.keep_db:
            print(f"database kept: {url}")
        else:
            harness.drop_database(admin, name)
        admin.dispose()
    return 0


def _config(tmp: Path, sim_url: str, db_url: str, clusters: tuple[str, ...], details: bool) -> Path:
    lines = [f'database_url = "{db_url}"', f"details = {'true' if details else 'false'}"]
    for cluster in clusters:
        lines += ["[[sources]]", f'cluster_id = "{cluster}"', f'base_url = "{sim_url}"']
    path = tmp / "jobsync.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _start(tmp: Path, index: int, config: Path, period: float) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBSYNC_", "ZILLIZ_"))}
    env["JOBSYNC_API_KEY"] = KEY
    err = (tmp / f"replica{index}.log").open("wb")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jobsync",
            "daemon",
            "--config",
            str(config),
            "--every",
            f"{period:g}s",
            "--log-format",
            "json",
        ],
        stdout=subprocess.DEVNULL,
        stderr=err,
        stdin=subprocess.DEVNULL,
        env=env,
    )


def _report(url, args, clusters, began, ended, killed, killed_at, peaks, changes, served) -> None:
    engine = jobsync.open_engine(url)
    with engine.connect() as conn:
        runs = list(conn.execute(select(sync_runs).order_by(sync_runs.c.id)))
        per_change = list(
            conn.execute(
                select(
                    import_job_transitions.c.cluster_id,
                    import_job_transitions.c.job_id,
                    import_job_transitions.c.kind,
                    import_job_transitions.c.to_state,
                    func.count(),
                ).group_by(
                    import_job_transitions.c.cluster_id,
                    import_job_transitions.c.job_id,
                    import_job_transitions.c.kind,
                    import_job_transitions.c.to_state,
                )
            )
        )
    engine.dispose()
    step = timedelta(seconds=args.period)

    def period(moment: datetime) -> int:
        return (moment - EPOCH) // step

    # Whole periods once every replica was up (the first run shows that, give or take the
    # import time of the others): the first and the last are partial.
    first = period(min(r.started_at for r in runs)) + 1
    last = period(ended) - 1
    counts = Counter((r.cluster_id, period(r.started_at)) for r in runs)
    death = period(killed_at) if killed_at is not None else None
    histogram: Counter[int] = Counter()
    histogram_alive: Counter[int] = Counter()
    missed: Counter[int] = Counter()  # source-periods without a pass, per period
    for p in range(first, last + 1):
        for c in clusters:
            n = counts.get((c, p), 0)
            histogram[n] += 1
            if n == 0:
                missed[p - first] += 1
            if death is None or p not in (death, death + 1):
                histogram_alive[n] += 1
    status = Counter(r.status for r in runs)
    share = Counter(r.pid for r in runs)
    # Transitions: each (job, kind, state) at most once; each recorded state one the simulator
    # really gave the job (a change recorded that never happened would be a phantom).
    duplicated = sum(n - 1 for *_, n in per_change if n > 1)
    made = {(c.cluster_id, c.job_id, c.to_state) for c in changes}
    made |= {(c.cluster_id, c.job_id, c.from_state) for c in changes if c.from_state}
    phantom = sum(
        1 for cl, job, kind, to, _ in per_change if kind == "change" and (cl, job, to) not in made
    )
    recorded = sum(n for *_, n in per_change)
    out = [
        f"replicas {args.replicas}, sources {args.sources}, period {args.period:g}s, "
        f"latency {args.latency * 1000:g} ms, {args.duration:g}s, killed pid {killed} "
        f"(period {death})",
        f"runs: {len(runs)} ({dict(status)}); requests served: {served}",
        f"whole periods {first}..{last} ({last - first + 1}) x {len(clusters)} sources: "
        f"passes per source per period {dict(sorted(histogram.items()))}",
        f"  excluding the period of the kill and the next: {dict(sorted(histogram_alive.items()))}",
        "  sources without a pass, by whole period (0 = the first): "
        + str(dict(sorted(missed.items()))),
        "share per replica: "
        + ", ".join(
            f"pid {pid}{' (killed)' if pid == killed else ''}: {n} ({n / len(runs):.1%})"
            for pid, n in sorted(share.items())
        ),
        "peak requests started within one second, per endpoint: "
        + ", ".join(f"{path}: {n}" for (_, path), n in sorted(peaks.items())),
        f"transitions recorded: {recorded}; duplicated: {duplicated}; never made by the "
        f"simulator: {phantom}; simulator changes: {len(changes)}",
    ]
    errors = Counter((r.status, (r.error or "")[:120]) for r in runs if r.status != "succeeded")
    out += [f"  {n} x {status}: {error}" for (status, error), n in errors.most_common(5)]
    print("\n".join(out))


if __name__ == "__main__":
    sys.exit(main())
