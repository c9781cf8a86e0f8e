"""Reading pages concurrently: the same snapshot as reading them one by one, the same bounds."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from jobsync.api.client import ApiClient
from jobsync.api.listing import fetch_snapshot, iter_pages
from jobsync.config import HttpSettings, Settings, Source, resolve_settings
from jobsync.domain.records import Snapshot
from jobsync.errors import Cancelled, ConfigError, ProtocolError
from jobsync.observability.redact import Secret
from jobsync.service.sync import sync_all
from jobsync.simulator import Fault, Reply, Simulator
from jobsync.simulator.rates import PeakRate
from jobsync.storage.schema import import_job_records, sync_runs
from tests.conftest import API_KEY, CLUSTER, FAST_HTTP

LIST = "/v2/vectordb/jobs/import/list"
# Pages are read ahead whatever the simulator's speed (read_ahead_after=0): these tests are
# about what reading ahead does.
HTTP = replace(FAST_HTTP, read_ahead_after=0)
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def clock() -> datetime:
    return T0  # a fixed clock: records of both runs carry the same observed_at


def _source(sim: Simulator) -> Source:
    return Source(name=CLUSTER, cluster_id=CLUSTER, base_url=sim.url, api_key=Secret(API_KEY))


def _client(sim: Simulator, concurrency: int, **kw: Any) -> ApiClient:
    http = replace(HTTP, page_concurrency=concurrency)
    return ApiClient(sim.url, Secret(API_KEY), http, sleep=lambda _s: None, **kw)


def _snapshot(sim: Simulator, concurrency: int, page_size: int, **kw: Any) -> Snapshot:
    with _client(sim, concurrency) as client:
        return fetch_snapshot(client, _source(sim), page_size, clock=clock, **kw)


def _summary(snap: Snapshot) -> dict[str, Any]:
    return {
        "jobs": {job_id: (r.raw_state, r.collection_name) for job_id, r in snap.jobs.items()},
        "order": list(snap.jobs),
        "pages": snap.pages,
        "records": snap.records,
        "invalid": snap.invalid,
        "duplicates": snap.duplicates,
        "reported_count": snap.reported_count,
        "complete": snap.complete,
        "walks": snap.walks,
    }


def _listed(sim: Simulator) -> dict[str, tuple[str | None, str | None]]:
    return {j.job_id: (j.state, j.collection_name) for j in sim.jobs(CLUSTER)}


def _page_of(reply: Reply) -> dict[str, Any]:
    return json.loads(reply.body)["data"]


def _rewrite(reply: Reply, data: dict[str, Any]) -> Reply:
    return Reply(reply.status, json.dumps({"code": 0, "data": data}).encode(), reply.headers)


def _once_on_page(page: int, change: Callable[[dict[str, Any]], None]) -> Fault:
    """A fault that lets ``change`` edit the data of list page ``page`` the first time it goes."""
    done: list[bool] = []

    def transform(reply: Reply) -> Reply:
        data = _page_of(reply)
        if data["currentPage"] != page or done:
            return reply
        done.append(True)
        change(data)
        return _rewrite(reply, data)

    return Fault(status=200, path=LIST, transform=transform)


# -- the same snapshot --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("jobs", "page_size"), [(0, 10), (5, 10), (10, 10), (50, 7), (95, 10), (100, 10), (333, 25)]
)
def test_a_quiet_list_gives_the_same_snapshot_and_requests_concurrently(jobs, page_size):
    with Simulator(cluster_ids=(CLUSTER,), jobs=jobs, api_key=API_KEY, seed=4) as sim:
        one = _snapshot(sim, 1, page_size)
        sequential_requests = sim.request_count
        sim.reset_counters()
        four = _snapshot(sim, 4, page_size)
        assert sim.request_count == sequential_requests
    assert _summary(four) == _summary(one)
    assert four.complete and four.distinct_jobs == jobs


def test_a_walk_yields_pages_in_page_order_whatever_order_they_arrive_in(sim):
    # Page 3 is slow: pages 4 and 5 arrive before it, and still come after it.
    sim.add_fault(Fault(status=200, page=3, delay=0.3))
    with _client(sim, 4) as client:
        pages = list(iter_pages(client, _source(sim), 10, clock=clock))
    listed = list(_listed(sim))
    assert [r.job_id for p in pages for r in p.records] == listed
    assert [p.size for p in pages] == [10] * 5 + [0]


def test_jobs_added_while_pages_are_read_are_all_in_the_final_snapshot(sim):
    def add_once(number: int, path: str, body: dict[str, Any] | None) -> None:
        if number == 4:
            sim.add_jobs(3, cluster_id=CLUSTER)

    unregister = sim.on_request(add_once)
    four = _snapshot(sim, 4, 10)
    unregister()
    # Three arrivals at the head: proven complete in one walk, or, when concurrent pages came
    # back out of order around them and skipped a job, in two.
    assert four.complete and four.walks in (1, 2)
    assert {j: (r.raw_state, r.collection_name) for j, r in four.jobs.items()} == _listed(sim)
    one = _snapshot(sim, 1, 10)  # the list is still now: both read it whole
    assert _summary(one)["jobs"] == {
        j: (r.raw_state, r.collection_name) for j, r in four.jobs.items()
    }


def test_a_job_listed_twice_is_counted_once_as_a_duplicate_either_way(sim):
    def duplicate(data: dict[str, Any]) -> None:
        # The first job of page 2 shows up again in place of page 3's last one, as a shifting
        # list does: a duplicate, and a job skipped.
        first_of_page_2 = _listed(sim)
        data["records"][-1] = {"jobId": list(first_of_page_2)[10], "state": "Pending"}

    summaries = []
    for concurrency in (1, 4):
        sim.clear_faults()
        sim.add_fault(_once_on_page(3, duplicate))
        summaries.append(_summary(_snapshot(sim, concurrency, 10)))
    assert summaries[0] == summaries[1]
    assert summaries[1]["duplicates"] == 1 and summaries[1]["complete"]
    assert summaries[1]["walks"] == 2  # the skipped job made the first walk not add up


def test_a_short_page_in_the_middle_ends_the_walk_and_pages_read_ahead_are_dropped(sim):
    def shorten(data: dict[str, Any]) -> None:
        data["records"] = data["records"][:4]

    summaries, requests = [], []
    for concurrency in (1, 4):
        sim.clear_faults()
        sim.reset_counters()
        sim.add_fault(_once_on_page(3, shorten))
        summaries.append(_summary(_snapshot(sim, concurrency, 10)))
        requests.append(sim.request_count)
    assert summaries[0] == summaries[1]
    # Walk 1 stops at page 3 (pages 1-3), walk 2 reads all six, then page 1 again.
    assert summaries[1]["pages"] == 3 + 6 + 1 and summaries[1]["walks"] == 2
    assert summaries[1]["complete"] and len(summaries[1]["jobs"]) == 50
    # Reading ahead may have asked for pages 4-6 of walk 1 too, never more.
    assert requests[0] == 10 and 10 <= requests[1] <= 13


def test_pages_that_fail_and_are_retried_give_the_same_snapshot(sim):
    one = _snapshot(sim, 1, 5)
    sim.reset_counters()  # fault numbers count from here
    sim.add_fault(Fault(status=503, on_requests={3, 5, 6}, path=LIST))
    with _client(sim, 4) as client:
        four = fetch_snapshot(client, _source(sim), 5, clock=clock)
        assert client.retries == 3
    assert _summary(four) == _summary(one)


def test_a_page_that_keeps_failing_fails_the_walk(sim):
    sim.add_fault(Fault(status=503, page=4, path=LIST))
    with _client(sim, 4) as client, pytest.raises(Exception, match="503"):
        fetch_snapshot(client, _source(sim), 5, clock=clock)


def test_a_server_that_ignores_current_page_is_caught_on_page_two_before_reading_ahead(sim):
    sim.ignore_current_page = True
    with _client(sim, 8) as client, pytest.raises(ProtocolError, match="ignore 'currentPage'"):
        list(iter_pages(client, _source(sim), 5, clock=clock))
    assert sim.request_count == 2


# -- the bounds ---------------------------------------------------------------------------------


def test_never_more_than_count_implies_plus_one_even_reading_ahead():
    with Simulator(cluster_ids=(CLUSTER,), jobs=100, api_key=API_KEY, seed=4) as sim:
        sim.count_override = 45  # 5 pages of 10 by count; the server keeps sending full ones
        with _client(sim, 8) as client:
            pages = list(iter_pages(client, _source(sim), 10, clock=clock))
        assert len(pages) == 6 and sim.request_count == 6


def test_without_a_count_pages_are_read_one_at_a_time_up_to_the_hard_cap(sim):
    def drop_count(reply: Reply) -> Reply:
        data = _page_of(reply)
        del data["count"]
        return _rewrite(reply, data)

    sim.add_fault(Fault(status=200, path=LIST, transform=drop_count))
    sim.ignore_current_page = False
    with _client(sim, 8) as client:
        assert [p.size for p in iter_pages(client, _source(sim), 10, clock=clock)] == [10] * 5 + [0]
        assert sim.request_count == 6  # nothing read ahead past the end
        with pytest.raises(ProtocolError, match="hard cap of 3 pages"):
            list(iter_pages(client, _source(sim), 5, clock=clock, max_pages=3))
    assert sim.request_count == 6 + 3


def test_the_hard_cap_refuses_a_count_beyond_it_after_one_request(sim):
    sim.count_override = 10**9
    with _client(sim, 8) as client, pytest.raises(ProtocolError, match="hard cap"):
        list(iter_pages(client, _source(sim), 10, clock=clock))
    assert sim.request_count == 1


def test_a_source_with_fewer_jobs_than_a_page_costs_one_request(sim):
    snap = _snapshot(sim, 4, 100)  # 50 jobs: one short page, one consistent answer
    assert snap.complete and snap.pages == 1 and sim.request_count == 1


def test_many_small_sources_cost_one_request_each_and_are_stored(engine):
    clusters = tuple(f"in01-{i:016x}" for i in range(12))
    with Simulator(cluster_ids=clusters, jobs=7, api_key=API_KEY, seed=5) as sim:
        settings = Settings(
            sources=tuple(
                Source(name=c, cluster_id=c, base_url=sim.url, api_key=Secret(API_KEY))
                for c in clusters
            ),
            http=replace(HTTP, requests_per_second=1000),
            details=False,
        )
        results = sync_all(engine, settings)
        assert sim.request_count == len(clusters)
        assert sim.peak_rates() == {API_KEY: len(clusters)}
    assert all(r.ok and r.complete and r.pages == 1 for r in results)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(import_job_records)).scalar() == 84
        assert set(conn.execute(select(sync_runs.c.pages)).scalars()) == {1}


def test_a_concurrent_pass_stores_every_job_on_both_backends(engine):
    with Simulator(cluster_ids=(CLUSTER,), jobs=1234, api_key=API_KEY, seed=6) as sim:
        settings = Settings(
            sources=(_source(sim),),
            http=replace(HTTP, requests_per_second=1000, page_concurrency=6),
            details=False,
        )
        (result,) = sync_all(engine, settings)
        listed = {j.job_id: j.state for j in sim.jobs(CLUSTER)}
        # 13 pages (the last short), then page 1 again.
        assert sim.request_count == 14
    assert result.ok and result.complete and result.pages == 14
    with engine.connect() as conn:
        rows = conn.execute(select(import_job_records.c.job_id, import_job_records.c.raw_state))
        assert dict(rows.all()) == listed


# -- when to read ahead -------------------------------------------------------------------------


def _read_ahead(latency: float, slow_pages: tuple[int, ...] = ()) -> tuple[bool, int]:
    """(whether the walk started page threads, the list requests made) over ten pages, against
    a server whose every answer takes ``latency`` seconds (and those of ``slow_pages`` a second
    more) on a clock that moves only when it answers."""
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    threads = False
    with Simulator(
        cluster_ids=(CLUSTER,), jobs=100, api_key=API_KEY, seed=3, latency=latency, sleep=sleep
    ) as sim:
        for page in slow_pages:
            sim.add_fault(Fault(status=200, path=LIST, page=page, delay=1.0))
        http = replace(HTTP, read_ahead_after=HttpSettings().read_ahead_after)
        with ApiClient(sim.url, Secret(API_KEY), http, monotonic=lambda: now[0]) as client:
            for _page in iter_pages(client, _source(sim), 10):
                threads = threads or any(
                    t.name.startswith("jobsync-page") for t in threading.enumerate()
                )
        return threads, sim.request_count


def test_a_server_that_answers_at_once_is_read_one_page_at_a_time():
    threads, requests = _read_ahead(latency=0.0)
    assert not threads
    assert requests == 11  # ten full pages, then the empty one that count allows


def test_pages_are_read_ahead_once_a_page_takes_long_enough_to_come_back():
    slow = HttpSettings().read_ahead_after
    assert _read_ahead(latency=slow) == (True, 11)
    assert _read_ahead(latency=slow / 2) == (False, 11)


def test_one_slow_page_is_not_a_slow_server_but_two_in_a_row_are():
    assert _read_ahead(latency=0.0, slow_pages=(1,)) == (False, 11)
    assert _read_ahead(latency=0.0, slow_pages=(2, 4, 6)) == (False, 11)
    assert _read_ahead(latency=0.0, slow_pages=(4, 5)) == (True, 11)


# -- stopping -----------------------------------------------------------------------------------


def test_a_stop_request_ends_a_concurrent_walk_promptly():
    stop = threading.Event()
    outcome: list[BaseException | None] = []
    with Simulator(
        cluster_ids=(CLUSTER,), jobs=10_000, api_key=API_KEY, seed=7, latency=0.05
    ) as sim:

        def stop_at_tenth(number: int, path: str, body: dict[str, Any] | None) -> None:
            if number == 10:
                stop.set()

        sim.on_request(stop_at_tenth)

        def walk() -> None:
            with _client(sim, 4, cancel=stop) as client:
                try:
                    fetch_snapshot(client, _source(sim), 10, clock=clock)
                except BaseException as exc:
                    outcome.append(exc)
                else:
                    outcome.append(None)

        thread = threading.Thread(target=walk)
        thread.start()
        thread.join(timeout=30)  # a deadline, not a measurement: 1,000 pages would take longer
        assert not thread.is_alive()
        assert isinstance(outcome[0], Cancelled)
        # The request that saw the stop, and at most the three others in flight with it.
        assert 10 <= sim.request_count <= 13


# -- configuration ------------------------------------------------------------------------------


def test_page_concurrency_comes_from_the_config_file_and_is_checked(tmp_path):
    path = tmp_path / "jobsync.toml"
    path.write_text("page_concurrency = 8\n")
    settings = resolve_settings_for(path)
    assert settings.http.page_concurrency == 8
    for bad in ("0", "17", '"4"', "true"):
        path.write_text(f"page_concurrency = {bad}\n")
        with pytest.raises(ConfigError, match="page_concurrency"):
            resolve_settings_for(path)
    path.write_text("")
    assert resolve_settings_for(path).http.page_concurrency == HttpSettings().page_concurrency == 4


def resolve_settings_for(path):
    from jobsync.config import CliValues

    return resolve_settings(CliValues(config_file=str(path)), {}, need_keys=False)


# -- the simulator's peak-rate counter ----------------------------------------------------------


def test_the_peak_rate_counts_the_most_requests_started_in_any_one_second():
    rate = PeakRate()
    # Key a: 8 a second exactly (0, 0.125, ... 7.375): a window (t - 1, t] holds 8, not 9.
    # Key b: a burst of 5 from 3.0 to 3.25. (Binary fractions: no rounding in the sums.)
    events = [(i * 0.125, "a") for i in range(60)] + [(3.0 + i * 0.0625, "b") for i in range(5)]
    for at, key in sorted(events):
        rate.record(key, at)
    assert rate.peaks() == {"a": 8, "b": 5}
    assert rate.peak == 8 + 5 and rate.total == 65  # (2.25, 3.25] holds all five of b
    rate.reset()
    assert rate.peak == 0 and rate.peaks() == {}


def test_the_peak_rate_per_endpoint_is_what_the_documented_limit_counts():
    # 16 a second to the list and 16 to the progress path with one key: 32 for the key, 16 for
    # each (key, endpoint), which is what the API limits. (Binary fractions: exact sums.)
    rate = PeakRate()
    for i in range(32):
        rate.record("k", i * 0.0625, "/list")
        rate.record("k", i * 0.0625 + 0.03125, "/progress")
    assert rate.peaks() == {"k": 32}
    assert rate.endpoint_peaks() == {("k", "/list"): 16, ("k", "/progress"): 16}
    rate.reset()
    assert rate.endpoint_peaks() == {}


def test_the_simulator_reports_peak_rates_per_key_on_its_injected_clock():
    now = [0.0]
    with Simulator(
        cluster_ids=(CLUSTER,), jobs=3, api_key=API_KEY, monotonic=lambda: now[0]
    ) as sim:
        with (
            ApiClient(sim.url, Secret(API_KEY), HTTP) as good,
            ApiClient(sim.url, Secret("wrong"), replace(HTTP, max_retries=0)) as bad,
        ):
            for i in range(6):
                now[0] = i * 0.3  # 0.0 ... 1.5: four within any one second
                good.call(LIST, {"clusterId": CLUSTER})
            for _ in range(2):
                with pytest.raises(Exception, match="rejected"):
                    bad.call(LIST, {"clusterId": CLUSTER})  # both at 1.5
        assert sim.peak_rates() == {API_KEY: 4, "wrong": 2}
        assert sim.endpoint_peak_rates() == {(API_KEY, LIST): 4, ("wrong", LIST): 2}
        assert sim.peak_rate() == 6  # 0.6, 0.9, 1.2, 1.5 and the two rejected at 1.5
        assert "8 requests served, at most 6 started within one second" in sim.rate_summary()
        sim.reset_counters()
        assert sim.peak_rate() == 0


def test_no_page_past_the_hard_cap_even_when_count_allows_one_more(sim):
    # 50 jobs in pages of 10 fill exactly 5 pages; with a cap of 5 pages, page 6 (the one
    # more that count allows) is not asked for: the cap wins, and says so.
    with _client(sim, 4) as client, pytest.raises(ProtocolError, match="hard cap of 5 pages"):
        list(iter_pages(client, _source(sim), 10, clock=clock, max_pages=5))
    assert sim.request_count == 5
    assert max(r.body["currentPage"] for r in sim.requests if r.body) == 5


def test_jobsync_simulate_reports_its_peak_rate_when_it_stops():
    from jobsync.service.demo import serve_simulator

    lines: list[str] = []
    stop = threading.Event()
    thread = threading.Thread(
        target=serve_simulator,
        kwargs={
            "host": "127.0.0.1",
            "port": 0,
            "jobs": 3,
            "cluster_ids": (CLUSTER,),
            "api_key": API_KEY,
            "seed": 0,
            "interval": 60.0,
            "announce": lines.append,
            "stop": stop,
        },
    )
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while len(lines) < 2 and time.monotonic() < deadline:
            stop.wait(0.01)  # polling with a deadline for the URL line
        with ApiClient(lines[0], Secret(API_KEY), HTTP) as client:
            for _ in range(3):
                client.call(LIST, {"clusterId": CLUSTER})
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert lines[-1].startswith("3 requests served, at most 3 started within one second")
