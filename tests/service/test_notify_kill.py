"""``kill -9`` and notifications: a killed ``jobsync sync`` or ``jobsync daemon`` never loses an
event, and sends one twice only when it dies with that message in flight.

Real subprocesses against the simulator and a receiver on loopback (``json://``), on both
databases. Where the kill lands is steered by what the test can see: the receiver holding a
delivery unanswered, the database showing one source's pass committed while another source's
list request is held by the simulator, the receiver's record of what was delivered.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from jobsync.simulator import LIST_PATH, Fault, Simulator
from jobsync.storage.schema import notifications, sync_runs
from tests.conftest import API_KEY, CLUSTER
from tests.storage.test_kill import _assert_sqlite_intact, _check_engine, _wait_for_dead_sessions

DEADLINE = 60.0
OTHER = "in01-fedcba9876543210"


@pytest.fixture
def check(db_url: str) -> Iterator[Engine]:
    engine = _check_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "cwd"
    path.mkdir()
    return path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBSYNC_", "ZILLIZ_"))}
    return {**env, "JOBSYNC_API_KEY": API_KEY, **extra}


def spawn(workdir: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "jobsync", *args],
        cwd=workdir,
        env=_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def completed(workdir: Path, *args: str, **env: str) -> None:
    proc = spawn(workdir, *args, **env)
    out, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0, (out, err)


def kill(proc: subprocess.Popen[str], check: Engine, db_url: str) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=DEADLINE)
    assert proc.returncode == -signal.SIGKILL
    _wait_for_dead_sessions(check)
    if check.dialect.name == "sqlite":
        _assert_sqlite_intact(db_url)


def scalar(engine: Engine, query) -> int:
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def keys_in_db(engine: Engine) -> dict[str, bool]:
    """event_key -> sent"""
    with engine.connect() as conn:
        return {
            key: sent is not None
            for key, sent in conn.execute(
                select(notifications.c.event_key, notifications.c.sent_at)
            )
        }


def fail_open_jobs(sim: Simulator, cluster: str, n: int) -> list[str]:
    jobs = [j.job_id for j in sim.jobs(cluster) if j.state in ("Pending", "Importing")][:n]
    for job in jobs:
        sim.set_state(cluster, job, "Failed", reason=f"{job} could not be read")
    return jobs


def test_killed_while_a_message_is_in_flight_it_is_sent_again_once_and_nothing_else_twice(
    db_url, workdir, receiver, check
):
    with Simulator(cluster_ids=(CLUSTER,), jobs=40, api_key=API_KEY, seed=3) as sim:
        args = ["sync", "--db", db_url, "--base-url", sim.url, "--cluster-id", CLUSTER]
        args += ["--no-details", "--notify", receiver.url()]
        completed(workdir, *args)
        failed = fail_open_jobs(sim, CLUSTER, 3)

        receiver.hold()
        proc = spawn(workdir, *args)
        receiver.wait_for(receiver.holding.is_set, "a delivery to be in flight")
        kill(proc, check, db_url)
        receiver.release()

        in_db = keys_in_db(check)
        assert len(in_db) == 3 and not any(in_db.values())  # due, none marked sent
        [in_flight] = [a for a in receiver.arrivals if a.held]
        assert receiver.accepted() == []

        completed(workdir, *args)
        completed(workdir, *args)

    assert keys_in_db(check) == dict.fromkeys(in_db, True)
    assert receiver.keys() == dict.fromkeys(in_db, 1)
    assert in_flight.keys[0] in in_db  # the one message that arrived twice: at-least-once
    for job in failed:
        assert sum(f"Job {job} " in a.message for a in receiver.accepted()) == 1


def test_killed_after_one_source_committed_its_events_are_delivered_by_the_next_run_once(
    db_url, workdir, receiver, check
):
    with (
        Simulator(cluster_ids=(CLUSTER,), jobs=30, api_key=API_KEY, seed=4) as quick,
        Simulator(cluster_ids=(OTHER,), jobs=30, api_key=API_KEY, seed=5) as slow,
    ):
        config = workdir / "jobsync.toml"
        config.write_text(
            f'database_url = "{db_url}"\ndetails = false\n\n'
            f'[[sources]]\ncluster_id = "{CLUSTER}"\nbase_url = "{quick.url}"\n\n'
            f'[[sources]]\ncluster_id = "{OTHER}"\nbase_url = "{slow.url}"\n\n'
            '[notify]\nurls_env = ["NOTIFY_HOOK"]\n'
        )
        hook = {"NOTIFY_HOOK": receiver.url()}
        completed(workdir, "sync", **hook)
        fail_open_jobs(quick, CLUSTER, 1)
        fail_open_jobs(slow, OTHER, 1)
        # The other source's list request is answered only after the kill.
        held = slow.add_fault(Fault(status=200, delay=DEADLINE / 3, path=LIST_PATH))

        proc = spawn(workdir, "sync", **hook)
        committed = notifications.c.cluster_id == CLUSTER
        running = sync_runs.c.status == "running"
        other_running = select(func.count()).where(running, sync_runs.c.cluster_id == OTHER)
        # The list request may come before the run row (on SQLite a pass begins its walk
        # before the database is open): wait for both.
        receiver.wait_for(
            lambda: (
                (
                    held.fired
                    and scalar(check, select(func.count()).where(committed)) == 1
                    and scalar(check, other_running) == 1
                )
                or proc.poll() is not None
            ),
            "the first source's pass to commit its event, the other's to wait for its list",
        )
        assert proc.poll() is None
        kill(proc, check, db_url)

        # Committed with the first source's pass, not delivered; the other decided nothing.
        assert receiver.arrivals == []
        assert list(keys_in_db(check).values()) == [False]
        assert scalar(check, other_running) == 1

        slow.clear_faults()
        completed(workdir, "sync", **hook)
        completed(workdir, "sync", **hook)

    assert len(keys_in_db(check)) == 2 and all(keys_in_db(check).values())
    assert receiver.keys() == dict.fromkeys(keys_in_db(check), 1)
    assert {a.title for a in receiver.accepted()} == {
        f"Import job failed in {CLUSTER}",
        f"Import job failed in {OTHER}",
    }


def test_a_daemon_killed_and_restarted_announces_every_failure_once(
    db_url, workdir, receiver, check
):
    with Simulator(cluster_ids=(CLUSTER,), jobs=40, api_key=API_KEY, seed=6) as sim:
        args = ["daemon", "--every", "0.2s", "--db", db_url, "--base-url", sim.url]
        args += ["--cluster-id", CLUSTER, "--no-details"]
        hook = {"JOBSYNC_NOTIFY_URL": receiver.url()}

        def passes() -> int:
            return scalar(check, select(func.count()).where(sync_runs.c.status == "succeeded"))

        completed(workdir, "db", "upgrade", "--db", db_url)  # so that the test can poll it
        daemon = spawn(workdir, *args, **hook)
        try:
            receiver.wait_for(lambda: passes() >= 1, "the daemon's first pass")
            fail_open_jobs(sim, CLUSTER, 1)
            # Killed once the message is marked sent: killed between sending and marking, it
            # would be sent again (the first test's case).
            receiver.wait_for(
                lambda: list(keys_in_db(check).values()) == [True], "the first failure, sent"
            )
            kill(daemon, check, db_url)

            fail_open_jobs(sim, CLUSTER, 2)
            daemon = spawn(workdir, *args, **hook)
            receiver.wait_for(lambda: len(receiver.keys()) == 3, "the next failures' messages")
            seen = passes()
            receiver.wait_for(lambda: passes() >= seen + 3, "three more passes")
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=DEADLINE) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()

    assert sorted(receiver.keys().values()) == [1, 1, 1]
    assert set(receiver.keys()) == set(keys_in_db(check))
    assert all(keys_in_db(check).values())
