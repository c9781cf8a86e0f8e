"""Updates of stored jobs leave out the indexed columns they do not change
(``jobsync.storage.updates.INDEXED_UPDATES``), and write exactly what setting every column would."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select, text

from jobsync.storage import bulk
from jobsync.storage.schema import import_job_records, import_job_transitions
from jobsync.storage.store import apply_pass, start_run
from jobsync.storage.updates import INDEXED_UPDATES, UPDATED_COLUMNS, update_sql
from tests.conftest import snapshot_of

T0 = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)
JOBS = [f"job-{n:02d}" for n in range(12)]
# What each pass lists: jobs start, move, finish, fail, drop out of the list long enough to
# vanish, and come back.
PASSES: list[dict[str, str]] = [
    dict.fromkeys(JOBS, "Pending"),
    {**dict.fromkeys(JOBS[:4], "Importing"), **dict.fromkeys(JOBS[4:8], "Pending")},
    {JOBS[0]: "Completed", JOBS[1]: "Failed", JOBS[2]: "Importing", JOBS[4]: "Importing"},
    {JOBS[0]: "Completed", JOBS[1]: "Failed", JOBS[2]: "Completed", JOBS[5]: "Pending"},
    {JOBS[0]: "Completed", JOBS[2]: "Completed", JOBS[5]: "Importing"},
    {JOBS[0]: "Completed", JOBS[5]: "Completed", JOBS[9]: "Importing", JOBS[10]: "Pending"},
    {**dict.fromkeys(JOBS, "Completed"), JOBS[11]: "Failed"},
]


def _history(engine: Engine, cluster_id: str) -> None:
    for n, states in enumerate(PASSES):
        when = T0 + timedelta(hours=n)
        snapshot = snapshot_of(when, states)
        snapshot.source_key = cluster_id
        run_id = start_run(engine, cluster_id, when)
        apply_pass(engine, cluster_id, run_id, snapshot, finished_at=when + timedelta(seconds=1))


def _rows(engine: Engine, cluster_id: str) -> list[tuple[object, ...]]:
    columns = [c for c in import_job_records.columns if c.name != "cluster_id"]
    with engine.connect() as conn:
        query = select(*columns).where(import_job_records.c.cluster_id == cluster_id)
        return [tuple(row) for row in conn.execute(query.order_by(import_job_records.c.job_id))]


def test_updates_without_unchanged_indexed_columns_write_what_full_updates_write(
    engine, monkeypatch
):
    _history(engine, "narrow")
    monkeypatch.setattr(bulk, "unchanged_indexed", lambda _row, _stored: frozenset())
    _history(engine, "full")
    assert _rows(engine, "narrow") == _rows(engine, "full")
    with engine.connect() as conn:
        kinds = dict(
            conn.execute(
                select(import_job_transitions.c.kind, func.count())
                .where(import_job_transitions.c.cluster_id == "narrow")
                .group_by(import_job_transitions.c.kind)
            ).all()
        )
    # The history took every kind of update: changes, vanishings, and jobs listed again.
    assert kinds.get("change", 0) > 0 and kinds.get("vanished", 0) > 0
    assert kinds.get("reappeared", 0) > 0


def _index_definitions(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            query = (
                "SELECT sql FROM sqlite_master WHERE type = 'index' "
                "AND tbl_name = 'import_job_records' AND sql IS NOT NULL"
            )
        else:
            query = "SELECT indexdef FROM pg_indexes WHERE tablename = 'import_job_records'"
        return list(conn.execute(text(query)).scalars())


def test_the_indexed_updated_columns_are_those_the_indexes_read(engine):
    definitions = _index_definitions(engine)
    assert definitions
    read = {
        name
        for name in UPDATED_COLUMNS
        if any(re.search(rf"\b{name}\b", definition) for definition in definitions)
    }
    assert read == set(INDEXED_UPDATES)


@pytest.mark.parametrize(
    "unchanged", [frozenset(), frozenset({"state"}), frozenset(INDEXED_UPDATES)]
)
def test_an_update_sets_every_updated_column_but_the_unchanged_indexed_ones(unchanged):
    sql = update_sql(unchanged)
    for name in UPDATED_COLUMNS:
        assert bool(re.search(rf"(SET|,) {name} = ", sql)) == (name not in unchanged), name
