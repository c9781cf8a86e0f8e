"""deploy/grafana/jobsync.json: every SQL panel runs on a PostgreSQL database that passes over
the simulator filled, and every Prometheus panel reads metrics the daemon exports."""

from __future__ import annotations

import json
import re
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from jobsync.config import Source
from jobsync.observability.redact import Secret
from jobsync.service.sync import sync_source
from jobsync.simulator import Simulator
from jobsync.storage.migrate import upgrade
from jobsync.storage.store import open_engine
from tests.conftest import CLUSTER, settings_for
from tests.deploy.conftest import DEPLOY
from tests.deploy.promql import metric_names

DASHBOARD = json.loads((DEPLOY / "grafana" / "jobsync.json").read_text(encoding="utf-8"))
POSTGRES = "${DS_POSTGRES}"
PROMETHEUS = "${DS_PROMETHEUS}"
# Grafana's SQL macro pattern: the arguments end at the first ")", so they cannot nest.
MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for panel in panels:
        found.append(panel)
        found += _panels(panel.get("panels", []))
    return found


PANELS = [p for p in _panels(DASHBOARD["panels"]) if p["type"] != "row"]
TARGETS = [(p["title"], t) for p in PANELS for t in p["targets"]]
SQL_TARGETS = [(title, t) for title, t in TARGETS if t["datasource"]["uid"] == POSTGRES]
PROM_TARGETS = [(title, t) for title, t in TARGETS if t["datasource"]["uid"] == PROMETHEUS]
VARIABLES = {v["name"]: v for v in DASHBOARD["templating"]["list"]}


def _expand(sql: str, sources: list[str]) -> str:
    """The SQL as Grafana would send it, with the time range fixed at the last 30 days."""

    def macro(match: re.Match[str]) -> str:
        name, args = match[1], [a.strip() for a in match[2].split(",")]
        if name == "__timeFilter":
            return f"{args[0]} > now() - interval '30 days'"
        if name == "__timeFrom":
            return "(now() - interval '30 days')"
        if name == "__timeTo":
            return "now()"
        raise AssertionError(f"a macro this test does not expand: ${name}")

    sql = MACRO.sub(macro, sql)
    sql = sql.replace("$source", ", ".join("'" + s.replace("'", "''") + "'" for s in sources))
    assert "$" not in sql, f"unexpanded variable in {sql}"
    return sql


def test_the_dashboard_has_its_data_sources_as_variables_and_unique_panel_ids():
    assert VARIABLES["DS_POSTGRES"]["type"] == "datasource"
    assert VARIABLES["DS_POSTGRES"]["query"] == "grafana-postgresql-datasource"
    assert VARIABLES["DS_PROMETHEUS"]["type"] == "datasource"
    assert VARIABLES["DS_PROMETHEUS"]["query"] == "prometheus"
    ids = [p["id"] for p in _panels(DASHBOARD["panels"])]
    assert len(ids) == len(set(ids))
    assert SQL_TARGETS and PROM_TARGETS
    for panel in PANELS:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
            key = "rawSql" if target["datasource"]["uid"] == POSTGRES else "expr"
            assert target[key].strip(), panel["title"]


@pytest.mark.parametrize(
    ("title", "target"), PROM_TARGETS, ids=[f"{t}/{x['refId']}" for t, x in PROM_TARGETS]
)
def test_every_prometheus_panel_reads_metrics_the_daemon_exports(title, target, exported_metrics):
    names = metric_names(target["expr"])
    assert names, title
    assert names <= exported_metrics, f"{title}: not exported: {sorted(names - exported_metrics)}"


def _populate(engine: Any, url: str, sim: Simulator) -> None:
    """Passes over a simulator whose jobs move on between them: jobs first listed on the first
    pass, jobs created and finished later (with duration estimates), jobs still open, and one
    pass that fails (a wrong key)."""
    settings = settings_for(sim, url)
    source = settings.sources[0]

    def sync() -> None:
        result = sync_source(engine, source, settings, sleep=lambda _s: None)
        assert result.ok, result.error

    sync()
    sim.add_jobs(10)
    sync()
    for _ in range(3):
        sim.advance(fraction=1.0)
        sync()
    sim.add_jobs(5)
    sync()
    wrong = Source(
        name=CLUSTER, cluster_id=CLUSTER, base_url=sim.url, api_key=Secret("wrong-key-0")
    )
    bad = sync_source(engine, wrong, settings, sleep=lambda _s: None)
    assert not bad.ok


@pytest.mark.postgres
def test_every_sql_panel_runs_on_a_populated_postgresql(postgres_url, sim):
    engine = open_engine(postgres_url)
    try:
        upgrade(engine)
        _populate(engine, postgres_url, sim)
        with engine.connect() as conn:
            sources = list(conn.execute(text(VARIABLES["source"]["query"])).scalars())
            assert sources == [CLUSTER]
            for title, target in SQL_TARGETS:
                result = conn.execute(text(_expand(target["rawSql"], sources)))
                rows = result.all()
                assert rows, f"{title}: no rows"
                if target["format"] == "time_series":
                    # Grafana needs a time column named "time"; the rest are values (and
                    # an optional text "metric" naming the series).
                    columns = list(result.keys())
                    assert columns[0] == "time", title
                    assert all(isinstance(row[0], datetime) for row in rows), title
                    for name in columns[1:]:
                        kinds = {type(row._mapping[name]) for row in rows} - {type(None)}
                        expected = {str} if name == "metric" else {int, float, Decimal}
                        assert kinds <= expected, (title, name, kinds)
    finally:
        engine.dispose()
