"""The simulator, driven over real HTTP on loopback with requests, an injected clock and no sleeps."""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jobsync.simulator as simulator_package
from jobsync.simulator import (
    DESCRIBE_PATH,
    GET_PROGRESS_PATH,
    LIST_PATH,
    PROGRESS_PATH,
    Fault,
    Reply,
    SimJob,
    Simulator,
    StateChange,
)

KEY = "test-key"
CLUSTER = "in01-sim0000000000000"
T0 = datetime(2024, 4, 1, 6, 0, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def tick(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Api:
    """A requests.Session bound to one simulator."""

    def __init__(self, sim: Simulator, key: str | None = KEY) -> None:
        self.sim = sim
        self.session = requests.Session()
        self.session.trust_env = False  # a ~/.netrc must not replace the Authorization header
        self.key = key

    def post(
        self,
        path: str,
        body: Any = None,
        *,
        key: str | type[Ellipsis] | None = ...,
        raw: bytes | None = None,
    ) -> requests.Response:
        key = self.key if key is ... else key
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        data = raw if raw is not None else json.dumps(body if body is not None else {}).encode()
        return self.session.post(self.sim.url + path, data=data, headers=headers, timeout=10)

    def list(self, page: int = 1, size: int = 10, **extra: Any) -> dict[str, Any]:
        body = {"clusterId": CLUSTER, "pageSize": size, "currentPage": page, **extra}
        response = self.post(LIST_PATH, body)
        assert response.status_code == 200
        return response.json()

    def progress(self, job_id: str, path: str = PROGRESS_PATH) -> dict[str, Any]:
        response = self.post(path, {"clusterId": CLUSTER, "jobId": job_id})
        assert response.status_code == 200
        return response.json()

    def walk(self, size: int) -> list[str]:
        """Every job id over all pages, by offset, stopping at the first short page."""
        ids: list[str] = []
        page = 1
        while True:
            records = self.list(page, size)["data"]["records"]
            ids += [r["jobId"] for r in records]
            if len(records) < size:
                return ids
            page += 1


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_sim():
    started: list[Simulator] = []

    def make(**kwargs: Any) -> Simulator:
        kwargs.setdefault("seed", 7)
        sim = Simulator(**kwargs)
        sim.start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(make_sim, clock) -> Simulator:
    return make_sim(jobs=25, clock=clock)


@pytest.fixture
def api(sim) -> Api:
    return Api(sim)


def ids_of(jobs: list[SimJob]) -> list[str]:
    return [j.job_id for j in jobs]


# -- the public surface -------------------------------------------------------------------------


def test_public_names_are_exported():
    assert set(simulator_package.__all__) == {
        "DEFAULT_CLUSTER_ID",
        "DESCRIBE_PATH",
        "GET_PROGRESS_PATH",
        "LIST_PATH",
        "PROGRESS_PATH",
        "Fault",
        "Quirks",
        "Reply",
        "RequestRecord",
        "SimJob",
        "Simulator",
        "StateChange",
    }


def test_simulator_imports_nothing_from_the_rest_of_jobsync():
    for source in Path(simulator_package.__file__).parent.glob("*.py"):
        text = source.read_text()
        assert not re.search(r"^\s*(from|import)\s+jobsync\b", text, re.M), source
        assert not re.search(r"^\s*from\s+\.\.", text, re.M), source


def test_job_ids_are_unique_18_digit_strings_deterministic_from_the_seed():
    first = Simulator(jobs=200, seed=3).jobs()
    again = Simulator(jobs=200, seed=3).jobs()
    other = Simulator(jobs=200, seed=4).jobs()
    assert ids_of(first) == ids_of(again)
    assert ids_of(first) != ids_of(other)
    assert all(re.fullmatch(r"\d{18}", j.job_id) for j in first)
    assert len(set(ids_of(first))) == 200


def test_initial_population_follows_the_state_weights():
    jobs = Simulator(jobs=50, initial_states={"Failed": 1}).jobs()
    assert {j.state for j in jobs} == {"Failed"}
    assert all(j.reason and j.progress == 0 and j.finished_at for j in jobs)
    mixed = Simulator(jobs=2_000).jobs()
    counts = {s: sum(j.state == s for j in mixed) for s in ("Pending", "Importing", "Completed")}
    assert 300 < counts["Pending"] < 500
    assert 1_000 > counts["Completed"] > 700


def test_context_manager_serves_and_stop_cuts_keep_alive_connections():
    with Simulator(jobs=3) as sim:
        api = Api(sim)
        assert api.list()["data"]["count"] == 3
        sim.stop()
        sim.stop()  # idempotent
        with pytest.raises(requests.ConnectionError):
            api.list()


def test_keep_alive_and_content_length(api):
    first = api.post(LIST_PATH, {"clusterId": CLUSTER})
    second = api.post(LIST_PATH, {"clusterId": CLUSTER})
    for response in (first, second):
        assert response.headers["Content-Length"] == str(len(response.content))
        assert response.headers.get("Connection", "").lower() != "close"
        assert response.headers["Content-Type"] == "application/json"
    assert api.sim.request_count == 2


# -- paging ------------------------------------------------------------------------------------


def test_pages_are_newest_first_with_total_count_short_last_page_and_empty_past_the_end(api, sim):
    pages = [api.list(page, 10)["data"] for page in (1, 2, 3, 4)]
    assert [p["count"] for p in pages] == [25, 25, 25, 25]
    assert [len(p["records"]) for p in pages] == [10, 10, 5, 0]
    assert [(p["currentPage"], p["pageSize"]) for p in pages] == [
        (1, 10),
        (2, 10),
        (3, 10),
        (4, 10),
    ]
    listed = [r["jobId"] for p in pages for r in p["records"]]
    assert listed == ids_of(sim.jobs())
    assert listed == sorted(listed, reverse=True)  # ids grow with creation: newest first
    assert set(pages[0]["records"][0]) == {"collectionName", "jobId", "state"}


def test_defaults_are_page_size_10_and_page_1(api):
    data = api.post(LIST_PATH, {"clusterId": CLUSTER}).json()["data"]
    assert (data["pageSize"], data["currentPage"], len(data["records"])) == (10, 1, 10)


def test_page_size_100_serves_everything_on_one_page(api):
    assert len(api.list(1, 100)["data"]["records"]) == 25


def test_unknown_fields_db_name_and_collection_name_are_ignored(api):
    data = api.list(1, 100, dbName="default", collectionName="nothing", extra={"x": 1})["data"]
    assert data["count"] == 25


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(n=st.integers(0, 150), size=st.integers(1, 100))
def test_an_offset_walk_of_a_quiet_list_sees_every_job_once_in_order(api, sim, n, size):
    sim.remove_jobs(CLUSTER, ids_of(sim.jobs()))
    sim.add_jobs(n)
    assert api.walk(size) == ids_of(sim.jobs())


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"clusterId": CLUSTER, "pageSize": 0}, 96008),
        ({"clusterId": CLUSTER, "pageSize": 101}, 96008),
        ({"clusterId": CLUSTER, "pageSize": "10"}, 96008),
        ({"clusterId": CLUSTER, "pageSize": True}, 96008),
        ({"clusterId": CLUSTER, "pageSize": 1.5}, 96008),
        ({"clusterId": CLUSTER, "currentPage": 0}, 96009),
        ({"clusterId": CLUSTER, "currentPage": -3}, 96009),
        ({"clusterId": CLUSTER, "currentPage": "2"}, 96009),
        ({"clusterId": ""}, 96025),
        ({}, 96025),
        ({"projectId": "proj-1", "regionId": ""}, 96025),
        ({"clusterId": "not a cluster"}, 96036),
        ({"clusterId": 42}, 96036),
        ({"clusterId": "in01-0123456789abcdef"}, 96018),
        ({"projectId": "proj-1", "regionId": "aws-us-west-2"}, 96018),
    ],
)
def test_list_errors_are_http_200_with_documented_codes(api, body, code):
    response = api.post(LIST_PATH, body)
    assert response.status_code == 200
    payload = response.json()
    assert payload["code"] == code
    assert isinstance(payload["message"], str)
    assert payload["message"]
    assert "data" not in payload


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"'])
def test_a_body_that_is_not_a_json_object_is_code_1801(api, raw):
    response = api.post(LIST_PATH, raw=raw)
    assert (response.status_code, response.json()["code"]) == (200, 1801)


def test_an_empty_body_counts_as_an_empty_object(api):
    assert api.post(LIST_PATH, raw=b"").json()["code"] == 96025


def test_project_and_region_name_a_configured_cluster(make_sim):
    sim = make_sim(cluster_ids=("proj-1/aws-us-west-2",), jobs=4)
    body = {"clusterId": "", "projectId": "proj-1", "regionId": "aws-us-west-2", "pageSize": 10}
    assert Api(sim).post(LIST_PATH, body).json()["data"]["count"] == 4


def test_each_cluster_has_its_own_list(make_sim):
    sim = make_sim(cluster_ids=("in01-aaaaaaaaaaaaaaaa", "in02-bbbbbbbbbbbbbbbb"), jobs=3)
    api = Api(sim)
    lists = {}
    for cluster_id in sim.cluster_ids:
        data = api.post(LIST_PATH, {"clusterId": cluster_id}).json()["data"]
        lists[cluster_id] = [r["jobId"] for r in data["records"]]
        assert lists[cluster_id] == ids_of(sim.jobs(cluster_id))
    assert not set(lists["in01-aaaaaaaaaaaaaaaa"]) & set(lists["in02-bbbbbbbbbbbbbbbb"])


@pytest.mark.parametrize("key", [None, "wrong-key", ""])
def test_a_missing_or_wrong_key_is_80001_and_no_key_is_ever_echoed_or_stored(api, sim, key):
    for path in (LIST_PATH, DESCRIBE_PATH):
        response = api.post(path, {"clusterId": CLUSTER, "jobId": "1"}, key=key)
        assert (response.status_code, response.json()["code"]) == (200, 80001)
        assert KEY not in response.text
        if key:
            assert key not in response.text
    basic = api.session.post(
        sim.url + LIST_PATH, json={"clusterId": CLUSTER}, headers={"Authorization": f"Basic {KEY}"}
    )
    assert basic.json()["code"] == 80001
    records = sim.requests
    assert [r.has_authorization for r in records] == [key is not None] * 2 + [True]
    assert KEY not in repr(records)
    assert "wrong-key" not in repr(records)


def test_a_bad_key_wins_over_a_bad_body(api):
    assert api.post(LIST_PATH, raw=b"{oops", key="nope").json()["code"] == 80001


def test_unknown_paths_are_404_and_other_methods_405_with_json_bodies(api, sim):
    missing = api.post("/v2/vectordb/jobs/import/nothing", {})
    assert missing.status_code == 404
    assert missing.json()["code"] == 404
    wrong_method = api.session.get(sim.url + LIST_PATH, timeout=5)
    assert wrong_method.status_code == 405
    assert wrong_method.json()["code"] == 405
    assert wrong_method.headers["Allow"] == "POST"
    assert sim.request_count == 2
    assert [r.number for r in sim.requests] == [None, None]


# -- the progress endpoint ---------------------------------------------------------------------


@pytest.mark.parametrize("path", [PROGRESS_PATH, DESCRIBE_PATH, GET_PROGRESS_PATH])
def test_progress_answers_under_all_three_names(api, sim, clock, path):
    job = sim.jobs()[3]
    sim.set_state(CLUSTER, job.job_id, "Completed")
    data = api.progress(job.job_id, path)["data"]
    assert data["jobId"] == job.job_id
    assert data["collectionName"] == job.collection_name
    assert (data["state"], data["progress"], data["reason"]) == ("Completed", 100, "")
    assert data["completeTime"] == clock.now.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert data["totalRows"] == data["importedRows"] > 0
    assert data["fileName"].endswith(".parquet")
    assert data["fileSize"] > 0
    (detail,) = data["details"]
    assert set(detail) == {
        "fileName",
        "fileSize",
        "state",
        "progress",
        "completeTime",
        "reason",
        "importedRows",
    }


def test_progress_of_open_and_failed_jobs(api, sim):
    pending, failing = sim.jobs()[:2]
    sim.set_state(CLUSTER, pending.job_id, "Pending")
    sim.set_state(CLUSTER, failing.job_id, "Failed", reason="bad parquet")
    open_data = api.progress(pending.job_id)["data"]
    assert (open_data["state"], open_data["completeTime"], open_data["progress"]) == (
        "Pending",
        "",
        0,
    )
    failed = api.progress(failing.job_id)["data"]
    assert (failed["state"], failed["reason"], failed["progress"]) == ("Failed", "bad parquet", 0)
    assert failed["completeTime"]


@pytest.mark.parametrize("job_id", ["448000000000000000", "", 17, None])
def test_progress_of_an_unknown_job_is_96026(api, job_id):
    response = api.post(DESCRIBE_PATH, {"clusterId": CLUSTER, "jobId": job_id})
    assert response.json()["code"] == 96026


def test_progress_checks_the_cluster_like_the_list(api):
    assert api.post(DESCRIBE_PATH, {"jobId": "1"}).json()["code"] == 96025
    body = {"clusterId": "in01-0123456789abcdef", "jobId": "1"}
    assert api.post(DESCRIBE_PATH, body).json()["code"] == 96018


# -- mutations ---------------------------------------------------------------------------------


def test_advance_is_deterministic_for_a_seed():
    def run(seed: int) -> list[tuple[str, str | None, str]]:
        sim = Simulator(jobs=200, seed=seed, clock=FakeClock())
        changes = sim.advance(fraction=0.3) + sim.advance(count=7) + sim.advance(fraction=0.5)
        return [(c.job_id, c.from_state, c.to_state) for c in changes]

    assert run(11) == run(11)
    assert run(11) != run(12)


def test_advance_moves_jobs_one_step_and_about_a_fifth_of_finishing_jobs_fail():
    sim = Simulator(jobs=3_000, initial_states={"Importing": 1})
    changes = sim.advance(fraction=1.0)
    assert len(changes) == 3_000
    failed = [c for c in changes if c.to_state == "Failed"]
    assert {c.from_state for c in changes} == {"Importing"}
    assert {c.to_state for c in changes} == {"Completed", "Failed"}
    assert 0.15 < len(failed) / len(changes) < 0.25
    states = {j.job_id: j for j in sim.jobs()}
    assert all(states[c.job_id].reason for c in failed)
    assert sim.advance(fraction=1.0) == []  # everything finished


def test_advance_fraction_and_count(clock):
    sim = Simulator(jobs=100, initial_states={"Pending": 1}, clock=clock)
    assert len(sim.advance(fraction=0.1)) == 10
    assert len(sim.advance(count=5)) == 5
    assert len(sim.advance()) in range(8, 12)
    steps = {(c.from_state, c.to_state) for c in sim.change_log}
    assert steps <= {("Pending", "Importing"), ("Importing", "Completed"), ("Importing", "Failed")}
    still_open = sum(j.state in ("Pending", "Importing") for j in sim.jobs())
    assert len(sim.advance(count=10_000)) == still_open


def test_advance_count_spans_clusters_and_takes_all_when_fewer_are_open():
    sim = Simulator(cluster_ids=("in01-aaaaaaaaaaaaaaaa", "in02-bbbbbbbbbbbbbbbb"), jobs=4)
    open_jobs = sum(
        j.state in ("Pending", "Importing") for c in sim.cluster_ids for j in sim.jobs(c)
    )
    assert len(sim.advance(count=1_000)) == open_jobs


def test_state_change_time_is_the_true_clock_reading():
    sim = Simulator(jobs=50)
    before = datetime.now(UTC)
    changes = sim.advance(fraction=0.5)
    forced = sim.set_state(CLUSTER, sim.jobs()[0].job_id, "Weird")
    after = datetime.now(UTC)
    assert changes
    assert all(before <= c.at <= after for c in [*changes, forced])
    assert sim.change_log == [*changes, forced]


def test_set_state_accepts_any_string_and_the_list_serves_it(api, sim):
    first, second = sim.jobs()[:2]
    change = sim.set_state(CLUSTER, first.job_id, "ImportRunning")
    sim.set_state(CLUSTER, second.job_id, "Weird")
    assert change == StateChange(CLUSTER, first.job_id, first.state, "ImportRunning", change.at)
    records = {r["jobId"]: r["state"] for r in api.list(1, 100)["data"]["records"]}
    assert (records[first.job_id], records[second.job_id]) == ("ImportRunning", "Weird")
    with pytest.raises(KeyError):
        sim.set_state(CLUSTER, "nope", "Failed")


def test_forcing_the_same_state_is_not_a_change(sim):
    job = sim.jobs()[0]
    sim.set_state(CLUSTER, job.job_id, "Failed", reason="first")
    finished = sim.jobs()[0].finished_at
    sim.set_state(CLUSTER, job.job_id, "Failed", reason="second")
    assert len(sim.change_log) == 1
    assert (sim.jobs()[0].reason, sim.jobs()[0].finished_at) == ("second", finished)


def test_added_jobs_head_the_list_and_are_logged(api, sim, clock):
    added = sim.add_jobs(3)
    assert ids_of(sim.jobs()[:3]) == list(reversed(ids_of(added)))
    assert all(j.state == "Pending" and j.created_at == clock.now for j in added)
    assert api.list(1, 3)["data"]["count"] == 28
    assert [(c.from_state, c.to_state) for c in sim.change_log] == [(None, "Pending")] * 3


def test_adding_jobs_while_a_client_pages_makes_an_offset_walk_see_a_duplicate(api, sim):
    def add_before_page_two(number: int, path: str, body: dict[str, Any] | None) -> None:
        if number == 2:
            sim.add_jobs(1)

    unregister = sim.on_request(add_before_page_two)
    walked = api.walk(10)
    unregister()
    assert len(walked) == 26
    assert len(set(walked)) == 25  # the newest job was missed, the page-1 tail came twice
    assert set(ids_of(sim.jobs())) - set(walked) == {sim.jobs()[0].job_id}


def test_on_request_sees_number_path_and_body_and_can_be_unregistered(api, sim):
    seen: list[tuple[int, str, Any]] = []
    unregister = sim.on_request(lambda n, path, body: seen.append((n, path, body)))
    api.list(2, 5)
    api.progress(sim.jobs()[0].job_id, DESCRIBE_PATH)
    unregister()
    api.list()
    assert [(n, p) for n, p, _ in seen] == [(1, LIST_PATH), (2, DESCRIBE_PATH)]
    assert seen[0][2] == {"clusterId": CLUSTER, "pageSize": 5, "currentPage": 2}


def test_remove_jobs_drops_them_from_list_and_progress(api, sim):
    victims = ids_of(sim.jobs()[5:8])
    assert sim.remove_jobs(CLUSTER, [*victims, "unknown"]) == 3
    listed = [r["jobId"] for r in api.list(1, 100)["data"]["records"]]
    assert len(listed) == 22
    assert not set(victims) & set(listed)
    assert api.progress(victims[0])["code"] == 96026


def test_hidden_jobs_leave_the_list_and_come_back_unchanged(api, sim):
    before = {j.job_id: j for j in sim.jobs()}
    hidden = ids_of(sim.jobs()[3:6])
    sim.hide_jobs(CLUSTER, hidden)
    listed = [r["jobId"] for r in api.list(1, 100)["data"]["records"]]
    assert len(listed) == 22 and not set(hidden) & set(listed)

    sim.relist_jobs(hidden[:1])
    assert len(sim.jobs()) == 23
    sim.relist_jobs()
    after = {j.job_id: j for j in sim.jobs()}
    assert after == before  # same jobs, same states, same list order
    assert ids_of(sim.jobs()) == list(before)


def test_retention_drops_finished_jobs_once_they_are_that_old(make_sim, clock):
    sim = make_sim(
        jobs=10, clock=clock, retention=timedelta(hours=1), initial_states={"Pending": 1}
    )
    api = Api(sim)
    done, failed = ids_of(sim.jobs()[:2])
    sim.set_state(CLUSTER, done, "Completed")
    clock.tick(minutes=10)
    sim.set_state(CLUSTER, failed, "Failed")
    clock.tick(minutes=49, seconds=59)
    assert api.list(1, 100)["data"]["count"] == 10
    clock.tick(seconds=1)  # `done` finished exactly an hour ago
    data = api.list(1, 100)["data"]
    assert data["count"] == 9
    assert done not in {r["jobId"] for r in data["records"]}
    assert api.progress(done)["code"] == 96026
    clock.tick(minutes=10)
    assert api.list(1, 100)["data"]["count"] == 8
    assert len(sim.jobs()) == 8


def test_retention_applies_to_the_initial_population(clock):
    sim = Simulator(jobs=500, clock=clock, retention=timedelta(minutes=30))
    assert all(
        j.finished_at is None or j.finished_at > clock.now - timedelta(minutes=30)
        for j in sim.jobs()
    )
    clock.tick(days=1)
    assert all(j.finished_at is None for j in sim.jobs())


# -- faults ------------------------------------------------------------------------------------


def test_fault_status_fires_at_chosen_request_numbers(api, sim):
    fault = sim.add_fault(Fault(status=503, on_requests={2, 4}))
    responses = [api.post(LIST_PATH, {"clusterId": CLUSTER}) for _ in range(5)]
    assert [r.status_code for r in responses] == [200, 503, 200, 503, 200]
    assert responses[1].json() == {"code": 503, "message": "Service Unavailable"}
    assert fault.fired == 2
    assert [(r.number, r.status) for r in sim.requests] == [
        (1, 200),
        (2, 503),
        (3, 200),
        (4, 503),
        (5, 200),
    ]


def test_fault_times_limits_firings_and_reset_restarts_numbering(api, sim):
    fault = sim.add_fault(Fault(status=500, times=2))
    assert [api.post(LIST_PATH, {"clusterId": CLUSTER}).status_code for _ in range(3)] == [
        500,
        500,
        200,
    ]
    assert fault.fired == 2
    sim.clear_faults()
    sim.reset_counters()
    sim.add_fault(Fault(status=502, on_requests={1}))
    assert api.post(LIST_PATH, {"clusterId": CLUSTER}).status_code == 502
    assert (sim.request_count, len(sim.requests)) == (1, 1)


def test_fault_retry_after_header(api, sim):
    sim.add_fault(Fault(status=429, retry_after="7"))
    response = api.post(LIST_PATH, {"clusterId": CLUSTER})
    assert (response.status_code, response.headers["Retry-After"]) == (429, "7")
    assert response.json()["code"] == 429


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"code": 0, "data": {"count": 25, "records": [{"jobId": "4487', "application/json"),
        (b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"),
        (b"", "application/json"),
    ],
)
def test_fault_body_replaces_the_reply_verbatim_even_with_status_200(api, sim, body, content_type):
    sim.add_fault(Fault(status=200, body=body, content_type=content_type))
    response = api.post(LIST_PATH, {"clusterId": CLUSTER})
    assert (response.status_code, response.content) == (200, body)
    assert response.headers["Content-Type"] == content_type


def test_fault_code_with_status_200_is_an_api_error_envelope(api, sim):
    sim.add_fault(Fault(status=200, code=96018, times=1))
    payload = api.post(LIST_PATH, {"clusterId": CLUSTER}).json()
    assert payload["code"] == 96018
    assert "cluster" in payload["message"].lower()
    assert api.post(LIST_PATH, {"clusterId": CLUSTER}).json()["code"] == 0


def test_fault_path_limits_it_to_one_endpoint(api, sim):
    sim.add_fault(Fault(status=500, path=DESCRIBE_PATH))
    job_id = sim.jobs()[0].job_id
    assert api.post(LIST_PATH, {"clusterId": CLUSTER}).status_code == 200
    assert api.post(DESCRIBE_PATH, {"clusterId": CLUSTER, "jobId": job_id}).status_code == 500
    assert api.post(PROGRESS_PATH, {"clusterId": CLUSTER, "jobId": job_id}).status_code == 200


def test_latency_and_fault_delay_sleep_through_the_injected_sleep(make_sim):
    slept: list[float] = []
    sim = make_sim(jobs=3, latency=0.25, sleep=slept.append)
    sim.add_fault(Fault(status=200, delay=1.5, on_requests={2}))
    api = Api(sim)
    assert [api.list()["code"] for _ in range(2)] == [0, 0]
    assert slept == [0.25, 1.75]


def test_fault_trickle_sends_the_normal_body_one_byte_per_pause(make_sim):
    slept: list[float] = []
    sim = make_sim(jobs=2, sleep=slept.append)
    sim.add_fault(Fault(trickle=0.01, times=1))
    api = Api(sim)
    response = api.post(LIST_PATH, {"clusterId": CLUSTER, "pageSize": 1})
    assert response.status_code == 200
    assert response.json()["data"]["count"] == 2
    assert slept == [0.01] * len(response.content)
    assert api.list()["code"] == 0


def test_fault_trickle_really_paces_the_bytes(make_sim):
    sim = make_sim(jobs=1)
    sim.add_fault(Fault(status=200, body=b'{"code":0}', trickle=0.02))
    started = time.perf_counter()
    response = Api(sim).post(LIST_PATH, {"clusterId": CLUSTER})
    elapsed = time.perf_counter() - started
    assert response.content == b'{"code":0}'
    assert elapsed >= 0.15  # ten bytes, 20 ms apart


def test_fault_transform_is_the_hook_for_new_fault_kinds(api, sim):
    def lie_about_length(reply: Reply) -> Reply:
        return replace(reply, body=reply.body + b"   ").with_header("X-Fault", "padded")

    sim.add_fault(Fault(status=200, transform=lie_about_length))
    response = api.post(LIST_PATH, {"clusterId": CLUSTER})
    assert response.headers["X-Fault"] == "padded"
    assert response.content.endswith(b"}   ")


def test_the_lock_is_not_held_while_a_reply_sleeps(make_sim):
    entered, release = threading.Event(), threading.Event()

    def sleep(seconds: float) -> None:
        entered.set()
        release.wait(10)

    sim = make_sim(jobs=3, latency=1.0, sleep=sleep)
    worker = threading.Thread(target=lambda: Api(sim).list())
    worker.start()
    assert entered.wait(10)
    assert len(sim.add_jobs(1)) == 1  # would deadlock if the sleeping request held the lock
    release.set()
    worker.join(10)
    assert not worker.is_alive()


def test_ignore_current_page_serves_page_one_again(api, sim):
    first = api.list(1, 10)["data"]["records"]
    sim.ignore_current_page = True
    again = api.list(2, 10)["data"]
    assert again["records"] == first
    assert again["currentPage"] == 2
    sim.ignore_current_page = False
    assert api.list(2, 10)["data"]["records"] != first


def test_count_override_reports_an_absurd_count(make_sim):
    sim = make_sim(jobs=5, count_override=10**12)
    api = Api(sim)
    data = api.list(1, 10)["data"]
    assert (data["count"], len(data["records"])) == (10**12, 5)
    sim.count_override = None
    assert api.list()["data"]["count"] == 5


# -- speed -------------------------------------------------------------------------------------


def test_100k_jobs_serve_all_pages_to_one_session():
    started = time.perf_counter()
    sim = Simulator(jobs=100_000, seed=1)
    built = time.perf_counter() - started
    with sim:
        api = Api(sim)
        started = time.perf_counter()
        walked = api.walk(100)
        elapsed = time.perf_counter() - started
    assert len(walked) == len(set(walked)) == 100_000
    print(
        f"\n100k jobs built in {built:.2f}s; 1,001 pages in {elapsed:.2f}s ({1001 / elapsed:.0f}/s)"
    )


# -- the official client -----------------------------------------------------------------------


def test_pymilvus_helpers_work_against_simulator(api, sim):
    bulk_import = pytest.importorskip("pymilvus.bulk_writer.bulk_import")
    listed = bulk_import.list_import_jobs(
        url=sim.url, cluster_id=CLUSTER, api_key=KEY, page_size=10, current_page=2
    ).json()
    assert listed["code"] == 0
    assert [r["jobId"] for r in listed["data"]["records"]] == ids_of(sim.jobs()[10:20])
    job_id = listed["data"]["records"][0]["jobId"]
    progress = bulk_import.get_import_progress(
        url=sim.url, job_id=job_id, cluster_id=CLUSTER, api_key=KEY
    ).json()
    assert progress["data"]["jobId"] == job_id
    # pymilvus 2.5+ sends every optional field, empty: the simulator must take them as absent.
    list_body, progress_body = (r.body for r in sim.requests)
    assert list_body["clusterId"] == progress_body["clusterId"] == CLUSTER
    assert list_body.get("projectId", "") == progress_body.get("projectId", "") == ""
    with pytest.raises(bulk_import.MilvusException, match="80001"):
        bulk_import.list_import_jobs(url=sim.url, cluster_id=CLUSTER, api_key="wrong")


# -- Milvus mode -------------------------------------------------------------------------------


def test_milvus_mode_lists_everything_at_once_in_random_order(make_sim, clock):
    sim = make_sim(jobs=40, mode="milvus", clock=clock)
    api = Api(sim)
    first = api.post(LIST_PATH, {"pageSize": 5, "currentPage": 3}).json()
    second = api.post(LIST_PATH, {}).json()
    assert first["code"] == 0
    assert "count" not in first["data"]
    ids = [r["jobId"] for r in first["data"]["records"]]
    assert sorted(ids) == sorted(ids_of(sim.jobs()))
    assert ids != [r["jobId"] for r in second["data"]["records"]]
    record = first["data"]["records"][0]
    assert {"jobId", "collectionName", "state", "progress"} <= set(record)
    assert all(("reason" in r) == (r["state"] == "Failed") for r in first["data"]["records"])


def test_milvus_mode_errors_auth_and_paths(make_sim):
    sim = make_sim(jobs=3, mode="milvus")
    api = Api(sim)
    unauthenticated = api.post(LIST_PATH, {}, key=None)
    assert (unauthenticated.status_code, unauthenticated.json()["code"]) == (401, 1800)
    assert api.post(LIST_PATH, raw=b"").json()["code"] == 1801
    assert api.post(LIST_PATH, {"collectionName": "no_such_collection"}).json()["code"] == 100
    gin_404 = api.post(PROGRESS_PATH, {"jobId": "1"})
    assert (gin_404.status_code, gin_404.text) == (404, "404 page not found")
    assert api.post(DESCRIBE_PATH, {"jobId": "1"}).json()["code"] == 2100
    assert api.post(GET_PROGRESS_PATH, {}).json()["code"] == 1802
    open_sim = make_sim(jobs=2, mode="milvus", api_key=None)
    assert Api(open_sim, key=None).post(LIST_PATH, {}).json()["code"] == 0


def test_milvus_mode_describe_uses_local_offset_and_detail_states(make_sim, clock):
    sim = make_sim(jobs=3, mode="milvus", clock=clock, initial_states={"Importing": 1})
    api = Api(sim)
    done, failed, running = ids_of(sim.jobs())
    sim.set_state(CLUSTER, done, "Completed")
    sim.set_state(CLUSTER, failed, "Failed")
    described = {
        j: api.post(DESCRIBE_PATH, {"jobId": j}).json()["data"] for j in ids_of(sim.jobs())
    }
    assert described[done]["completeTime"] == "2024-04-01T14:00:00+08:00"
    assert described[failed]["completeTime"] == ""
    assert described[running]["details"][0]["state"] == "InProgress"
    assert 10 <= described[running]["progress"] <= 90


def test_milvus_mode_keeps_finished_jobs_three_hours(make_sim, clock):
    sim = make_sim(jobs=2, mode="milvus", clock=clock, initial_states={"Pending": 1})
    sim.set_state(CLUSTER, sim.jobs()[0].job_id, "Completed")
    clock.tick(hours=2, minutes=59)
    assert len(sim.jobs()) == 2
    clock.tick(minutes=1)
    assert len(sim.jobs()) == 1


def test_held_jobs_stay_where_they_are_and_the_failure_ratio_is_settable():
    sim = Simulator(cluster_ids=("c1",), jobs=0, seed=3)
    held, *others = sim.add_jobs(20, "c1")
    sim.hold_jobs("c1", [held.job_id])
    sim.failure_ratio = 1.0

    for _ in range(3):
        sim.advance(fraction=1.0)

    states = {j.job_id: j.state for j in sim.jobs("c1")}
    assert states[held.job_id] == "Pending"
    assert {states[j.job_id] for j in others} == {"Failed"}
    with pytest.raises(ValueError, match="failure_ratio"):
        sim.failure_ratio = 1.5
