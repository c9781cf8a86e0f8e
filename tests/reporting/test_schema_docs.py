"""One data dictionary, and everything generated from it agrees with it and with the database.

docs/schema.md is what jobsync.reporting.schema_doc generates; every table, view and column a
migrated database has is described (found by reflection, on both backends); PostgreSQL carries
the descriptions as comments; the Datasette metadata names only what exists; and the example
queries run on the backend they are written for, against a synced database.
"""

from __future__ import annotations

import asyncio
import html
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, inspect, make_url, text

from jobsync.cli import cli
from jobsync.domain.clock import SteppingClock
from jobsync.errors import ConfigError
from jobsync.reporting.datasette import datasette_database_name, datasette_metadata
from jobsync.reporting.schema_doc import EXAMPLES_BLOCK, block_names, regenerate
from jobsync.service.sync import sync_source
from jobsync.simulator import Simulator
from jobsync.storage.backends import backend_for
from jobsync.storage.dictionary import (
    RELATIONS,
    UNITS,
    Comments,
    comments,
    plain,
    sqlalchemy_tables,
)
from jobsync.storage.examples import EXAMPLE_MOMENT, EXAMPLES
from jobsync.storage.migrate import head_revision, upgrade
from jobsync.storage.store import open_engine
from tests.conftest import API_KEY, CLUSTER, settings_for, sync_backlog_then_new_jobs

PAGE = Path(__file__).resolve().parents[2] / "docs" / "schema.md"
DOC = PAGE.read_text(encoding="utf-8")
VIEWS = [
    "job_state_intervals",
    "job_durations",
    "daily_job_stats",
    "transition_counts",
    "active_jobs",
]


def live_schema(engine: Engine) -> dict[str, tuple[str, list[str]]]:
    """Every table and view of the database, by reflection: its kind and its columns."""
    insp = inspect(engine)
    return {
        name: (kind, [c["name"] for c in insp.get_columns(name)])
        for kind, names in (("table", insp.get_table_names()), ("view", insp.get_view_names()))
        for name in names
    }


def undescribed(live: dict[str, tuple[str, list[str]]]) -> list[str]:
    return [
        f"{name}.{column}"
        for name, (_kind, columns) in live.items()
        for column in columns
        if name not in RELATIONS or column not in RELATIONS[name].columns
    ]


# -- the dictionary and the database -----------------------------------------------------------


def test_every_table_view_and_column_after_upgrade_is_described(engine):
    live = live_schema(engine)
    assert set(VIEWS) | {"import_jobs", "sync_runs", "import_job_progress"} <= set(live)
    missing = undescribed(live)
    assert not missing, f"not described in jobsync/storage/descriptions.py: {', '.join(missing)}"
    gone = [
        f"{name}.{column}"
        for name, relation in RELATIONS.items()
        for column in relation.columns
        if column not in live.get(name, ("", []))[1]
    ]
    assert not gone, f"described but not in the database: {', '.join(gone)}"
    assert {name: kind for name, (kind, _columns) in live.items()} == {
        name: relation.kind for name, relation in RELATIONS.items()
    }


def test_a_column_without_a_description_is_named_in_the_failure():
    live = {"sync_runs": ("table", [*RELATIONS["sync_runs"].columns, "new_figure"])}
    live["daily_rollup"] = ("table", ["day"])
    assert undescribed(live) == ["sync_runs.new_figure", "daily_rollup.day"]


def test_the_dictionary_describes_exactly_the_columns_sqlalchemy_declares():
    tables = sqlalchemy_tables()
    assert set(tables) == set(RELATIONS)
    for name, relation in RELATIONS.items():
        assert set(tables[name].c.keys()) == set(relation.columns), name


def test_facets_units_and_sort_name_columns_of_their_own_relation():
    for name, relation in RELATIONS.items():
        assert relation.kind in ("table", "view"), name
        assert relation.description.endswith("."), name
        assert set(relation.facets) <= set(relation.columns), name
        assert relation.sort_desc is None or relation.sort_desc in relation.columns, name
        for column, field in relation.columns.items():
            assert field.description, (name, column)
            assert field.unit is None or field.unit in UNITS, (name, column)
    # Every duration says it is in seconds: what Datasette and the comments show.
    seconds = [
        (name, column)
        for name, relation in RELATIONS.items()
        for column, field in relation.columns.items()
        if "seconds" in column and field.unit != "seconds"
    ]
    assert not seconds


# -- docs/schema.md ----------------------------------------------------------------------------


def test_the_page_is_what_the_dictionary_generates():
    assert regenerate(DOC) == DOC, "docs/schema.md is out of date: run python scripts/schema_doc.py"


def test_the_page_has_one_generated_block_per_table_and_view_and_one_for_the_examples():
    names = block_names(DOC)
    assert sorted(names) == sorted([*RELATIONS, EXAMPLES_BLOCK])
    for name in RELATIONS:
        # Each block sits under its own heading, so the page's links (#sync_runs) keep working.
        assert f"### `{name}`\n\n<!-- generated: {name} -->" in DOC, name


def test_the_page_keeps_what_is_written_around_the_generated_blocks():
    stale = DOC.replace("| `id` | integer | the run's number, increasing |", "| `id` | ? | old |")
    assert stale != DOC
    assert regenerate(stale) == DOC
    assert "## Windows and the guarantee" in DOC
    assert "Re-syncing an unchanged list adds no rows." in regenerate(stale)


def test_a_block_for_something_the_dictionary_does_not_describe_is_refused():
    with pytest.raises(ValueError, match="daily_rollup"):
        regenerate("<!-- generated: daily_rollup -->\n<!-- end generated -->\n")


def test_the_page_shows_every_description_unit_and_example():
    for relation in RELATIONS.values():
        assert relation.description in DOC
        for field in relation.columns.values():
            assert field.description in DOC
    assert "| `estimated_seconds` | number, seconds |" in DOC
    for example in EXAMPLES:
        assert f"### {example.title}\n\n{example.description}\n" in DOC
        assert example.sqlite in DOC
        assert example.postgresql is None or example.postgresql in DOC


# -- PostgreSQL's COMMENT ON -------------------------------------------------------------------


@pytest.mark.postgres
def test_comments_landed_on_every_table_view_and_column(postgres_url):
    engine = open_engine(postgres_url)
    try:
        upgrade(engine)
        insp = inspect(engine)
        wanted = comments()
        found = {}
        for name, (_kind, columns) in live_schema(engine).items():
            found[name] = insp.get_table_comment(name)["text"]
            for column in insp.get_columns(name):
                found[f"{name}.{column['name']}"] = column["comment"]
        assert {key: value for key, value in found.items() if not value} == {}
        assert found == {
            **{name: c.comment for name, c in wanted.items()},
            **{
                f"{name}.{col}": text
                for name, c in wanted.items()
                for col, text in c.columns.items()
            },
        }
        assert found["job_durations.estimated_seconds"].endswith("(unit: seconds)")
        assert "`" not in json.dumps(found)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_comments_are_written_only_where_they_differ_and_upgrade_restores_them(postgres_url):
    engine = open_engine(postgres_url)
    try:
        upgrade(engine)
        with engine.begin() as conn:
            assert backend_for(conn).describe(conn, comments()) == 0
            conn.exec_driver_sql("COMMENT ON VIEW active_jobs IS 'stale'")
            conn.exec_driver_sql("COMMENT ON COLUMN sync_runs.pages IS NULL")
        upgrade(engine)  # at the head already: only the comments are brought back in step
        insp = inspect(engine)
        assert insp.get_table_comment("active_jobs")["text"] == comments()["active_jobs"].comment
        pages = next(c for c in insp.get_columns("sync_runs") if c["name"] == "pages")
        assert pages["comment"] == "list pages read"
        with engine.begin() as conn:
            assert backend_for(conn).describe(conn, comments()) == 0
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_comments_keep_quotes_percent_signs_and_backslashes(postgres_url):
    engine = open_engine(postgres_url)
    odd = "it's 100% 'quoted' \\ :name %s"
    try:
        upgrade(engine)
        with engine.begin() as conn:
            written = backend_for(conn).describe(
                conn, {"sync_runs": Comments("table", odd, {"id": odd, "no_such_column": odd})}
            )
        assert written == 2
        insp = inspect(engine)
        assert insp.get_table_comment("sync_runs")["text"] == odd
        assert next(c for c in insp.get_columns("sync_runs") if c["name"] == "id")["comment"] == odd
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_an_older_revision_gets_the_comments_of_what_it_has(postgres_url):
    engine = open_engine(postgres_url)
    try:
        upgrade(engine, "0004")  # no notifications table, no fencing columns yet
        insp = inspect(engine)
        assert "notifications" not in insp.get_table_names()
        assert insp.get_table_comment("daily_job_stats")["text"] == plain(
            RELATIONS["daily_job_stats"].description
        )
    finally:
        engine.dispose()


def test_sqlite_keeps_no_comments_and_upgrade_still_works(tmp_path):
    engine = open_engine(f"sqlite:///{tmp_path / 'jobsync.db'}")
    try:
        upgrade(engine)
        with engine.begin() as conn:
            assert backend_for(conn).describe(conn, comments()) == 0
    finally:
        engine.dispose()


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
    with engine.connect() as conn:
        for example in EXAMPLES:
            sql = example.sqlite if backend == "sqlite" else example.postgresql or example.sqlite
            assert ";" not in sql.rstrip().rstrip(";"), example.name  # one statement each
            rows = conn.execute(text(sql.replace(EXAMPLE_MOMENT, moment))).all()
            assert rows, f"{example.title} ({backend}) found nothing"
            assert all(value is not None for value in rows[0][:2]), example.name


def test_the_examples_have_distinct_names_fit_for_a_url():
    names = [example.name for example in EXAMPLES]
    assert len(set(names)) == len(names) == 5
    assert all(name.isidentifier() and name.islower() for name in names)


# -- Datasette -------------------------------------------------------------------------------


def test_datasette_metadata_says_what_the_dictionary_says():
    document = datasette_metadata("jobsync")
    database = document["databases"]["jobsync"]
    tables = database["tables"]
    assert document["title"] and document["description"]
    assert list(tables) == list(RELATIONS)
    for name, relation in RELATIONS.items():
        assert tables[name]["description"] == plain(relation.description)
        assert tables[name]["columns"] == {
            column: plain(field.description) for column, field in relation.columns.items()
        }
        assert tables[name].get("facets", []) == list(relation.facets)
        assert tables[name].get("sort_desc") == relation.sort_desc
    assert tables["job_durations"]["units"] == {
        "min_seconds": "s",
        "max_seconds": "s",
        "estimated_seconds": "s",
    }
    assert tables["import_jobs"]["units"] == {"progress": "percent", "file_size": "B"}
    assert "units" not in tables["sync_runs"]
    assert database["queries"] == {
        example.name: {
            "title": example.title,
            "description": plain(example.description),
            "sql": example.sqlite.strip(),
        }
        for example in EXAMPLES
    }
    assert "`" not in json.dumps(document)


def test_datasette_metadata_names_only_tables_and_columns_that_exist(tmp_path):
    engine = open_engine(f"sqlite:///{tmp_path / 'jobsync.db'}")
    try:
        upgrade(engine)
        live = {name: set(columns) for name, (_kind, columns) in live_schema(engine).items()}
    finally:
        engine.dispose()
    tables = datasette_metadata("jobsync")["databases"]["jobsync"]["tables"]
    assert set(tables) == set(live)
    for name, table in tables.items():
        named = {*table["columns"], *table.get("units", {}), *table.get("facets", [])}
        named |= {table["sort_desc"]} if "sort_desc" in table else set()
        assert named <= live[name], (name, named - live[name])


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


def test_datasette_serves_the_views_with_descriptions_units_facets_and_saved_queries(tmp_path, sim):
    """Datasette itself reads the metadata: what it shows, and every saved query runs."""
    datasette_app = pytest.importorskip("datasette.app")
    path = tmp_path / "jobsync.db"
    engine = open_engine(f"sqlite:///{path}")
    settings = settings_for(sim, f"sqlite:///{path}")
    upgrade(engine)
    sync_backlog_then_new_jobs(engine, settings, sim)
    engine.dispose()
    ds = datasette_app.Datasette([str(path)], metadata=datasette_metadata("jobsync"))

    async def fetch(url: str):
        return await ds.client.get(url)

    page = asyncio.run(fetch("/jobsync/job_durations"))
    assert page.status_code == 200
    shown = html.unescape(page.text)
    assert plain(RELATIONS["job_durations"].description) in shown
    assert "&nbsp;s<" in page.text or "\xa0s<" in shown  # a duration, with its unit
    facets = asyncio.run(fetch("/jobsync/job_durations.json?_shape=objects")).json()
    assert set(RELATIONS["job_durations"].facets) <= set(facets["facet_results"])
    for name, relation in RELATIONS.items():
        # Every table and view, with its facets, sort and units, as Datasette serves it.
        answer = asyncio.run(fetch(f"/jobsync/{name}.json?_shape=objects"))
        assert answer.status_code == 200, (name, answer.text)
        assert set(relation.facets) <= set(answer.json()["facet_results"]), name
    rows = asyncio.run(fetch("/jobsync/active_jobs.json?_shape=array")).json()
    assert rows and set(rows[0]) == set(RELATIONS["active_jobs"].columns)
    for example in EXAMPLES:
        answer = asyncio.run(fetch(f"/jobsync/{example.name}.json?_shape=objects"))
        assert answer.status_code == 200, (example.name, answer.text)
        assert answer.json()["ok"], example.name
    failure_rate = asyncio.run(fetch("/jobsync/failure_rate_per_day.json?_shape=array")).json()
    assert failure_rate and set(failure_rate[0]) == {"day", "finished", "failed", "failure_rate"}


@pytest.mark.postgres
def test_a_role_that_owns_nothing_upgrades_without_touching_the_comments(postgres_url):
    """Only an owner may comment: another role's upgrade with nothing to do must not fail."""
    engine = open_engine(postgres_url)
    role = f"jobsync_guest_{uuid.uuid4().hex[:8]}"
    try:
        upgrade(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("COMMENT ON TABLE sync_runs IS 'as the owner left it'")
            conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
            conn.exec_driver_sql(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
        guest = open_engine(make_url(postgres_url).set(username=role).render_as_string(False))
        try:
            assert upgrade(guest) == (head_revision(), head_revision())
        finally:
            guest.dispose()
        assert inspect(engine).get_table_comment("sync_runs")["text"] == "as the owner left it"
    finally:
        with engine.begin() as conn:
            if conn.exec_driver_sql(f"SELECT 1 FROM pg_roles WHERE rolname = '{role}'").first():
                conn.exec_driver_sql(f"DROP OWNED BY {role}")
                conn.exec_driver_sql(f"DROP ROLE {role}")
        engine.dispose()


def test_the_documented_datasette_command_line_serves_the_saved_queries(tmp_path, sim):
    """`jobsync db datasette-metadata -o metadata.json && datasette jobsync.db -m metadata.json`,
    as the docs give it, with Datasette's own command line."""
    pytest.importorskip("datasette")
    path = tmp_path / "jobsync.db"
    engine = open_engine(f"sqlite:///{path}")
    settings = settings_for(sim, f"sqlite:///{path}")
    upgrade(engine)
    sync_backlog_then_new_jobs(engine, settings, sim)
    engine.dispose()
    out = tmp_path / "metadata.json"
    result = CliRunner().invoke(
        cli, ["db", "datasette-metadata", "--db", f"sqlite:///{path}", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    served = subprocess.run(
        [
            sys.executable,
            "-m",
            "datasette",
            str(path),
            "-m",
            str(out),
            "--get",
            "/jobsync/failure_rate_per_day.json?_shape=objects",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert served.returncode == 0, served.stderr
    answer = json.loads(served.stdout)
    assert answer["ok"]
    assert answer["rows"] and set(answer["rows"][0]) == {
        "day",
        "finished",
        "failed",
        "failure_rate",
    }
