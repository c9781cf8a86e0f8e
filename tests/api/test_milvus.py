"""Self-hosted Milvus sources: one unpaged answer, user:password tokens, 401s, progress and
reason kept, jobs vanishing hours after they finish. Both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from jobsync.config import Settings, Source
from jobsync.observability.redact import Secret
from jobsync.service.sync import sync_source
from jobsync.simulator import Simulator
from jobsync.storage.schema import import_job_transitions, import_jobs

TOKEN = "root:Milvus"


@pytest.fixture
def clock():
    now = [datetime(2026, 6, 1, tzinfo=UTC)]
    return now


@pytest.fixture
def milvus(clock):
    with Simulator(
        cluster_ids=("onprem",),
        jobs=60,
        api_key=TOKEN,
        seed=4,
        mode="milvus",
        clock=lambda: clock[0],
    ) as sim:
        yield sim


def _source(sim: Simulator, key: str = TOKEN) -> Source:
    return Source(name="onprem", kind="milvus", base_url=sim.url, api_key=Secret(key))


def _sync(engine, sim, key: str = TOKEN):
    source = _source(sim, key)
    return sync_source(
        engine, source, Settings(sources=(source,), details=False), sleep=lambda _s: None
    )


def test_a_milvus_server_is_read_in_one_request(engine, milvus):
    result = _sync(engine, milvus)

    assert result.ok and result.complete, result.error
    assert milvus.request_count == 1
    assert milvus.requests[0].body == {}
    with engine.connect() as conn:
        rows = conn.execute(select(import_jobs)).all()
    assert len(rows) == 60
    assert {r.cluster_id for r in rows} == {"onprem"}  # the source name stands in for a cluster
    importing = [r for r in rows if r.state == "Importing"]
    assert importing and all(r.progress is not None for r in importing)


def test_a_wrong_milvus_token_is_a_401_auth_error(engine, milvus):
    result = _sync(engine, milvus, key="root:wrong")
    assert not result.ok
    assert "API key was rejected (HTTP 401" in str(result.error)
    assert milvus.request_count == 1


def test_failure_reasons_are_kept(engine, milvus):
    job = milvus.jobs()[0].job_id
    _sync(engine, milvus)
    milvus.set_state("onprem", job, "Failed", reason="file not found: s3://bucket/x.parquet")

    _sync(engine, milvus)

    with engine.connect() as conn:
        row = conn.execute(select(import_jobs).where(import_jobs.c.job_id == job)).one()
        t = conn.execute(
            select(import_job_transitions).where(
                import_job_transitions.c.job_id == job, import_job_transitions.c.kind == "change"
            )
        ).one()
    assert row.state == "Failed" and row.reason == "file not found: s3://bucket/x.parquet"
    assert t.reason == row.reason


def test_jobs_vanish_hours_after_they_finish_and_keep_their_history(engine, milvus, clock):
    _sync(engine, milvus)
    finished = {j.job_id for j in milvus.jobs() if j.finished_at is not None}
    clock[0] += timedelta(hours=4)
    _sync(engine, milvus)
    result = _sync(engine, milvus)

    assert result.counts.vanished_jobs == len(finished) > 0
    with engine.connect() as conn:
        vanished = set(
            conn.execute(
                select(import_jobs.c.job_id).where(import_jobs.c.vanished_at.is_not(None))
            ).scalars()
        )
    assert vanished == finished
