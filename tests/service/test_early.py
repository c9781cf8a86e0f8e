"""``jobsync sync`` starts its first list walks before SQLAlchemy loads (SQLite only): the walks
need nothing of it, the passes take them over (one walk per pass, progress details planned from
every page), and a database the engine would refuse gets no early walk."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy import select

from jobsync.api.client import ApiClient
from jobsync.api.listing import fetch_snapshot
from jobsync.cli import cli
from jobsync.domain.records import JobRecord
from jobsync.domain.states import TERMINAL_STATES
from jobsync.service.early import PageRelay, begin_walks
from jobsync.simulator import LIST_PATH, Simulator
from jobsync.storage.early import ready_database, sqlite_file
from jobsync.storage.locking import source_locks
from jobsync.storage.migrate import upgrade
from jobsync.storage.schema import import_job_progress, sync_runs
from jobsync.storage.store import open_engine
from tests.conftest import API_KEY, CLUSTER, count_rows, settings_for, sync_args


def _page(name: str) -> list[JobRecord]:
    return [JobRecord(name, None, "Pending", 0, None, None)]  # type: ignore[arg-type]


def test_the_relay_keeps_pages_until_its_listener_comes_then_passes_them_on_in_order():
    relay = PageRelay()
    heard: list[str] = []
    relay(_page("a"))
    relay(_page("b"))
    assert heard == []

    relay.attach(lambda records: heard.extend(r.job_id for r in records))
    relay(_page("c"))

    assert heard == ["a", "b", "c"]


def test_only_a_plain_sqlite_url_names_a_file_before_sqlalchemy_reads_it():
    assert sqlite_file("sqlite:////tmp/x.db") == "/tmp/x.db"
    assert sqlite_file("sqlite:///jobsync.db") == "jobsync.db"
    for url in (
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:///x.db?mode=ro",
        "sqlite:///a%20b.db",
        "sqlite+pysqlite:///x.db",
        "postgresql://postgres@127.0.0.1/test",
    ):
        assert sqlite_file(url) is None, url


def test_a_pass_starts_early_only_on_a_new_file_or_one_at_this_jobsyncs_schema(tmp_path):
    new = tmp_path / "new.db"
    assert ready_database(f"sqlite:///{new}")

    current = tmp_path / "current.db"
    engine = open_engine(f"sqlite:///{current}")
    upgrade(engine)
    engine.dispose()
    assert ready_database(f"sqlite:///{current}")

    behind = tmp_path / "behind.db"
    engine = open_engine(f"sqlite:///{behind}")
    upgrade(engine, "0001")
    engine.dispose()
    assert not ready_database(f"sqlite:///{behind}")

    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    assert not ready_database(f"sqlite:///{foreign}")

    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    assert not ready_database(f"sqlite:///{garbage}")
    assert not ready_database("postgresql://postgres@127.0.0.1/test")


_WALK_WITHOUT_SQLALCHEMY = """
import json, sys
from jobsync.config import Settings, Source
from jobsync.observability.redact import Secret
from jobsync.service.early import begin_walks

url, base_url, cluster, key = sys.argv[1:]
source = Source(name=cluster, cluster_id=cluster, base_url=base_url, api_key=Secret(key))
walks = begin_walks(Settings(database_url=url, sources=(source,), details=False))
walk = walks.take(source.key)
snapshot = walk.snapshot(None)
walk.release()
print(json.dumps({"jobs": len(snapshot.jobs), "complete": snapshot.complete,
                  "sqlalchemy": "sqlalchemy" in sys.modules}))
"""


def test_a_walk_begins_and_ends_without_sqlalchemy_so_its_import_hides_behind_the_list(
    sim, tmp_path
):
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _WALK_WITHOUT_SQLALCHEMY,
            f"sqlite:///{tmp_path / 'jobsync.db'}",
            sim.url,
            CLUSTER,
            API_KEY,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    outcome = json.loads(done.stdout)
    assert outcome == {"jobs": 50, "complete": True, "sqlalchemy": False}


def test_a_sync_takes_over_its_early_walk_instead_of_walking_again(sim, tmp_path):
    db_url = f"sqlite:///{tmp_path / 'jobsync.db'}"
    settings = settings_for(sim, db_url)
    (source,) = settings.sources
    with ApiClient(source.base_url, source.api_key, settings.http) as client:
        fetch_snapshot(client, source, 20)
    one_walk = sim.request_count
    sim.reset_counters()
    env = {"JOBSYNC_API_KEY": API_KEY, "JOBSYNC_CONFIG": None}

    result = CliRunner().invoke(
        cli, [*sync_args(sim, db_url), "--no-details", "--page-size", "20"], env=env
    )

    assert result.exit_code == 0, result.output
    assert sim.request_count == one_walk > 1
    engine = open_engine(db_url)
    with engine.connect() as conn:
        run = conn.execute(select(sync_runs)).one()
    engine.dispose()
    assert run.status == "succeeded" and run.distinct_jobs == 50
    # The pass began when its walk did.
    assert run.started_at <= run.snapshot_started_at


def test_details_are_planned_from_every_page_an_early_walk_read(db_url):
    # SQLite walks early, PostgreSQL does not: the same first sync asks the same questions,
    # about every open job it lists for the first time, on both.
    with Simulator(cluster_ids=(CLUSTER,), jobs=40, api_key=API_KEY, seed=3) as sim:
        env = {"JOBSYNC_API_KEY": API_KEY, "JOBSYNC_CONFIG": None}
        result = CliRunner().invoke(cli, sync_args(sim, db_url, "--page-size", "10"), env=env)
        assert result.exit_code == 0, result.output
        asked = {r.body["jobId"] for r in sim.requests if r.path != LIST_PATH}
        open_jobs = {j.job_id for j in sim.jobs(CLUSTER) if j.state not in TERMINAL_STATES}
    engine = open_engine(db_url)
    with engine.connect() as conn:
        run = conn.execute(select(sync_runs)).one()
    assert run.details_requested == len(asked) > 0
    assert asked == open_jobs
    assert count_rows(engine, import_job_progress) == len(asked)
    engine.dispose()


def test_walks_no_pass_takes_are_stopped_and_their_locks_let_go(sim, tmp_path):
    db_url = f"sqlite:///{tmp_path / 'jobsync.db'}"
    walks = begin_walks(settings_for(sim, db_url))
    assert len(walks) == 1
    engine = open_engine(db_url)
    upgrade(engine)
    with source_locks(engine, [CLUSTER]) as held:
        assert CLUSTER not in held.held  # the early walk holds it

    walks.close()

    with source_locks(engine, [CLUSTER]) as held:
        assert CLUSTER in held.held
    engine.dispose()
    assert Path(tmp_path / "jobsync.db").exists()
