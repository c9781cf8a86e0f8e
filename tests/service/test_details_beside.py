"""Progress requests run beside the list: they start before the last page, on their own budget,
all end before the write, never fail the pass, and an unchanged re-sync writes O(1) rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select

from jobsync.api.progress import PROGRESS_PATHS
from jobsync.api.ratelimit import RateLimiters
from jobsync.config import HttpSettings, Settings, Source
from jobsync.observability.redact import Secret
from jobsync.service.sync import sync_all, sync_source
from jobsync.simulator import LIST_PATH, Fault, Simulator
from jobsync.storage.schema import import_job_progress, import_job_records, sync_runs
from tests.conftest import API_KEY, CLUSTER, FAST_HTTP, settings_for

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _settings(engine: Engine, sim: Simulator, **overrides: object) -> Settings:
    url = engine.url.render_as_string(hide_password=False)
    return settings_for(sim, url, **{"details": True, **overrides})


def _sync(engine: Engine, sim: Simulator, clock: Clock, **overrides: object):
    settings = _settings(engine, sim, **overrides)
    result = sync_source(engine, settings.sources[0], settings, sleep=lambda _s: None, clock=clock)
    assert result.ok, result.error
    return result


def _paths(sim: Simulator) -> list[str]:
    return [r.path for r in sim.requests]


def _table(engine: Engine, table) -> list[tuple]:
    with engine.connect() as conn:
        return sorted(tuple(row) for row in conn.execute(select(table)))


def test_progress_requests_start_while_the_list_is_still_read(engine):
    clock = Clock()
    # Six pages read one at a time, 30 ms each: the new open jobs of page 1 are asked about
    # long before the last page is asked for.
    with Simulator(
        cluster_ids=(CLUSTER,),
        jobs=600,
        api_key=API_KEY,
        clock=clock,
        latency=0.03,
        initial_states={"Pending": 1},
    ) as sim:
        http = HttpSettings(**{**FAST_HTTP.__dict__, "page_concurrency": 1})
        result = _sync(engine, sim, clock, http=http, details_max_per_pass=20)

        paths = _paths(sim)
        last_list = max(i for i, p in enumerate(paths) if p == LIST_PATH)
        first_progress = min(i for i, p in enumerate(paths) if p in PROGRESS_PATHS)
        assert first_progress < last_list
        assert result.details_requested == 20 and result.jobs == 600


def test_known_open_jobs_are_asked_about_before_the_list_shows_them(engine):
    clock = Clock()
    with Simulator(
        cluster_ids=(CLUSTER,),
        jobs=150,
        api_key=API_KEY,
        clock=clock,
        latency=0.02,
        initial_states={"Importing": 1},
    ) as sim:
        _sync(engine, sim, clock, details_max_per_pass=150)
        clock.now += timedelta(minutes=10)  # every open job is due again
        sim.reset_counters()
        http = HttpSettings(**{**FAST_HTTP.__dict__, "page_concurrency": 1})
        result = _sync(engine, sim, clock, http=http, details_max_per_pass=10)

        paths = _paths(sim)
        # Queued before page 1 went: the second request the server saw at the latest.
        assert min(i for i, p in enumerate(paths) if p in PROGRESS_PATHS) <= 1
        assert result.details_requested == 10


def test_an_unchanged_resync_writes_o1_rows_with_details_on(engine):
    clock = Clock()
    with Simulator(
        cluster_ids=(CLUSTER,),
        jobs=250,
        api_key=API_KEY,
        clock=clock,
        initial_states={"Pending": 1, "Importing": 2, "Completed": 3, "Failed": 1},
    ) as sim:
        first = _sync(engine, sim, clock)
        assert first.details_requested > 50
        clock.now += timedelta(minutes=1)
        records = _table(engine, import_job_records)
        samples = _table(engine, import_job_progress)
        sim.reset_counters()

        second = _sync(engine, sim, clock)

        assert second.counts.rows_written == 2  # its sync_runs and sync_sources rows
        assert second.details_requested == 0
        assert [p for p in _paths(sim) if p in PROGRESS_PATHS] == []
        # Nothing else changed, not even when details were last fetched.
        assert _table(engine, import_job_records) == records
        assert _table(engine, import_job_progress) == samples


def test_a_failing_list_fails_the_pass_and_its_progress_requests_end(engine):
    clock = Clock()
    with Simulator(
        cluster_ids=(CLUSTER,),
        jobs=500,
        api_key=API_KEY,
        clock=clock,
        initial_states={"Pending": 1},
    ) as sim:
        _sync(engine, sim, clock)
        clock.now += timedelta(minutes=10)
        sim.add_fault(Fault(status=400, code=1100, page=3))
        settings = _settings(engine, sim)

        result = sync_source(
            engine, settings.sources[0], settings, sleep=lambda _s: None, clock=clock
        )

        assert not result.ok
        with engine.connect() as conn:
            status = conn.execute(select(sync_runs.c.status).where(sync_runs.c.id == result.run_id))
            assert status.scalar() == "failed"


def test_failing_progress_requests_beside_the_list_never_fail_the_pass(engine):
    clock = Clock()
    with Simulator(
        cluster_ids=(CLUSTER,),
        jobs=300,
        api_key=API_KEY,
        clock=clock,
        initial_states={"Pending": 1},
    ) as sim:
        sim.add_fault(Fault(status=500, path=PROGRESS_PATHS[0]))
        result = _sync(engine, sim, clock)

        assert result.ok and result.jobs == 300
        assert result.details_failed == result.details_requested >= 1


def test_a_job_the_last_pass_did_not_list_is_not_asked_about(engine):
    clock = Clock()
    with Simulator(
        cluster_ids=(CLUSTER,), jobs=20, api_key=API_KEY, clock=clock, initial_states={"Pending": 1}
    ) as sim:
        _sync(engine, sim, clock)
        gone = sim.jobs()[0].job_id
        sim.remove_jobs(CLUSTER, [gone])
        _sync(engine, sim, clock)  # the list no longer shows it
        clock.now += timedelta(minutes=10)  # every open job is due again
        sim.reset_counters()

        result = _sync(engine, sim, clock)

        asked = {r.body["jobId"] for r in sim.requests if r.path in PROGRESS_PATHS}
        assert gone not in asked and len(asked) == 19
        assert result.details_failed == 0


# -- the rate ------------------------------------------------------------------------------------


class SpyLimiters(RateLimiters):
    def __init__(self) -> None:
        super().__init__(20)
        self.rates: dict[str, float | None] = {}

    def for_key(self, key, base_url, cancel=None, *, rate=None):  # type: ignore[no-untyped-def]
        self.rates[base_url] = rate
        return super().for_key(key, base_url, cancel, rate=rate)


def test_each_source_is_paced_at_the_smallest_rate_given_for_its_key(engine):
    with Simulator(cluster_ids=("a", "b", "c"), jobs=3, api_key=API_KEY) as sim:
        url = engine.url.render_as_string(hide_password=False)
        shared, own = Secret(API_KEY), Secret(API_KEY + "-other")
        sources = (
            Source(name="a", cluster_id="a", base_url=sim.url, api_key=shared, requests_per_second=50),
            Source(name="b", cluster_id="b", base_url=sim.url + "/", api_key=shared, requests_per_second=30),
            Source(name="c", cluster_id="c", base_url=sim.url + "//", api_key=own),
        )  # fmt: skip
        settings = settings_for(
            sim, url, sources=sources, http=HttpSettings(requests_per_second=70)
        )
        spy = SpyLimiters()

        sync_all(engine, settings, sleep=lambda _s: None, limiters=spy)

        assert spy.rates == {sim.url: 30, sim.url + "/": 30, sim.url + "//": 70}
        limiter = spy.limiter(shared, sim.url, LIST_PATH, 30)
        assert limiter.limit == 30


@pytest.mark.parametrize("rate", [0.5, 100_000.0])
def test_the_limiter_takes_its_rate_from_the_caller(rate):
    limiters = RateLimiters(20)
    assert limiters.limiter(None, "https://x", LIST_PATH, rate).limit == rate
    assert limiters.limiter(None, "https://x", "/other").limit == 20


# -- the fetcher's queue ---------------------------------------------------------------------


def test_news_overtakes_routine_jobs_which_leave_room_while_the_list_is_read():
    from jobsync.api.client import ApiClient
    from jobsync.api.details import DetailsFetcher
    from jobsync.api.progress import PathMemory

    with Simulator(cluster_ids=(CLUSTER,), jobs=5, api_key=API_KEY) as sim:
        r1, r2, r3, n1, n2 = (j.job_id for j in sim.jobs())
        source = Source(name=CLUSTER, cluster_id=CLUSTER, base_url=sim.url, api_key=Secret(API_KEY))
        with ApiClient(sim.url, Secret(API_KEY), FAST_HTTP) as client:
            fetcher = DetailsFetcher(
                client,
                source,
                limit=3,
                concurrency=1,
                clock=Clock(),
                memory=PathMemory(),
                reserve=2,
            )
            for age, job_id in enumerate((r1, r2, r3)):
                fetcher.offer(job_id, (1.0, float(age)))
            fetcher.start()
            # While the list is read, routine jobs take only limit - reserve = 1 request.
            fetcher.offer(n1, (0.0, 1.0))
            fetcher.offer(n2, (0.0, 2.0))
            fetcher.offer(n1, (0.0, 3.0))  # offered twice: asked once
            outcome = fetcher.finish()

        asked = [r.body["jobId"] for r in sim.requests if r.path in PROGRESS_PATHS]
        # One routine job (the oldest), whenever the worker took it; both news.
        assert sorted(asked) == sorted([r1, n1, n2])
        assert outcome.requested == 3 and set(outcome.details) == {r1, n1, n2}


def test_a_flood_of_offers_is_held_to_the_budget_and_the_best_are_still_asked():
    # A first sync of a million jobs, half of them open, offers each open one: the queue must
    # not hold them all, and the jobs asked about must be the best ones offered.
    from jobsync.api.client import ApiClient
    from jobsync.api.details import PRUNE_SLACK, DetailsFetcher
    from jobsync.api.progress import PathMemory

    limit = 3
    with Simulator(cluster_ids=(CLUSTER,), jobs=4, api_key=API_KEY) as sim:
        ids = [j.job_id for j in sim.jobs()]
        source = Source(name=CLUSTER, cluster_id=CLUSTER, base_url=sim.url, api_key=Secret(API_KEY))
        with ApiClient(sim.url, Secret(API_KEY), FAST_HTTP) as client:

            def fetcher() -> DetailsFetcher:
                return DetailsFetcher(
                    client, source, limit=limit, concurrency=1, clock=Clock(), memory=PathMemory()
                )

            # Worst last: once the queue was pruned, every later offer is refused.
            worsening = fetcher()
            taken = [worsening.offer(f"gone-{n}", (0.0, float(n))) for n in range(1_000)]
            assert taken[0] and not taken[-1]
            assert taken == sorted(taken, reverse=True)  # accepted, then refused for good
            assert taken.count(True) <= 2 * limit + PRUNE_SLACK + 1

            # Best last: each offer beats those kept, so all are taken, and the three best
            # (offered last) are the ones asked about; a worse offer after them is refused.
            improving = fetcher()
            flood = [f"gone-{n}" for n in range(1_000)] + ids[:limit]
            assert all(improving.offer(job_id, (0.0, -float(n))) for n, job_id in enumerate(flood))
            assert improving.offer(ids[limit], (1.0, 0.0)) is False
            improving.start()
            outcome = improving.finish()

    asked = [r.body["jobId"] for r in sim.requests if r.path in PROGRESS_PATHS]
    assert sorted(asked) == sorted(ids[:limit])
    assert outcome.requested == limit
