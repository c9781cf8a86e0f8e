"""End-to-end passes against the simulator over real HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select

from jobsync.service.sync import sync_source
from jobsync.simulator import Fault, Simulator
from jobsync.storage.schema import (
    import_job_records,
    import_job_transitions,
    import_jobs,
    sync_runs,
)
from tests.conftest import API_KEY, CLUSTER, count_rows, settings_for

LIST = "/v2/vectordb/jobs/import/list"


def _sync(engine: Engine, sim: Simulator, **overrides: object):
    settings = settings_for(sim, str(engine.url.render_as_string(hide_password=False)), **overrides)
    return sync_source(engine, settings.sources[0], settings, sleep=lambda _s: None)


def _jobs(engine: Engine) -> dict[str, dict]:
    with engine.connect() as conn:
        return {r.job_id: dict(r._mapping) for r in conn.execute(select(import_jobs))}


def _transitions(engine: Engine) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(select(import_job_transitions).order_by(import_job_transitions.c.id))
        return [dict(r._mapping) for r in rows]


@pytest.fixture
def big_sim():
    with Simulator(cluster_ids=(CLUSTER,), jobs=2000, api_key=API_KEY, seed=3) as simulator:
        yield simulator


def test_first_sync_of_2000_jobs_stores_every_job_and_a_first_seen_each(engine, big_sim):
    result = _sync(engine, big_sim)

    assert result.ok, result.error
    assert result.complete
    assert 0 < result.fetch_seconds < result.seconds  # the list's share of the pass
    jobs = _jobs(engine)
    assert len(jobs) == 2000
    assert {j.job_id: j.state for j in big_sim.jobs(CLUSTER)} == {
        job_id: row["raw_state"] for job_id, row in jobs.items()
    }
    transitions = _transitions(engine)
    assert len(transitions) == 2000
    assert {t["kind"] for t in transitions} == {"first_seen"}
    assert all(t["window_start"] is None for t in transitions)  # first pass: start unknown
    assert all(t["observed_at"].tzinfo is not None for t in transitions)


def test_resync_records_one_change_per_changed_job_inside_its_window(engine, big_sim):
    _sync(engine, big_sim)
    before = datetime.now(UTC)
    changes = big_sim.advance(fraction=0.3)
    assert changes

    second = _sync(engine, big_sim)

    assert second.ok and second.counts.changed_jobs == len(changes)
    true_time = {c.job_id: c.at for c in changes}
    recorded = [t for t in _transitions(engine) if t["kind"] == "change"]
    assert sorted(t["job_id"] for t in recorded) == sorted(true_time)
    for t in recorded:
        assert t["window_start"] < true_time[t["job_id"]] <= t["observed_at"]
        assert t["window_start"] < before
    jobs = _jobs(engine)
    for change in changes:
        assert jobs[change.job_id]["raw_state"] == change.to_state

    rows_before = count_rows(engine, import_job_transitions)
    third = _sync(engine, big_sim)
    assert third.ok
    assert count_rows(engine, import_job_transitions) == rows_before
    assert (third.counts.new_jobs, third.counts.changed_jobs) == (0, 0)


def test_unchanged_resync_rewrites_no_job_rows_but_keeps_last_seen_exact(engine, sim):
    first = _sync(engine, sim)
    second = _sync(engine, sim)

    assert second.counts.rows_written == 2  # the run record and the source mark only
    with engine.connect() as conn:
        run = conn.execute(select(sync_runs).where(sync_runs.c.id == second.run_id)).one()
        seen = set(conn.execute(select(import_jobs.c.last_seen_at)).scalars())
    assert seen == {run.snapshot_finished_at}
    assert first.run_id < second.run_id


def test_a_503_on_page_three_is_retried_and_the_pass_succeeds(engine, big_sim):
    big_sim.add_fault(Fault(status=503, on_requests=[3], path=LIST))

    result = _sync(engine, big_sim)

    assert result.ok and result.retries == 1
    assert len(_jobs(engine)) == 2000


def test_503_forever_fails_the_pass_and_leaves_jobs_and_history_untouched(engine, sim):
    _sync(engine, sim)
    jobs_before, history_before = _jobs(engine), _transitions(engine)
    sim.advance(fraction=0.5)
    sim.add_fault(Fault(status=503))
    requests_before = sim.request_count

    result = _sync(engine, sim)

    assert not result.ok
    assert "503" in str(result.error)
    assert sim.request_count - requests_before == 4  # one try and max_retries=3 retries
    assert _jobs(engine) == jobs_before
    assert _transitions(engine) == history_before
    with engine.connect() as conn:
        run = conn.execute(select(sync_runs).where(sync_runs.c.id == result.run_id)).one()
    assert run.status == "failed"
    assert run.retries == 3
    assert "503" in run.error and API_KEY not in run.error


def test_a_rejected_key_fails_at_once_with_one_request(engine, sim):
    sim.add_fault(Fault(status=200, code=80001))

    result = _sync(engine, sim)

    assert not result.ok
    assert "API key was rejected" in str(result.error)
    assert sim.request_count == 1
    assert count_rows(engine, import_job_records) == 0


def test_states_are_mapped_to_canonical_names_and_raw_names_kept(engine, sim):
    job = sim.jobs(CLUSTER)[0].job_id
    other = sim.jobs(CLUSTER)[1].job_id
    sim.set_state(CLUSTER, job, "ImportRunning")
    sim.set_state(CLUSTER, other, "SomethingNew")

    _sync(engine, sim)

    jobs = _jobs(engine)
    assert (jobs[job]["state"], jobs[job]["raw_state"]) == ("Importing", "ImportRunning")
    assert (jobs[other]["state"], jobs[other]["raw_state"]) == ("Unknown", "SomethingNew")


def test_new_jobs_get_a_first_seen_window_from_the_previous_complete_pass(engine, sim):
    first = _sync(engine, sim)
    new = sim.add_jobs(3, cluster_id=CLUSTER)

    _sync(engine, sim)

    with engine.connect() as conn:
        started = conn.execute(
            select(sync_runs.c.snapshot_started_at).where(sync_runs.c.id == first.run_id)
        ).scalar_one()
    latest = {t["job_id"]: t for t in _transitions(engine) if t["kind"] == "first_seen"}
    for job in new:
        t = latest[job.job_id]
        assert t["window_start"] == started
        assert t["window_start"] < job.created_at <= t["observed_at"]


def test_a_job_absent_from_two_complete_snapshots_is_marked_vanished(engine, sim):
    _sync(engine, sim)
    gone = sim.jobs(CLUSTER)[-1]
    sim.remove_jobs(CLUSTER, [gone.job_id])

    _sync(engine, sim)
    assert _jobs(engine)[gone.job_id]["vanished_at"] is None  # once is not enough
    third = _sync(engine, sim)

    assert third.counts.vanished_jobs == 1
    row = _jobs(engine)[gone.job_id]
    assert row["vanished_at"] is not None
    kinds = [t["kind"] for t in _transitions(engine) if t["job_id"] == gone.job_id]
    assert kinds == ["first_seen", "vanished"]


def test_timestamps_come_back_timezone_aware_utc(engine, sim):
    _sync(engine, sim)
    row = next(iter(_jobs(engine).values()))
    for column in ("first_seen_at", "state_since", "last_seen_at"):
        assert row[column].utcoffset().total_seconds() == 0


def test_finished_jobs_ageing_out_end_vanished_with_their_history(engine):
    from datetime import timedelta

    now = [datetime(2026, 5, 1, tzinfo=UTC)]
    with Simulator(
        cluster_ids=(CLUSTER,),
        jobs=30,
        api_key=API_KEY,
        seed=9,
        clock=lambda: now[0],
        retention=timedelta(hours=3),
    ) as sim:
        assert _sync(engine, sim).ok
        finishing = sim.advance(fraction=1.0)
        assert _sync(engine, sim).ok
        finished = {j.job_id for j in sim.jobs(CLUSTER) if j.finished_at is not None}
        now[0] += timedelta(hours=4)
        listed = {j.job_id for j in sim.jobs(CLUSTER)}
        assert finished and not (finished & listed)  # they aged out of the list
        _sync(engine, sim)
        third = _sync(engine, sim)

    assert third.counts.vanished_jobs == len(finished)
    jobs = _jobs(engine)
    assert {j for j, row in jobs.items() if row["vanished_at"] is not None} == finished
    history = _transitions(engine)
    changed = {c.job_id for c in finishing}
    for job_id in finished:
        kinds = [t["kind"] for t in history if t["job_id"] == job_id]
        assert kinds[0] == "first_seen" and kinds[-1] == "vanished"
        assert ("change" in kinds) == (job_id in changed)
        assert jobs[job_id]["state"] in ("Completed", "Failed")


def test_jobs_skipped_by_a_shifting_list_are_never_taken_for_gone(engine, sim):
    assert _sync(engine, sim).ok

    def drop_newest(number: int, path: str, body: object) -> None:
        # Removing a job ahead of the reader shifts every later job one place towards the
        # front, so the next page skips one: the classic offset-paging hole.
        newest = sim.jobs(CLUSTER)[0].job_id
        sim.remove_jobs(CLUSTER, [newest])

    unregister = sim.on_request(drop_newest)
    results = [_sync(engine, sim, page_size=10) for _ in range(3)]
    unregister()

    assert all(r.ok and not r.complete for r in results)
    still_listed = {j.job_id for j in sim.jobs(CLUSTER)}
    jobs = _jobs(engine)
    assert all(jobs[j]["vanished_at"] is None for j in still_listed)
    assert not [t for t in _transitions(engine) if t["kind"] == "vanished"]
    with engine.connect() as conn:
        runs = conn.execute(
            select(
                sync_runs.c.duplicates, sync_runs.c.distinct_jobs, sync_runs.c.reported_count
            ).where(sync_runs.c.id.in_([r.run_id for r in results]))
        ).all()
    assert all(distinct != reported for _dup, distinct, reported in runs)


HOSTILE_STATES = [
    "rocket 🚀 汉字 ünïcødé",
    "line\u2028separator\u2029and\x1b[31m escape\ttab\nnewline",
    'json-like {"a": [1, null]} \\ back\\slash "quoted"',
    "123",
    "null",
    "nul\x00and lone \ud800 surrogate",
    "x" * 5000,
]


def test_hostile_text_round_trips_through_the_new_job_writer(engine, sim):
    """New jobs go through JSON (SQLite) or COPY (PostgreSQL): what is stored must be exactly
    what the text policy keeps, or the next pass would see every such job as changed."""
    jobs = sim.jobs(CLUSTER)
    for job, state in zip(jobs, HOSTILE_STATES, strict=False):
        sim.set_state(CLUSTER, job.job_id, state)
    first = _sync(engine, sim)
    assert first.ok, first.error

    stored = _jobs(engine)
    for job, state in zip(jobs, HOSTILE_STATES, strict=False):
        expected = state.replace("\x00", "\ufffd").replace("\ud800", "\ufffd")
        assert stored[job.job_id]["raw_state"] == expected
    raw_to = {t["job_id"]: t["raw_to_state"] for t in _transitions(engine)}
    assert raw_to[jobs[0].job_id] == HOSTILE_STATES[0]

    again = _sync(engine, sim)
    assert again.ok and again.counts is not None
    assert (again.counts.changed_jobs, again.counts.rows_written) == (0, 2)
