"""docs/schema.md is true: it names every column the database has, says what jobsync.reporting.datasette
says, and its example queries run on the backend they are written for, against a synced database.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, inspect, text

from jobsync.cli import cli
from jobsync.domain.clock import SteppingClock
from jobsync.errors import ConfigError
from jobsync.reporting.datasette import SCHEMA, datasette_database_name, datasette_metadata
from jobsync.service.sync import sync_source
from jobsync.simulator import Simulator
from jobsync.storage.migrate import upgrade
from jobsync.storage.store import open_engine
from tests.conftest import API_KEY, CLUSTER, settings_for

DOC = (Path(__file__).resolve().parents[2] / "docs" / "schema.md").read_text(encoding="utf-8")
VIEWS = [
    "job_state_intervals",
    "job_durations",
    "daily_job_stats",
    "transition_counts",
    "active_jobs",
]
# The moment the point-in-time examples name; the tests put one inside their history instead.
EXAMPLE_MOMENT = "2024-05-01 12:00:00"


def documented() -> dict[str, tuple[str, dict[str, str]]]:
    """Each ``### `name` `` section of the doc: its first paragraph and its column table."""
    found = {}
    for match in re.finditer(r"^### `(\w+)`\n\n(.+?)\n\n((?:\|[^\n]*\n)+)", DOC, re.M | re.S):
        name, description, table = match.groups()
        columns = {}
        for line in table.splitlines()[2:]:
            cell = re.fullmatch(r"\| `(\w+)` \| (.*) \|", line)
            assert cell, f"{name}: cannot read the row {line!r}"
            columns[cell[1]] = cell[2]
        found[name] = (description.replace("\n", " "), columns)
    return found


def queries(backend: str) -> list[tuple[str, str]]:
    """The example queries for one backend: (section title, SQL)."""
    found = []
    for section in re.split(r"^### ", DOC.split("## Example queries", 1)[1], flags=re.M)[1:]:
        title = section.splitlines()[0]
        for tag, sql in re.findall(r"```sql( \w+)?\n(.*?)```", section, re.S):
            if tag.strip() in ("", backend):
                found.append((title, sql))
    return found


def test_the_doc_says_what_jobsync_datasette_says():
    assert {name: (d.description, d.columns) for name, d in SCHEMA.items()} == documented()


def test_every_column_of_every_table_and_view_is_documented(engine):
    insp = inspect(engine)
    live = {
        name: [c["name"] for c in insp.get_columns(name)]
        for name in insp.get_table_names() + insp.get_view_names()
    }
    assert set(VIEWS) | {"import_jobs", "sync_runs", "import_job_progress"} <= set(live)
    assert {name: sorted(columns) for name, columns in live.items()} == {
        name: sorted(d.columns) for name, d in SCHEMA.items()
    }
    assert {name for name, d in SCHEMA.items() if d.kind == "view"} == set(insp.get_view_names())
    for name, columns in live.items():
        for column in columns:
            assert f"| `{column}` |" in DOC.split(f"### `{name}`", 1)[1], (name, column)


def test_each_backend_has_its_four_example_queries():
    titles = {
        "Median duration per collection, last week",
        "Failure rate per day",
        "Stuck jobs",
        "State of every job at a point in time",
    }
    for backend in ("sqlite", "postgresql"):
        assert {title for title, _sql in queries(backend)} == titles
        assert len(queries(backend)) == len(titles)


@pytest.fixture
def synced(engine: Engine) -> tuple[Engine, str]:
    """A database after ten passes four hours apart, up to about ten hours ago, and a moment
    inside its history."""
    # From 50 hours ago: each reading 0.7 s after the previous one, four hours between passes.
    clock = SteppingClock(datetime.now(UTC) - timedelta(hours=50), step=timedelta(seconds=0.7))
    moment = None
    with Simulator(cluster_ids=(CLUSTER,), jobs=30, api_key=API_KEY, seed=11) as sim:
        settings = settings_for(sim, "unused")
        for step in range(10):
            assert sync_source(engine, settings.sources[0], settings, clock=clock).ok
            if step == 4:
                moment = clock.now.strftime("%Y-%m-%d %H:%M:%S")
            clock.skip(timedelta(hours=4))
            sim.advance(fraction=0.4)
            sim.add_jobs(3, cluster_id=CLUSTER)
    assert moment is not None
    return engine, moment


def test_the_example_queries_run_and_answer(synced):
    engine, moment = synced
    backend = engine.dialect.name
    examples = queries(backend)
    assert examples
    with engine.connect() as conn:
        for title, sql in examples:
            assert ";" not in sql.rstrip().rstrip(";"), title  # one statement each
            result = conn.execute(text(sql.replace(EXAMPLE_MOMENT, moment)))
            rows = result.all()
            assert rows, f"{title} ({backend}) found nothing"
            assert all(value is not None for value in rows[0][:2]), title


# -- Datasette -------------------------------------------------------------------------------


def test_datasette_metadata_describes_every_table_view_and_column():
    document = datasette_metadata("jobsync")
    tables = document["databases"]["jobsync"]["tables"]
    assert document["title"] and document["description"]
    assert set(VIEWS) | {"import_jobs", "import_job_transitions"} <= set(tables)
    for name, described in SCHEMA.items():
        assert tables[name]["description"] == described.description.replace("`", "")
        assert list(tables[name]["columns"]) == list(described.columns)
        assert all(tables[name]["columns"].values())
    assert "`" not in json.dumps(document)


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("sqlite:///jobsync.db", "jobsync"),
        ("sqlite:////var/lib/jobsync/jobsync-demo.db", "jobsync-demo"),
        ("sqlite:///my.jobs.sqlite", "my.jobs"),
    ],
)
def test_the_database_name_is_the_sqlite_file_name_without_its_suffix(url, name):
    assert datasette_database_name(url) == name


@pytest.mark.parametrize("url", ["postgresql://jobsync@db/jobsync", "sqlite://", "not a url"])
def test_datasette_needs_a_sqlite_file(url):
    with pytest.raises(ConfigError):
        datasette_database_name(url)


def test_db_datasette_metadata_prints_valid_json_to_stdout():
    result = CliRunner().invoke(
        cli, ["db", "datasette-metadata"], env={"JOBSYNC_DATABASE_URL": "sqlite:///x/reports.db"}
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert set(VIEWS) <= set(document["databases"]["reports"]["tables"])


def test_db_datasette_metadata_writes_the_output_file(tmp_path):
    out = tmp_path / "metadata.json"
    result = CliRunner().invoke(
        cli, ["db", "datasette-metadata", "--db", "sqlite:///jobsync.db", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert result.output == ""
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document == datasette_metadata("jobsync")


def test_db_datasette_metadata_refuses_postgresql_with_exit_status_2():
    result = CliRunner().invoke(
        cli, ["db", "datasette-metadata", "--db", "postgresql://jobsync@db/jobsync"]
    )
    assert result.exit_code == 2
    assert "Error: Datasette serves SQLite files" in result.output


def test_datasette_serves_the_views_with_the_descriptions(tmp_path, sim):
    """Only where Datasette is installed (it is not a dependency of jobsync)."""
    datasette_app = pytest.importorskip("datasette.app")
    path = tmp_path / "jobsync.db"
    engine = open_engine(f"sqlite:///{path}")
    settings = settings_for(sim, f"sqlite:///{path}")
    upgrade(engine)
    assert sync_source(engine, settings.sources[0], settings).ok
    engine.dispose()
    ds = datasette_app.Datasette([str(path)], metadata=datasette_metadata("jobsync"))

    async def fetch(url: str):
        return await ds.client.get(url)

    page = asyncio.run(fetch("/jobsync/job_durations"))
    assert page.status_code == 200
    assert SCHEMA["job_durations"].description.replace("`", "") in html.unescape(page.text)
    rows = asyncio.run(fetch("/jobsync/active_jobs.json?_shape=array")).json()
    assert rows and set(rows[0]) == set(SCHEMA["active_jobs"].columns)
