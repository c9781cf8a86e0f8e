"""Progress details: chosen jobs, fetched over real HTTP from the simulator, stored on both
databases; the parser's edge cases without HTTP."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, event, func, select, update

from jobsync.api.progress import PROGRESS_PATHS
from jobsync.cli import cli
from jobsync.config import CliValues, Settings, Source, resolve_settings
from jobsync.domain.known import LeastRecentlyAsked, OpenJobs
from jobsync.domain.records import (
    JobRecord,
    Snapshot,
    parse_complete_time,
    parse_count,
    parse_progress_data,
)
from jobsync.errors import ConfigError, ProtocolError, SupersededError
from jobsync.observability.redact import Secret
from jobsync.service.details import DetailsPlan, due
from jobsync.service.sync import sync_all, sync_source
from jobsync.simulator import LIST_PATH, Fault, Simulator
from jobsync.storage.samples import KnownJob, KnownJobs, load_known_jobs, stored_among
from jobsync.storage.schema import (
    import_job_progress,
    import_job_records,
    import_job_transitions,
    import_jobs,
    sync_runs,
)
from jobsync.storage.store import apply_pass, start_run
from tests.conftest import API_KEY, CLUSTER, settings_for

DESCRIBE, GET_PROGRESS, GET_PROGRESS_SNAKE = PROGRESS_PATHS
T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
OPEN_AND_DONE = {"Pending": 1, "Importing": 2, "Completed": 2, "Failed": 1}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def zsim(clock):
    with Simulator(
        cluster_ids=(CLUSTER,),
        jobs=12,
        api_key=API_KEY,
        seed=8,
        clock=clock,
        initial_states=OPEN_AND_DONE,
    ) as simulator:
        yield simulator


@pytest.fixture
def msim(clock):
    with Simulator(
        cluster_ids=("onprem",),
        jobs=12,
        api_key=API_KEY,
        seed=8,
        clock=clock,
        mode="milvus",
        initial_states=OPEN_AND_DONE,
    ) as simulator:
        yield simulator


def _settings(engine: Engine, sim: Simulator, **overrides: object) -> Settings:
    url = engine.url.render_as_string(hide_password=False)
    values: dict[str, object] = {"details": True, **overrides}
    if sim.mode == "milvus":
        source = Source(name="onprem", kind="milvus", base_url=sim.url, api_key=Secret(API_KEY))
        values.setdefault("sources", (source,))
    return settings_for(sim, url, **values)


def _sync(engine: Engine, sim: Simulator, **overrides: object):
    settings = _settings(engine, sim, **overrides)
    clock = sim._clock  # the pass sees the simulator's time
    result = sync_source(engine, settings.sources[0], settings, sleep=lambda _s: None, clock=clock)
    assert result.ok, result.error
    return result


def _progress_requests(sim: Simulator) -> list:
    return [r for r in sim.requests if r.path in PROGRESS_PATHS]


def _open_ids(sim: Simulator) -> set[str]:
    return {j.job_id for j in sim.jobs() if j.state not in ("Completed", "Failed")}


def _samples(engine: Engine) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(select(import_job_progress).order_by(import_job_progress.c.id))
        return [dict(r._mapping) for r in rows]


def _change(engine: Engine, job_id: str):
    """The one ``change`` transition of a job."""
    t = import_job_transitions
    with engine.connect() as conn:
        return conn.execute(select(t).where(t.c.job_id == job_id, t.c.kind == "change")).one()


def _job(engine: Engine, job_id: str) -> dict:
    with engine.connect() as conn:
        return dict(
            conn.execute(select(import_jobs).where(import_jobs.c.job_id == job_id)).one()._mapping
        )


def _run(engine: Engine, run_id: int) -> dict:
    with engine.connect() as conn:
        return dict(conn.execute(select(sync_runs).where(sync_runs.c.id == run_id)).one()._mapping)


def _set_progress(sim: Simulator, job_id: str, progress: int) -> None:
    # The simulator moves progress only with the state; a test nudges it directly.
    with sim._lock:
        sim._world.clusters[sim.cluster_ids[0]].find(job_id).progress = progress


# -- which jobs, and samples only on change -------------------------------------------------------


def test_open_jobs_get_samples_and_an_unchanged_resync_writes_none(engine, zsim):
    open_ids = _open_ids(zsim)

    first = _sync(engine, zsim)

    assert {r.body["jobId"] for r in _progress_requests(zsim)} == open_ids
    assert (first.details_requested, first.details_failed) == (len(open_ids), 0)
    samples = _samples(engine)
    assert {s["job_id"] for s in samples} == open_ids
    sim_jobs = {j.job_id: j for j in zsim.jobs()}
    for sample in samples:
        job = sim_jobs[sample["job_id"]]
        assert (sample["progress"], sample["total_rows"], sample["file_size"]) == (
            job.progress,
            job.total_rows,
            job.file_size,
        )
        assert sample["sync_run_id"] == first.run_id and sample["complete_time"] is None
        stored = _job(engine, sample["job_id"])
        assert (stored["progress"], stored["imported_rows"]) == (job.progress, job.imported_rows)
        assert stored["details_at"] == T0

    zsim.reset_counters()
    second = _sync(engine, zsim)

    # Nothing changed, and the interval has not passed: nothing asked, nothing written.
    assert _progress_requests(zsim) == []
    assert second.counts.rows_written == 2  # the run record and the source mark only

    zsim._clock.now += timedelta(minutes=5)
    third = _sync(engine, zsim)
    assert len(_progress_requests(zsim)) == len(open_ids)  # asked again: they are open
    assert len(_samples(engine)) == len(samples)  # but nothing moved
    assert _run(engine, third.run_id)["details_requested"] == len(open_ids)

    importing = next(j.job_id for j in zsim.jobs() if j.state == "Importing")
    _set_progress(zsim, importing, 95)
    zsim._clock.now += timedelta(minutes=5)
    _sync(engine, zsim)

    new = _samples(engine)[len(samples) :]
    assert [(s["job_id"], s["progress"]) for s in new] == [(importing, 95)]
    assert _job(engine, importing)["progress"] == 95


def test_a_first_sync_of_finished_jobs_makes_no_progress_requests(engine, clock):
    with Simulator(
        cluster_ids=(CLUSTER,),
        jobs=40,
        api_key=API_KEY,
        clock=clock,
        initial_states={"Completed": 1},
    ) as sim:
        first = _sync(engine, sim)
        assert first.jobs == 40 and first.details_requested == 0
        assert _progress_requests(sim) == []

        # Started and finished between two passes: asked about once it is first listed.
        (added,) = sim.add_jobs(1)
        clock.now += timedelta(minutes=1)
        sim.set_state(CLUSTER, added.job_id, "Completed")
        finished = clock.now
        clock.now += timedelta(minutes=1)
        sim.reset_counters()
        second = _sync(engine, sim)

        assert [r.body["jobId"] for r in _progress_requests(sim)] == [added.job_id]
        assert second.details_requested == 1
        assert _job(engine, added.job_id)["complete_time"] == finished

        sim.reset_counters()
        _sync(engine, sim)
        assert _progress_requests(sim) == []  # finished and known: never asked again


def test_the_cap_takes_news_and_the_least_recently_asked_and_spares_the_unchanged(engine, clock):
    with Simulator(
        cluster_ids=(CLUSTER,), jobs=10, api_key=API_KEY, clock=clock, initial_states={"Pending": 1}
    ) as sim:
        all_ids = {j.job_id for j in sim.jobs()}

        def asked(minutes: int = 1) -> list[str]:
            sim.reset_counters()
            clock.now += timedelta(minutes=minutes)
            _sync(engine, sim, details_max_per_pass=4, details_concurrency=1)
            return [r.body["jobId"] for r in _progress_requests(sim)]

        first = asked()
        second = asked()
        assert len(first) == len(second) == 4 and not set(first) & set(second)

        finishing = first[-1]
        sim.set_state(CLUSTER, finishing, "Completed")
        third = asked()
        never = all_ids - set(first) - set(second)
        # The finishing job and the two never asked about; those asked within the interval
        # whose figures did not move wait.
        assert len(third) == 3 and set(third) == {finishing, *never}

        fourth = asked(minutes=5)
        # All are due now: the least recently asked first, the finished one never again.
        assert set(fourth[:3]) == set(first) - {finishing}
        assert fourth[3] in set(second)


def test_a_run_of_many_sources_shares_one_budget_of_progress_requests(engine, clock):
    clusters = tuple(f"in01-{i:016x}" for i in range(6))
    with Simulator(
        cluster_ids=clusters, jobs=5, api_key=API_KEY, clock=clock, initial_states={"Pending": 1}
    ) as sim:
        url = engine.url.render_as_string(hide_password=False)
        settings = settings_for(sim, url, details=True, details_max_per_run=13)
        assert settings.details_cap() == 2  # 13 // 6 sources, within the per-pass 200

        results = sync_all(engine, settings, sleep=lambda _s: None, clock=sim._clock)

        assert all(r.ok for r in results)
        assert [r.details_requested for r in results] == [2] * 6
        assert len(_progress_requests(sim)) == 12
        # More sources than the budget: still one job each, so none is starved.
        assert replace(settings, details_max_per_run=3).details_cap() == 1


# -- completeTime and reason ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["zilliz", "milvus"])
def test_the_finishing_pass_stores_complete_time_as_the_same_utc_instant(
    mode, engine, zsim, msim, clock
):
    sim = zsim if mode == "zilliz" else msim
    _sync(engine, sim)
    job_id = next(j.job_id for j in sim.jobs() if j.state == "Importing")
    finished_at = T0 + timedelta(minutes=3)
    clock.now = finished_at
    sim.set_state(sim.cluster_ids[0], job_id, "Completed")
    clock.now += timedelta(minutes=2)
    sim.reset_counters()

    result = _sync(engine, sim)

    (answer,) = [r for r in _progress_requests(sim) if r.body["jobId"] == job_id]
    assert answer.status == 200
    job = _job(engine, job_id)
    assert job["complete_time"] == finished_at  # 12:03Z, whether sent as Z or as 20:03+08:00
    assert job["imported_rows"] == job["total_rows"] > 0
    sample = next(
        s for s in _samples(engine) if s["job_id"] == job_id and s["state"] == "Completed"
    )
    assert sample["complete_time"] == finished_at and sample["sync_run_id"] == result.run_id
    change = _change(engine, job_id)
    # The observed window is kept as it was; complete_time lies inside it.
    assert change.window_start < finished_at <= change.observed_at


@pytest.mark.parametrize("mode", ["zilliz", "milvus"])
def test_the_reason_lands_on_the_job_and_on_its_failure_transition(mode, engine, zsim, msim, clock):
    sim = zsim if mode == "zilliz" else msim
    _sync(engine, sim)
    job_id = next(j.job_id for j in sim.jobs() if j.state == "Importing")
    sim.set_state(sim.cluster_ids[0], job_id, "Failed", reason="bad parquet: row 17")
    clock.now += timedelta(minutes=1)

    _sync(engine, sim)

    job = _job(engine, job_id)
    assert (job["state"], job["reason"]) == ("Failed", "bad parquet: row 17")
    change = _change(engine, job_id)
    assert (change.to_state, change.reason) == ("Failed", "bad parquet: row 17")
    if mode == "milvus":
        assert job["complete_time"] is None  # Milvus sends "" for failed jobs
    else:
        assert job["complete_time"] == clock.now - timedelta(minutes=1)

    # The list shows no reason (Zilliz) and the job is no longer asked about: kept all the same.
    again = _sync(engine, sim)
    assert _job(engine, job_id)["reason"] == "bad parquet: row 17"
    assert again.counts.changed_jobs == 0


# -- the endpoint's names, failures, and switching it off -----------------------------------------


def test_a_missing_describe_falls_back_and_the_path_is_remembered(engine, zsim):
    zsim.add_fault(Fault(status=404, path=DESCRIBE))
    open_ids = _open_ids(zsim)

    first = _sync(engine, zsim)

    paths = [r.path for r in _progress_requests(zsim)]
    assert paths == [DESCRIBE] + [GET_PROGRESS] * len(open_ids)
    assert first.details_failed == 0 and len(_samples(engine)) == len(open_ids)

    zsim.reset_counters()
    zsim._clock.now += timedelta(minutes=5)  # the open jobs are due again
    _sync(engine, zsim)
    assert {r.path for r in _progress_requests(zsim)} == {GET_PROGRESS}


def test_an_old_milvus_without_describe_is_read_at_get_progress(engine, msim):
    # gin's plain-text 404, as a Milvus without /describe answers.
    msim.add_fault(
        Fault(status=404, body=b"404 page not found", content_type="text/plain", path=DESCRIBE)
    )

    result = _sync(engine, msim)

    paths = [r.path for r in _progress_requests(msim)]
    assert paths[:2] == [DESCRIBE, GET_PROGRESS_SNAKE]  # Milvus never had getProgress
    assert set(paths[2:]) == {GET_PROGRESS_SNAKE}
    assert result.details_failed == 0 and result.details_requested == len(_open_ids(msim))


def test_a_progress_endpoint_failing_forever_never_fails_the_pass(engine, zsim):
    for path in PROGRESS_PATHS:
        zsim.add_fault(Fault(status=500, path=path))

    result = _sync(engine, zsim)

    assert result.ok and result.complete
    run = _run(engine, result.run_id)
    assert run["status"] == "succeeded" and run["details_failed"] > 0
    assert run["details_failed"] == run["details_requested"]
    # Three failures in a row stop the asking (the first request alone, then four at once).
    assert run["details_failed"] <= 3 + 3
    assert len(_progress_requests(zsim)) <= (3 + 3) * 3  # each tried with 2 retries
    with engine.connect() as conn:
        stored = {r.job_id: r.raw_state for r in conn.execute(select(import_jobs))}
    assert stored == {j.job_id: j.state for j in zsim.jobs()}
    assert _samples(engine) == []


class _LostLock:
    """A sync lock that turns out to be lost when the pass is about to write."""

    def check(self) -> None:
        raise SupersededError("the lock was lost")


def test_a_pass_failing_after_its_details_records_their_retries_with_the_lists(engine, zsim):
    zsim.add_fault(Fault(status=503, path=LIST_PATH, times=1))
    zsim.add_fault(Fault(status=503, path=DESCRIBE, times=1))
    settings = _settings(engine, zsim)

    result = sync_source(
        engine,
        settings.sources[0],
        settings,
        sleep=lambda _s: None,
        clock=zsim._clock,
        lock=_LostLock(),
    )

    assert not result.ok and isinstance(result.error, SupersededError)
    assert result.retries == 2  # one list request and one progress request, each retried once
    assert _run(engine, result.run_id)["retries"] == 2


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 200, None),
        (b'{"code": 0, "data": [1, 2]}', 200, None),
        (None, 200, 96026),
        (None, 401, 80001),
    ],
    ids=["malformed", "wrong-shape", "job-not-found", "key-rejected"],
)
def test_bad_progress_answers_are_counted_and_the_rest_still_stored(
    engine, zsim, body, status, code
):
    fault = zsim.add_fault(Fault(status=status, body=body, code=code, path=DESCRIBE, times=1))
    open_ids = _open_ids(zsim)

    result = _sync(engine, zsim)

    assert result.ok and result.details_failed == 1
    if fault.status == 401:  # a rejected key stops the asking at once
        assert result.details_requested == 1 and len(_progress_requests(zsim)) == 1
    else:
        assert result.details_requested == len(open_ids)
        assert len(_samples(engine)) == len(open_ids) - 1


def test_hostile_figures_over_http_become_null_and_a_naive_time_is_ignored(engine, zsim, caplog):
    hostile = {
        "code": 0,
        "data": {
            "state": "Importing",
            "progress": "50",
            "totalRows": "1000",
            "importedRows": "-3",
            "fileSize": 1e30,
            "completeTime": "2024-04-01 14:17:55",
            "reason": "",
        },
    }
    zsim.add_fault(
        Fault(status=200, body=json.dumps(hostile).encode(), path=DESCRIBE, on_requests={2})
    )

    with caplog.at_level("WARNING", logger="jobsync"):
        result = _sync(engine, zsim)

    assert result.ok and result.details_failed == 0
    (asked,) = [r.body["jobId"] for r in zsim.requests if r.number == 2]
    sample = next(s for s in _samples(engine) if s["job_id"] == asked)
    assert (sample["progress"], sample["total_rows"]) == (50, 1000)
    assert (sample["imported_rows"], sample["file_size"], sample["complete_time"]) == (
        None,
        None,
        None,
    )
    assert _job(engine, asked)["total_rows"] == 1000
    assert "completeTime values had no time zone" in caplog.text


def test_no_details_makes_no_progress_requests(db_url, zsim, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    args = ["sync", "--db", db_url, "--base-url", zsim.url, "--cluster-id", CLUSTER]
    env = {"JOBSYNC_API_KEY": API_KEY}

    off = runner.invoke(cli, [*args, "--no-details"], env=env)

    assert off.exit_code == 0, off.output
    assert zsim.request_count > 0 and _progress_requests(zsim) == []

    on = runner.invoke(cli, args, env=env)  # on by default
    assert on.exit_code == 0, on.output
    assert {r.body["jobId"] for r in _progress_requests(zsim)} == _open_ids(zsim)
    assert f"{len(_open_ids(zsim))} details" in on.output


def test_a_stop_request_ends_the_details_and_the_list_is_still_written(engine, zsim):
    cancel = threading.Event()
    zsim.on_request(lambda _n, path, _b: cancel.set() if path == DESCRIBE else None)
    settings = _settings(engine, zsim)

    result = sync_source(
        engine, settings.sources[0], settings, sleep=lambda _s: None, cancel=cancel
    )

    assert result.ok and result.jobs == 12
    assert result.details_requested <= 1 and len(_progress_requests(zsim)) == 1


# -- choosing jobs, without HTTP ------------------------------------------------------------------


def _snapshot(states: dict[str, str]) -> Snapshot:
    snapshot = Snapshot(source_key="s", started_at=T0, finished_at=T0)
    for job_id, state in states.items():
        snapshot.jobs[job_id] = JobRecord(job_id, "c", state, None, None, T0)
    return snapshot


class Offers:
    """Stands in for the DetailsFetcher: records what the plan offers, best first."""

    def __init__(self) -> None:
        self.offers: list[tuple[tuple[float, ...], int, str, bool]] = []

    def offer(self, job_id: str, priority: tuple[float, ...], *, again: bool = False) -> bool:
        self.offers.append((priority, len(self.offers), job_id, again))
        return True

    def order(self) -> list[str]:
        return [job_id for _, _, job_id, _ in sorted(self.offers)]


def _record(job_id: str, state: str, progress: int | None = None) -> JobRecord:
    return JobRecord(job_id, "c", state, progress, None, T0)


def _known(asked_ago: float | None, *, state: str = "Importing", moved: bool = False) -> KnownJob:
    asked = None if asked_ago is None else T0 - timedelta(seconds=asked_ago)
    canonical = "Pending" if state == "Pending" else "Importing"
    return KnownJob(canonical, state, None, asked, moved)


def _known_jobs(open_jobs: dict[str, KnownJob], **facts: Any) -> KnownJobs:
    """KnownJobs as ``load_known_jobs`` makes them at T0 from these stored open jobs."""
    chosen = LeastRecentlyAsked[tuple[str, KnownJob]](None)
    for job_id, job in open_jobs.items():
        if due(job, T0, 300):
            chosen.add((job_id, job), job.asked)
    stored = OpenJobs((job_id, job.raw_state, job.progress) for job_id, job in open_jobs.items())
    return KnownJobs(stored, tuple(chosen.best()), **facts)


def test_plan_asks_news_first_then_due_open_jobs_by_age_of_their_last_sample():
    known = _known_jobs(
        {
            "never": _known(None),
            "old": _known(3600),
            "recent": _known(60),  # unchanged within the interval: not asked
            "moved": _known(30, moved=True),  # moved at its last ask: asked again at once
            "finishing": _known(10),
            "changed": _known(10, state="Pending"),
        },
        owed=frozenset({"owed"}),
        had_complete=True,
    )
    offers = Offers()
    lookups: list[list[str]] = []

    def stored(ids):
        lookups.append(sorted(ids))
        return {"old-fin"}

    plan = DetailsPlan(offers, known, stored)  # type: ignore[arg-type]
    # Known open jobs are queued before any page: the due ones, least recently asked first.
    assert offers.order() == ["owed", "never", "old", "moved"]

    plan.listed(
        [
            _record("recent", "Importing"),
            _record("finishing", "Completed"),
            _record("changed", "Importing"),
            _record("new-open", "Pending"),
            _record("new-fin", "Failed"),
            _record("old-fin", "Completed"),
            _record("owed", "Completed"),
        ]
    )
    plan.listed([_record("new-open", "Importing"), _record("finishing", "Completed")])

    assert offers.order() == [
        "owed", "finishing", "changed", "new-open", "new-fin", "never", "old", "moved"
    ]  # fmt: skip
    # A job that finishes on this pass is asked about even if it was asked before the page came.
    assert [j for _, _, j, again in offers.offers if again] == ["finishing", "changed"]
    # Only the listed finished jobs that are not known are looked up, once per page.
    assert lookups == [["new-fin", "old-fin"]]


def test_plan_on_a_first_pass_asks_about_open_jobs_only():
    offers = Offers()
    plan = DetailsPlan(offers, KnownJobs(), lambda ids: pytest.fail("no lookup"))  # type: ignore[arg-type]
    plan.listed([_record("a", "Completed"), _record("b", "Importing"), _record("c", "Failed")])
    assert offers.order() == ["b"]


class Refusing(Offers):
    """An Offers that refuses every offer after the first ``room``, as a full fetcher does."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room

    def offer(self, job_id: str, priority: tuple[float, ...], *, again: bool = False) -> bool:
        return len(self.offers) < self.room and super().offer(job_id, priority, again=again)


def test_plan_stops_reading_pages_once_the_fetcher_refuses_news():
    offers = Refusing(room=2)
    lookups: list[list[str]] = []

    def stored(ids):
        lookups.append(list(ids))
        return set()

    plan = DetailsPlan(offers, KnownJobs(had_complete=True), stored)  # type: ignore[arg-type]
    plan.listed([_record("n1", "Pending"), _record("n2", "Importing"), _record("n3", "Pending")])
    plan.listed([_record("f1", "Failed"), _record("n4", "Pending")])
    assert offers.order() == ["n1", "n2"]
    # Refused at n3: all later news comes later still, so no page is looked at again (no
    # lookup of the finished jobs either).
    assert lookups == []


def test_plan_due_rule_is_the_interval_unless_never_asked_or_moved():
    assert due(_known(None), T0, 300)
    assert due(_known(300), T0, 300)
    assert not due(_known(299), T0, 300)
    assert due(_known(1, moved=True), T0, 300)


def _stored_pass(engine: Engine, states: dict[str, str], at: datetime) -> None:
    """Store one complete pass listing ``states`` (job id -> raw state)."""
    snapshot = _snapshot(states)
    snapshot.complete = True
    run_id = start_run(engine, "s", at)
    apply_pass(engine, "s", run_id, snapshot, finished_at=at)


def test_known_jobs_hold_open_jobs_and_finished_jobs_owed_an_ask(engine):
    stored = {"a1": "Importing", "a2": "Importing", "a3": "Pending", "B9": "Completed",
              "c1": "Completed", "c2": "Failed"}  # fmt: skip
    _stored_pass(engine, stored, T0)
    later = T0 + timedelta(minutes=1)
    r = import_job_records.c
    with engine.begin() as conn:
        conn.execute(
            update(import_job_records).where(r.job_id.in_(["a2", "a3"])).values(details_at=later)
        )
        # c1 was last asked about before it finished; c2 after.
        conn.execute(
            update(import_job_records)
            .where(r.job_id == "c1")
            .values(details_at=T0 - timedelta(seconds=1), finished_at=T0)
        )
        conn.execute(
            update(import_job_records)
            .where(r.job_id == "c2")
            .values(details_at=later, finished_at=T0)
        )
        run_id = conn.execute(select(func.max(sync_runs.c.id))).scalar()
        # a2 moved at its last ask (a sample then, and one before); a3 has one sample only.
        for job_id, at in (("a2", T0), ("a2", later), ("a3", later)):
            conn.execute(
                import_job_progress.insert().values(
                    cluster_id="s",
                    job_id=job_id,
                    sampled_at=at,
                    sync_run_id=run_id,
                    state="Importing",
                )
            )

    known = load_known_jobs(engine, "s")

    assert len(known.open) == 3
    assert known.open.get("a3") == ("Pending", None)
    assert known.open.get("B9") is None and known.open.get("zz") is None
    # Every open job is due unless told otherwise; never asked first.
    due_jobs = dict(known.due)
    assert [*due_jobs][:1] == ["a1"] and set(due_jobs) == {"a1", "a2", "a3"}
    assert due_jobs["a1"].asked is None and not due_jobs["a1"].moved
    assert due_jobs["a2"].asked == later and due_jobs["a2"].moved
    assert not due_jobs["a3"].moved
    assert known.owed == {"c1"}
    assert known.had_complete
    # A pass keeps only the due jobs it could ask about: here, those that moved or were never
    # asked, one of them.
    moved = load_known_jobs(engine, "s", due=lambda job: job.asked is None or job.moved)
    assert [job_id for job_id, _ in moved.due] == ["a1", "a2"]
    assert [job_id for job_id, _ in load_known_jobs(engine, "s", limit=1).due] == ["a1"]
    other = load_known_jobs(engine, "other")
    assert (len(other.open), other.due, other.owed, other.had_complete) == (
        0,
        (),
        frozenset(),
        False,
    )
    assert stored_among(engine, "s", ["a1", "zz", "c2"]) == {"a1", "c2"}


def test_known_jobs_are_read_through_the_partial_indexes_not_the_whole_source(engine):
    # Before each pass: a read that went through every job the source ever had made every
    # pass of a long-lived source cost more than the one before.
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "import_job_progress" in statement:
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        load_known_jobs(engine, "s")
    finally:
        event.remove(engine, "before_cursor_execute", record)
    [(sql, parameters)] = seen
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            # On tables this small a scan is cheapest: ask whether the indexes can serve.
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            conn.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
            plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + sql, parameters))
        else:
            rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, parameters)
            plan = "\n".join(str(r[-1]) for r in rows)
    # Each of the two reads (open jobs, owed ones) through a partial index: the open jobs'
    # or the present (not vanished) jobs', whichever the planner prefers.
    reads = [
        line
        for line in plan.splitlines()
        if "on import_job_records" in line or "SEARCH import_job_records" in line
    ]
    assert len(reads) == 2, plan
    for read in reads:
        assert "ix_import_job_records_open" in read or "ix_import_job_records_present" in read
    assert "import_job_records_pkey" not in plan and "autoindex" not in plan, plan


# -- parsing, without HTTP ------------------------------------------------------------------------

UTC_INSTANT = datetime(2024, 4, 1, 6, 17, 55, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected", "ambiguous"),
    [
        ("2024-04-01T06:17:55Z", UTC_INSTANT, False),
        ("2024-04-01T14:17:55+08:00", UTC_INSTANT, False),
        ("2024-03-31T23:17:55-07:00", UTC_INSTANT, False),
        ("2024-04-01t06:17:55z", UTC_INSTANT, False),
        ("2024-04-01T06:17:55.123456789Z", UTC_INSTANT.replace(microsecond=123456), False),
        ("2024-04-01T06:17:55", None, True),
        ("2024-04-01 14:17:55", None, True),
        ("", None, False),
        (None, None, False),
        (1711952275, None, False),
        ("0001-01-01T00:00:00Z", None, False),  # Go's zero time: not set
        ("9999-12-31T23:59:59-23:59", None, False),  # beyond datetime's range in UTC
        ("2024-13-01T00:00:00Z", None, False),
        ("2024-04-01T06:17:55+25:00", None, False),
        ("20240401T061755Z", None, False),
        ("yesterday", None, False),
        ("2024-04-01T06:17:55Z trailing", None, False),
    ],
)
def test_complete_time(value, expected, ambiguous):
    assert parse_complete_time(value) == (expected, ambiguous)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (12, 12),
        ("12", 12),
        (" 7 ", 7),
        (3.0, 3),
        (0, 0),
        (2**63 - 1, 2**63 - 1),
        (2**63, None),
        ("9" * 19, None),
        ("1" * 5000, None),
        (-1, None),
        ("-1", None),
        (2.5, None),
        (float("nan"), None),
        (float("inf"), None),
        ("NaN", None),
        ("1e3", None),
        ("١٢", None),  # Arabic-Indic digits: isdigit() says yes, the API never sends them
        (True, None),
        (None, None),
        ([1], None),
    ],
)
def test_counts(value, expected):
    assert parse_count(value) == expected


def test_progress_data_with_hostile_fields_keeps_the_good_ones():
    data = {
        "jobId": "7",
        "state": "Importing",
        "progress": 101,
        "reason": "",
        "totalRows": "1000",
        "importedRows": -5,
        "fileSize": {"x": 1},
        "completeTime": "",
    }
    details = parse_progress_data(data, "7", T0)
    assert (details.raw_state, details.progress, details.reason) == ("Importing", None, None)
    assert (details.total_rows, details.imported_rows, details.file_size) == (1000, None, None)
    assert details.complete_time is None and details.sampled_at == T0


@pytest.mark.parametrize("data", [None, [], "x", 3])
def test_progress_data_that_is_not_an_object_is_a_protocol_error(data):
    with pytest.raises(ProtocolError):
        parse_progress_data(data, "7", T0)


def test_progress_data_about_another_job_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="another job"):
        parse_progress_data({"jobId": "8"}, "7", T0)
    assert parse_progress_data({"jobID": 7}, "7", T0).job_id == "7"


def test_the_run_records_counts_even_when_nothing_was_open(engine, clock):
    with Simulator(
        cluster_ids=(CLUSTER,), jobs=5, api_key=API_KEY, clock=clock, initial_states={"Failed": 1}
    ) as sim:
        result = _sync(engine, sim)
    run = _run(engine, result.run_id)
    assert (run["details_requested"], run["details_failed"]) == (0, 0)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(import_job_progress)).scalar() == 0


# -- configuration ---------------------------------------------------------------------------------


def test_details_are_on_by_default_and_the_file_and_options_can_change_that(tmp_path):
    assert resolve_settings(CliValues(), {}, cwd=tmp_path).details is True
    defaults = resolve_settings(CliValues(), {}, cwd=tmp_path)
    assert (defaults.details_max_per_pass, defaults.details_concurrency) == (200, 4)
    assert defaults.details_max_per_run == 400
    config = tmp_path / "jobsync.toml"
    config.write_text(
        "details = false\ndetails_max_per_pass = 50\ndetails_concurrency = 2\n"
        "details_max_per_run = 90\n"
    )

    from_file = resolve_settings(CliValues(), {}, cwd=tmp_path)
    assert (from_file.details, from_file.details_max_per_pass) == (False, 50)
    assert (from_file.details_concurrency, from_file.details_max_per_run) == (2, 90)
    from_options = resolve_settings(
        CliValues(
            details=True, details_max_per_pass=7, details_concurrency=1, details_max_per_run=30
        ),
        {},
        cwd=tmp_path,
    )
    assert (from_options.details, from_options.details_max_per_pass) == (True, 7)
    assert (from_options.details_concurrency, from_options.details_max_per_run) == (1, 30)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('details = "yes"', "'details' must be bool"),
        ("details_max_per_pass = 0", "details_max_per_pass must be a whole number from 1"),
        ("details_max_per_pass = true", "'details_max_per_pass' must be int"),
        ("details_concurrency = 17", "details_concurrency must be a whole number from 1 to 16"),
        ("details_max_per_run = 0", "details_max_per_run must be a whole number from 1"),
    ],
)
def test_bad_detail_settings_in_the_file_are_refused(tmp_path, line, message):
    (tmp_path / "jobsync.toml").write_text(line + "\n")
    with pytest.raises(ConfigError, match=message):
        resolve_settings(CliValues(), {}, cwd=tmp_path)


@pytest.mark.parametrize("command", ["sync", "daemon"])
def test_sync_and_daemon_take_the_detail_options(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for bad in (
        ["--details-concurrency", "0"],
        ["--details-max-per-pass", "10001"],
        ["--details-max-per-run", "0"],
    ):
        extra = ["--every", "1m"] if command == "daemon" else []
        result = runner.invoke(cli, [command, *extra, *bad])
        assert result.exit_code == 2 and bad[0] in result.output
    help_text = runner.invoke(cli, [command, "--help"]).output
    assert "--no-details" in help_text and "JOBSYNC_DETAILS" in help_text


def test_details_of_another_state_leave_the_records_progress_and_reason_alone():
    """A progress answer read while the job failed (the first walk), a record from the walk
    after it showing the job completed: the failure's reason must not land on that record."""
    from jobsync.domain.records import JobDetails
    from jobsync.storage.samples import details_filled

    def with_details(snapshot: Snapshot, stored: dict, details: dict) -> Snapshot:
        return replace(
            snapshot, jobs={**snapshot.jobs, **details_filled(snapshot, stored, details)}
        )

    t0 = datetime(2026, 1, 2, tzinfo=UTC)
    snapshot = Snapshot(source_key="c", started_at=t0, finished_at=t0 + timedelta(seconds=9))
    snapshot.jobs["done"] = JobRecord(
        "done", "coll", "Completed", 100, None, t0 + timedelta(seconds=8)
    )
    snapshot.jobs["open"] = JobRecord("open", "coll", "InProgress", None, None, t0)

    def sample(job_id: str, raw: str | None, progress: int, reason: str | None, at: datetime):
        return JobDetails(job_id, raw, progress, reason, None, None, None, None, at)

    details = {
        "done": sample("done", "Failed", 0, "bad file", t0 + timedelta(seconds=1)),
        "open": sample("open", "Importing", 40, None, t0 + timedelta(seconds=2)),
    }
    jobs = with_details(snapshot, {}, details).jobs
    assert (jobs["done"].progress, jobs["done"].reason) == (100, None)
    assert jobs["open"].progress == 40  # the same state, read later: the newer figure
    # An answer that names no state counts when it is no older than the record.
    details["open"] = sample("open", None, 55, None, t0 + timedelta(seconds=3))
    assert with_details(snapshot, {}, details).jobs["open"].progress == 55
    details["open"] = sample("open", None, 55, None, t0 - timedelta(seconds=1))
    assert with_details(snapshot, {}, details).jobs["open"].progress is None


def test_a_pass_plans_with_details_filled_in_and_leaves_its_snapshot_as_listed(engine):
    # The details go into the listed records for planning only (in place, for memory): the
    # stored job gets the progress, the snapshot keeps what the list said.
    from jobsync.domain.records import JobDetails

    snapshot = _snapshot({"j1": "Importing", "j2": "Pending"})
    listed = dict(snapshot.jobs)
    details = {"j1": JobDetails("j1", "Importing", 40, None, None, None, None, None, T0)}
    apply_pass(engine, "s", start_run(engine, "s", T0), snapshot, finished_at=T0, details=details)
    assert snapshot.jobs == listed and snapshot.jobs["j1"].progress is None
    r = import_job_records.c
    with engine.connect() as conn:
        stored = dict(conn.execute(select(r.job_id, r.progress).where(r.cluster_id == "s")).all())
    assert stored == {"j1": 40, "j2": None}
