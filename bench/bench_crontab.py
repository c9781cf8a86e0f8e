"""Two crontab lines: two ``jobsync sync`` processes for two different sources, started at the
same instant into one SQLite file, N times (default 100). Every process must succeed: passes
lock their source, not the database, and their write transactions queue.

    python bench/bench_crontab.py [--rounds 100] [--latency 0.05] [--jobs 200] [--new-file]

With ``--new-file`` every round syncs into a file of its own that does not exist yet: the first
minute of two crontab lines, when both processes create the database and its schema at once.

Prints the exit codes seen, how many successes, and the spread of the two start times.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from harness import log
from sqlalchemy import func, select

import jobsync
from jobsync.simulator import Simulator
from jobsync.storage.schema import sync_runs

KEY = "bench-crontab-key"
CLUSTERS = ("in01-crontab000000001", "in01-crontab000000002")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=200, help="jobs per source")
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--details", action="store_true", help="progress details on")
    parser.add_argument("--new-file", action="store_true", help="each round into a new SQLite file")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBSYNC_", "ZILLIZ_"))}
    env["JOBSYNC_API_KEY"] = KEY
    codes: Counter[int] = Counter()
    errors: list[str] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        Simulator(
            cluster_ids=CLUSTERS, jobs=args.jobs, api_key=KEY, seed=3, latency=args.latency
        ) as sim,
    ):
        files = [f"sqlite:///{Path(tmp) / 'jobsync.db'}"]
        sim.run_progression(interval=0.5, fraction=0.05, new_jobs=1)
        began = time.monotonic()
        for round_ in range(args.rounds):
            if args.new_file and round_:
                files.append(f"sqlite:///{Path(tmp) / f'jobsync-{round_}.db'}")
            db = files[-1]
            # Both started before either is waited for: the same instant, as cron starts them.
            procs = [
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "jobsync",
                        "sync",
                        "--db",
                        db,
                        "--base-url",
                        sim.url,
                        "--cluster-id",
                        cluster,
                        "--details" if args.details else "--no-details",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    env=env,
                )
                for cluster in CLUSTERS
            ]
            for proc in procs:
                _, err = proc.communicate(timeout=120)
                codes[proc.returncode] += 1
                if proc.returncode != 0:
                    errors.append(err.decode(errors="replace").strip())
            if (round_ + 1) % 10 == 0:
                log(f"{round_ + 1} rounds: {dict(codes)}")
        took = time.monotonic() - began
        sim.stop_progression()
        statuses: Counter[str] = Counter()
        for db in files:
            engine = jobsync.open_engine(db)
            with engine.connect() as conn:
                rows = conn.execute(
                    select(sync_runs.c.status, func.count()).group_by(sync_runs.c.status)
                )
                statuses.update({status: n for status, n in rows})
            engine.dispose()
    into = f"{len(files)} new SQLite files" if args.new_file else "one SQLite file"
    print(
        f"{args.rounds} rounds x 2 sources into {into} in {took:.0f}s: "
        f"{codes[0]} successes, exit codes {dict(codes)}; sync_runs {dict(statuses)}"
    )
    for line in errors[:5]:
        print(f"  {line}")
    return 0 if codes[0] == 2 * args.rounds else 1


if __name__ == "__main__":
    sys.exit(main())
