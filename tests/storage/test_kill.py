"""``kill -9`` at random moments: a killed ``jobsync sync`` never leaves a half-written pass.

A real ``python -m jobsync sync`` subprocess syncs a simulator with a few thousand jobs and is
killed with SIGKILL after a random (seeded) delay. Where the kill lands is steered by the
subprocess's own progress, seen through the simulator's request numbers:

- ``startup``: a random delay after spawning (imports, schema, lock, ``sync_runs`` row);
- ``in-flight``: while page *k* is answered slowly (``Fault(status=200, delay=...)``);
- ``between-pages``: after page *k* was asked for, before the next request goes out (the
  client spaces its requests to stay under the API's rate limit);
- ``write``: after the last request of the walk (page 1 read again), so the kill lands before,
  inside or just after the write transaction;
- ``complete``: no kill, the pass runs to its end.

After every kill the database must be exactly what the last committed pass left (or what the
killed pass committed just before dying, which its ``sync_runs`` row then says: 'succeeded'
is written in the same transaction as the jobs), SQLite's file must pass ``integrity_check``,
no history row may belong to a run that did not succeed, and the next normal pass must succeed
and turn the killed run's 'running' row into 'abandoned'. Every pass that commits is checked
against a model of the vanish rule and of the transitions a pass must write.

``JOBSYNC_KILL_SEED`` replays a run with another seed.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from jobsync.domain.states import canonical_state
from jobsync.service.sync import sync_all
from jobsync.simulator import LIST_PATH, Fault, Simulator
from jobsync.storage.migrate import ensure_schema
from jobsync.storage.store import normalise_url, open_engine
from tests.conftest import API_KEY, CLUSTER, settings_for

SLOW_ITERATIONS = 50
INITIAL_JOBS = 2000
PAGE_SIZE = 100  # the CLI's default, which the subprocess uses
LATENCY = 0.002  # seconds per request, on top of the client's own rate limit (20 per second)
GAP = 1 / 20  # seconds between two requests of the subprocess: its rate limiter spaces them
RECOVER_EVERY = 0.7  # chance of a normal pass right after a kill (else the next kill comes first)
DEADLINE = 60.0  # seconds: nothing in one iteration may take longer
SEED = int(os.environ.get("JOBSYNC_KILL_SEED", "20240401"))

# "write" twice: the moment of commit is the narrowest target.
PHASES = ("write", "in-flight", "startup", "write", "between-pages", "complete")
# Every phase once in the suite; the slow test runs SLOW_ITERATIONS.
ITERATIONS = len(PHASES)

# job_id -> (state, raw_state, vanished)
Jobs = dict[str, tuple[str, str | None, bool]]
# (job_id, kind, from_state, to_state, sync_run_id), in id order
Transition = tuple[str, str, str | None, str | None, int]


# -- the model: what a complete pass must write -------------------------------------------------


@dataclass
class Model:
    """The last committed observations, and how many complete snapshots missed each job."""

    jobs: Jobs = field(default_factory=dict)
    missed: dict[str, int] = field(default_factory=dict)


def expected_pass(
    model: Model, listed: dict[str, str]
) -> tuple[Model, Counter[tuple[str, str, str | None, str | None]]]:
    """The model after one *complete* pass that listed ``listed`` (job_id -> raw state), and
    the transitions (job_id, kind, from, to) that pass must write (see jobsync/domain/history.py)."""
    jobs: Jobs = dict(model.jobs)
    missed = dict(model.missed)
    expected: Counter[tuple[str, str, str | None, str | None]] = Counter()
    for job_id, raw in listed.items():
        state = canonical_state(raw)
        old = jobs.get(job_id)
        if old is None:
            expected[(job_id, "first_seen", None, state)] += 1
        elif old[2]:
            expected[(job_id, "reappeared", old[0], state)] += 1
        elif old[0] != state:
            expected[(job_id, "change", old[0], state)] += 1
        jobs[job_id] = (state, raw, False)
        missed[job_id] = 0
    for job_id, (state, raw, vanished) in model.jobs.items():
        if job_id in listed or vanished:
            continue
        missed[job_id] += 1
        if missed[job_id] >= 2:
            jobs[job_id] = (state, raw, True)
            expected[(job_id, "vanished", state, None)] += 1
    return Model(jobs, missed), expected


# -- reading the database -----------------------------------------------------------------------


@dataclass(frozen=True)
class DbState:
    jobs: Jobs
    transitions: list[Transition]
    runs: dict[int, str]
    history_of_unsucceeded_runs: int

    @property
    def last_run(self) -> int:
        return max(self.runs, default=0)


def read_db(engine: Engine) -> DbState:
    if "sync_runs" not in inspect(engine).get_table_names():
        return DbState({}, [], {}, 0)  # killed before the schema was committed
    with engine.connect() as conn:
        jobs = {
            r[0]: (r[1], r[2], bool(r[3]))
            for r in conn.execute(
                text(
                    "SELECT job_id, state, raw_state, vanished_at IS NOT NULL "
                    "FROM import_job_records"
                )
            )
        }
        transitions = [
            (r[0], r[1], r[2], r[3], int(r[4]))
            for r in conn.execute(
                text(
                    "SELECT job_id, kind, from_state, to_state, sync_run_id "
                    "FROM import_job_transitions ORDER BY id"
                )
            )
        ]
        runs = {int(r[0]): r[1] for r in conn.execute(text("SELECT id, status FROM sync_runs"))}
        orphans = conn.execute(
            text(
                "SELECT count(*) FROM import_job_transitions t "
                "LEFT JOIN sync_runs r ON r.id = t.sync_run_id "
                "WHERE r.status IS NULL OR r.status <> 'succeeded'"
            )
        ).scalar_one()
    return DbState(jobs, transitions, runs, int(orphans))


def _check_engine(db_url: str) -> Engine:
    """The test's own engine: no pool (nothing held open while a subprocess runs) and, on
    PostgreSQL, an application_name other than jobsync's, so its sessions are told apart."""
    url = normalise_url(db_url)
    if url.startswith("postgresql"):
        return create_engine(
            url, poolclass=NullPool, connect_args={"application_name": "jobsync-kill-test"}
        )
    return create_engine(url, poolclass=NullPool)


def _wait_for_dead_sessions(engine: Engine) -> None:
    """PostgreSQL ends a killed client's sessions asynchronously, and a COMMIT the client sent
    just before dying may still be applied. Wait until no jobsync session is left, so what is
    read next is final (and the next pass is not refused by the dead process's lock)."""
    if engine.dialect.name != "postgresql":
        return
    deadline = time.monotonic() + DEADLINE
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'jobsync'"
    )
    while True:
        with engine.connect() as conn:
            if conn.execute(query).scalar_one() == 0:
                return
        assert time.monotonic() < deadline, "the killed process's sessions never ended"
        time.sleep(0.005)  # a poll interval, not a wait for a guessed duration


def _assert_sqlite_intact(db_url: str) -> None:
    database = make_url(db_url).database
    assert database
    if not Path(database).exists():
        return  # killed before the file was created
    conn = sqlite3.connect(database)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()


# -- one killed (or completed) subprocess -------------------------------------------------------


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBSYNC_", "ZILLIZ_"))}
    env["JOBSYNC_API_KEY"] = API_KEY
    return env


@dataclass
class Outcome:
    phase: str
    killed: bool  # False: the process had already exited when the signal was due
    returncode: int
    stderr: str
    walk_done: bool = False  # the walk's last request had been made
    tail: float | None = None  # seconds from the last request to the exit of a completed pass


class Trigger:
    """Fires when the subprocess's walk reaches a chosen request (seen by the simulator)."""

    def __init__(self, sim: Simulator) -> None:
        self.event = threading.Event()
        self.fired_at: float | None = None
        self.at_request: int | None = None
        self.at_reread = False
        self._unregister = sim.on_request(self._seen)

    def _seen(self, number: int, path: str, body: dict[str, Any] | None) -> None:
        if path != LIST_PATH:
            return
        reread = number > 1 and (body or {}).get("currentPage") == 1
        if (self.at_request is not None and number >= self.at_request) or (
            # Page 1 asked for again: the walk is over and only the write is left.
            self.at_reread and reread
        ):
            if self.fired_at is None:
                self.fired_at = time.monotonic()
            self.event.set()

    def close(self) -> None:
        self._unregister()


def run_one(
    sim: Simulator,
    db_url: str,
    cwd: Path,
    phase: str,
    pages: int,
    rng: random.Random,
    tail: float,
) -> Outcome:
    """Run one ``jobsync sync`` and kill it in ``phase``; ``tail`` is the estimated time from
    the walk's last request to the end of the process (its parse, write, commit and exit)."""
    sim.reset_counters()  # request numbers (and Fault.on_requests) count from this pass
    sim.clear_faults()
    trigger = Trigger(sim)
    delay = 0.0
    if phase == "startup":
        delay = rng.uniform(0.0, 0.8)
    elif phase == "in-flight":
        trigger.at_request = rng.randint(1, pages)
        slow = rng.uniform(0.03, 0.25)
        sim.add_fault(Fault(status=200, delay=slow, on_requests=[trigger.at_request]))
        delay = rng.uniform(0.0, slow)
    elif phase == "between-pages":
        trigger.at_request = rng.randint(1, pages)
        delay = rng.uniform(0.0, GAP + LATENCY)
    elif phase == "write":
        trigger.at_reread = True
        # Most of the tail is the interpreter exiting after the commit: half of these kills
        # aim at its first quarter, where the write transaction is.
        delay = rng.uniform(0.0, (0.25 if rng.random() < 0.5 else 1.1) * tail)
    else:
        assert phase == "complete"
        trigger.at_reread = True  # only to measure the tail
    args = [sys.executable, "-m", "jobsync", "sync", "--db", db_url]
    # Details are a bounded tail of requests after the list; this test aims its kills at the
    # list walk and the write, so it leaves them out.
    args += ["--base-url", sim.url, "--cluster-id", CLUSTER, "--no-details"]
    proc = subprocess.Popen(
        args, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + DEADLINE
        if phase != "complete":
            if phase != "startup":
                # The subprocess's progress decides when the clock for the kill starts.
                while not trigger.event.wait(0.05) and proc.poll() is None:
                    assert time.monotonic() < deadline, f"{phase}: the pass never got there"
            time.sleep(delay)  # the random moment is the point of the test
            proc.send_signal(signal.SIGKILL)
        _out, err = proc.communicate(timeout=DEADLINE)
        ended = time.monotonic()
    finally:
        trigger.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    killed = proc.returncode == -signal.SIGKILL
    measured = None if killed or trigger.fired_at is None else ended - trigger.fired_at
    return Outcome(phase, killed, proc.returncode, err, trigger.fired_at is not None, measured)


def _mutate(sim: Simulator, rng: random.Random) -> None:
    """What the API's list does between passes: jobs progress, new ones come, old ones age out."""
    sim.advance(fraction=rng.uniform(0.05, 0.3))
    sim.add_jobs(rng.randint(20, 100), CLUSTER)
    if rng.random() < 0.6:  # about as many go as come, so that the slow variant stays fast
        listed = [j.job_id for j in sim.jobs(CLUSTER)]
        sim.remove_jobs(CLUSTER, rng.sample(listed, rng.randint(10, 100)))


def _recover(sim: Simulator, db_url: str) -> int:
    """A normal pass, as ``jobsync sync`` runs it (in this process); returns its run id."""
    engine = open_engine(db_url)
    try:
        ensure_schema(engine)
        settings = settings_for(sim, db_url)
        # Its rate limiter sleeps in real time; it guards the API, not the database.
        settings = replace(settings, http=replace(settings.http, requests_per_second=1e6))
        results = sync_all(engine, settings, sleep=lambda _s: None)
    finally:
        engine.dispose()
    assert len(results) == 1 and results[0].ok, results[0].error
    assert results[0].complete
    return results[0].run_id


def _assert_pass_committed(
    before: DbState, after: DbState, run_id: int, expected: Counter[Any], model: Model
) -> None:
    assert after.jobs == model.jobs
    assert [t for t in after.transitions if t[4] != run_id] == before.transitions
    written = Counter(t[:4] for t in after.transitions if t[4] == run_id)
    assert written == expected


def kill_loop(db_url: str, workdir: Path, iterations: int, seed: int) -> Counter[str]:
    rng = random.Random(seed)
    phases = [PHASES[i % len(PHASES)] for i in range(iterations)]
    rng.shuffle(phases)
    outcomes: Counter[str] = Counter()
    check = _check_engine(db_url)
    sim = Simulator(
        cluster_ids=(CLUSTER,), jobs=INITIAL_JOBS, api_key=API_KEY, seed=seed, latency=LATENCY
    )
    sim.start()
    model = Model()
    committed = read_db(check)  # the empty database: the first kill may even hit the migration
    stale: list[int] = []  # runs that killed processes left 'running'
    tails = [0.3]  # seconds from the last request to the exit, as measured on completed passes
    try:
        for i, phase in enumerate(phases):
            where = f"seed {seed}, iteration {i}, phase {phase}"
            if i:
                _mutate(sim, rng)
            listed = {j.job_id: j.state for j in sim.jobs(CLUSTER)}
            pages = len(listed) // PAGE_SIZE + 1

            outcome = run_one(sim, db_url, workdir, phase, pages, rng, max(tails[-3:]))
            if outcome.tail is not None:
                tails.append(outcome.tail)

            assert outcome.killed or outcome.returncode == 0, (where, outcome)
            _wait_for_dead_sessions(check)
            if check.dialect.name == "sqlite":
                _assert_sqlite_intact(db_url)
            now = read_db(check)
            assert now.history_of_unsucceeded_runs == 0, where
            new_runs = {k: v for k, v in now.runs.items() if k > committed.last_run}
            assert len(new_runs) <= 1, (where, new_runs)
            run_id, status = next(iter(new_runs.items()), (None, None))
            if status == "succeeded":
                assert run_id is not None
                # It committed (the status is written in the pass's own transaction), maybe
                # just before the signal: the database must hold that whole pass.
                model, expected = expected_pass(model, listed)
                _assert_pass_committed(committed, now, run_id, expected, model)
                outcomes["committed" if outcome.killed else "completed"] += 1
            else:
                assert outcome.killed, (where, outcome)
                assert status in (None, "running"), (where, status)
                assert now.jobs == committed.jobs, where
                assert now.transitions == committed.transitions, where
                if run_id is not None:
                    stale.append(run_id)
                late = outcome.phase == "write" and outcome.walk_done
                outcomes[
                    "killed after the walk, before commit" if late else "killed before commit"
                ] += 1
            committed = now

            if phase == "complete" or i == len(phases) - 1 or rng.random() < RECOVER_EVERY:
                run_id = _recover(sim, db_url)
                after = read_db(check)
                model, expected = expected_pass(model, listed)
                _assert_pass_committed(committed, after, run_id, expected, model)
                assert after.runs[run_id] == "succeeded", where
                assert [after.runs[r] for r in stale] == ["abandoned"] * len(stale), where
                assert "running" not in after.runs.values(), where
                assert after.history_of_unsucceeded_runs == 0, where
                stale.clear()
                committed = after
    finally:
        sim.stop()
        check.dispose()
    return outcomes


def _run(db_url: str, tmp_path: Path, iterations: int) -> None:
    started = time.monotonic()
    outcomes = kill_loop(db_url, tmp_path, iterations, SEED)
    print(f"{iterations} kills in {time.monotonic() - started:.1f}s: {dict(outcomes)}")
    # The in-flight kills always land while the process waits for a page, long before its
    # write: the test is not vacuous whatever the machine's speed.
    assert outcomes["killed before commit"] >= 1


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """Where the subprocess runs: no ./jobsync.toml to pick up."""
    path = tmp_path / "cwd"
    path.mkdir()
    return path


def test_kill_9_at_random_moments_leaves_the_last_committed_pass(db_url, workdir):
    _run(db_url, workdir, ITERATIONS)


@pytest.mark.slow
def test_kill_9_at_random_moments_many_times(db_url, workdir):
    _run(db_url, workdir, SLOW_ITERATIONS)
