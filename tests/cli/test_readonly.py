"""Reading commands open SQLite read-only, and work in a directory the reader may not write.

The tests run as root, which ignores file permissions, so each reading command runs in a
subprocess as the unprivileged user 65534 against a database in a directory of mode 0555.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.exc import OperationalError

from jobsync.storage.migrate import HEAD_REVISION
from jobsync.storage.schema import sync_runs
from jobsync.storage.store import open_engine
from tests.conftest import API_KEY, CLUSTER

JOBSYNC = str(Path(sys.executable).with_name("jobsync"))
NOBODY = 65534


def _env(home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def as_nobody(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed ``jobsync`` as user 65534, without root's rights."""
    # setpriv keeps root's capabilities until it executes the command, so the interpreter is
    # found even where the venv links it from a directory only root may enter (pyenv under
    # /root); the command then runs without them. subprocess's user= switches before that
    # lookup, and there the exec fails.
    setpriv = shutil.which("setpriv")
    argv = [JOBSYNC, *args]
    extra: dict[str, Any] = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
    if setpriv:
        argv = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]
        extra = {}
    return subprocess.run(
        argv, cwd=cwd, env=_env(cwd), capture_output=True, text=True, timeout=60, **extra
    )


def as_root(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A command in a process of its own, so that its connections are closed when it ends."""
    env = {**_env(cwd), "JOBSYNC_API_KEY": API_KEY}
    return subprocess.run(
        [JOBSYNC, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory user 65534 can reach (pytest's tmp_path is under a root-only directory)."""
    if os.geteuid() != 0:
        pytest.skip("running a command as another user needs root (these tests run as root in CI)")
    base = Path(tempfile.mkdtemp(prefix="jobsync-readonly-"))
    try:
        base.chmod(0o755)
        check = as_nobody("--version", cwd=base)
        if check.returncode != 0:
            pytest.fail(f"user {NOBODY} cannot run {JOBSYNC}: {check.stderr.strip()}")
        yield base
    finally:
        for path in (base, *base.rglob("*")):
            if path.is_dir():
                path.chmod(0o755)
        shutil.rmtree(base)


@pytest.fixture
def synced(shared_dir: Path, sim) -> Path:
    """A database one pass wrote, in a directory made read-only afterwards."""
    directory = shared_dir / "data"
    directory.mkdir()
    db = directory / "jobsync.db"
    url = f"sqlite:///{db}"
    result = as_root(
        "sync", "--db", url, "--base-url", sim.url, "--cluster-id", CLUSTER, cwd=shared_dir
    )
    assert result.returncode == 0, result.stderr
    return db


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_reading_commands_work_in_a_directory_the_reader_cannot_write(synced, sim, shared_dir):
    directory = synced.parent
    url = f"sqlite:///{synced}"
    directory.chmod(0o555)
    before = _files(directory)
    assert f"{synced.name}-wal" not in before  # the writer closed: every commit is in the file

    jobs = as_nobody("jobs", "--db", url, "--format", "json", cwd=shared_dir)
    assert jobs.returncode == 0, jobs.stderr
    listed = json.loads(jobs.stdout)
    assert sorted(row["job_id"] for row in listed) == sorted(j.job_id for j in sim.jobs())

    job_id = listed[0]["job_id"]
    history = as_nobody("history", job_id, "--db", url, "--format", "json", cwd=shared_dir)
    assert history.returncode == 0, history.stderr
    assert [row["kind"] for row in json.loads(history.stdout)] == ["first_seen"]

    status = as_nobody("status", "--db", url, "--format", "json", cwd=shared_dir)
    assert status.returncode == 0, status.stderr
    assert [row["source"] for row in json.loads(status.stdout)] == [CLUSTER]

    summary = as_nobody("report", "summary", "--db", url, "--format", "json", cwd=shared_dir)
    assert summary.returncode == 0, summary.stderr
    assert sum(row["jobs"] for row in json.loads(summary.stdout)) == len(listed)

    current = as_nobody("db", "current", "--db", url, cwd=shared_dir)
    assert current.returncode == 0 and current.stdout.strip() == f"{HEAD_REVISION} (head)"
    assert _files(directory) == before


def test_a_reader_in_a_read_only_directory_sees_commits_still_in_the_wal(synced, sim, shared_dir):
    """While a reader held a snapshot during the pass, the pass could not checkpoint: its commit
    is in the -wal, not yet in the main file, and the reader must see it (immutable=1 would
    not)."""
    url = f"sqlite:///{synced}"
    job_id = sim.jobs()[0].job_id
    holder = sqlite3.connect(synced, isolation_level=None)
    try:
        holder.execute("BEGIN")
        holder.execute("SELECT 1 FROM sync_runs").fetchall()  # a snapshot older than the pass
        sim.set_state(CLUSTER, job_id, "Failed", reason="disk full")
        result = as_root(
            "sync", "--db", url, "--base-url", sim.url, "--cluster-id", CLUSTER,
            cwd=shared_dir,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        holder.execute("COMMIT")  # keeps the connection (and so the -wal) open, but no lock
        assert (synced.parent / f"{synced.name}-wal").stat().st_size > 0
        synced.parent.chmod(0o555)

        shown = as_nobody("history", job_id, "--db", url, "--format", "json", cwd=shared_dir)
    finally:
        holder.close()
    assert shown.returncode == 0, shown.stderr
    assert [row["to_state"] for row in json.loads(shown.stdout)][-1] == "Failed"


def test_a_reading_engine_cannot_write(synced):
    engine = open_engine(f"sqlite:///{synced}", readonly=True)
    try:
        with pytest.raises(OperationalError, match="readonly"), engine.begin() as conn:
            conn.execute(
                insert(sync_runs).values(
                    cluster_id="x", status="running", started_at=datetime.now(UTC)
                )
            )
    finally:
        engine.dispose()
