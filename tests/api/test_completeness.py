"""A snapshot is called complete only when it provably lists every job that was listed both when
its walk began and when it ended (see ``jobsync.api.listing``): arrivals at the head keep it complete
in one walk; removals, arrivals out of place and lists in no order make it walk again or end
incomplete with a reason; a server that lists the same jobs forever is cut short."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
from sqlalchemy import select

from jobsync.api.client import ApiClient
from jobsync.api.listing import HEAD_PAGES, STALE_PAGES, fetch_snapshot
from jobsync.config import Source
from jobsync.errors import ProtocolError
from jobsync.observability.redact import Secret
from jobsync.service.sync import sync_source
from jobsync.simulator import LIST_PATH, Fault, Reply, Simulator
from jobsync.storage.schema import import_job_records, sync_runs
from tests.conftest import API_KEY, CLUSTER, FAST_HTTP, settings_for

FAST = replace(
    FAST_HTTP,
    max_retries=1,
    requests_per_second=1e6,
    # One page at a time: pages read concurrently may be answered out of order, and a later
    # page answered before an earlier one can skip a job that arrivals pushed between them
    # (the count shows it, and the list is walked again). Tests here place arrivals exactly.
    page_concurrency=1,
)
PAGE = 10


@pytest.fixture
def client(sim):
    with ApiClient(sim.url, Secret(API_KEY), FAST) as c:
        yield c


def _source(sim: Simulator) -> Source:
    return Source(name=CLUSTER, cluster_id=CLUSTER, base_url=sim.url, api_key=Secret(API_KEY))


def _list_requests(sim: Simulator) -> int:
    return sum(1 for r in sim.requests if r.path == LIST_PATH)


def _on_list_page(sim: Simulator, pages: set[int], action) -> None:
    """Run ``action`` before the first reply to each list page in ``pages`` of the first walk."""
    done: set[int] = set()

    def hook(number: int, path: str, body: dict | None) -> None:
        page = (body or {}).get("currentPage")
        if path == LIST_PATH and page in pages and page not in done:
            done.add(page)
            action()

    sim.on_request(hook)


@pytest.mark.parametrize(
    ("arrivals", "page"), [(1, 2), (3, 3), (PAGE - 1, 4), (PAGE, 3), (PAGE, 6), (2 * PAGE + 5, 6)]
)
def test_arrivals_at_the_head_leave_one_walk_complete(sim, client, arrivals, page):
    """New jobs push the others to later pages (duplicates, never a skip): one walk, plus the
    head read again down to the first job the walk saw, proves the snapshot complete. A page
    of arrivals makes a page repeat the one before it: no longer taken for a server that
    ignores ``currentPage`` past page 2."""
    before = {j.job_id for j in sim.jobs(CLUSTER)}
    added: list[str] = []
    _on_list_page(sim, {page}, lambda: added.extend(j.job_id for j in sim.add_jobs(arrivals)))

    snap = fetch_snapshot(client, _source(sim), PAGE)

    assert snap.complete and snap.walks == 1 and snap.incomplete_reason is None
    assert before | set(added) == set(snap.jobs)  # the arrivals too, from the head
    assert snap.duplicates >= min(arrivals, PAGE)
    head_pages = arrivals // PAGE + 1
    assert _list_requests(sim) == snap.pages
    assert snap.pages - head_pages in (
        math.ceil(len(before) / PAGE) + 1,  # the walk ended on an empty or short page
        math.ceil((len(before) + arrivals) / PAGE) + 1,
    )


def test_arrivals_on_every_request_still_end_complete(sim, client):
    """A busy cluster: a job arrives before every list request."""
    sim.on_request(lambda number, path, body: sim.add_jobs(1))
    snap = fetch_snapshot(client, _source(sim), PAGE)
    assert snap.complete and snap.walks == 1
    assert set(snap.jobs) == {j.job_id for j in sim.jobs(CLUSTER)}


def test_read_concurrently_a_busy_list_ends_complete_however_many_walks_it_takes(sim):
    sim.on_request(lambda number, path, body: sim.add_jobs(1) if number % 4 == 0 else None)
    with ApiClient(
        sim.url, Secret(API_KEY), replace(FAST, page_concurrency=4, read_ahead_after=0)
    ) as client:
        snap = fetch_snapshot(client, _source(sim), PAGE)
    assert snap.complete and snap.walks <= 3
    assert {j.job_id for j in sim.jobs(CLUSTER)} - set(snap.jobs) <= {sim.jobs(CLUSTER)[0].job_id}


def test_a_removal_during_the_walk_is_not_proven_and_the_list_is_walked_again(sim, client):
    head = sim.jobs(CLUSTER)[0].job_id
    _on_list_page(sim, {2}, lambda: sim.remove_jobs(CLUSTER, [head]))
    snap = fetch_snapshot(client, _source(sim), PAGE)
    assert snap.walks == 2 and snap.complete  # the second walk met a quiet list
    assert {j.job_id for j in sim.jobs(CLUSTER)} <= set(snap.jobs)


def test_a_removal_balanced_by_an_arrival_is_caught_by_the_count(sim, client):
    """Count alone would not move; the arrival at the head shows the count is one short."""
    deep = sim.jobs(CLUSTER)[5].job_id  # on page 1: the walk has read it, so it is not missed

    def swap() -> None:
        sim.remove_jobs(CLUSTER, [deep])
        sim.add_jobs(1)

    _on_list_page(sim, {3}, swap)
    snap = fetch_snapshot(client, _source(sim), PAGE, max_walks=1)
    assert not snap.complete
    assert "50 jobs, then 50, with 1 new at its head" in (snap.incomplete_reason or "")


def test_arrivals_out_of_place_are_not_taken_for_arrivals_at_the_head(sim, client):
    """A job the walk did not see, listed below one it did, may have pushed another past a page
    boundary or come from anywhere: no proof."""
    jobs = sim.jobs(CLUSTER)
    _on_list_page(sim, {3}, lambda: sim.hide_jobs(CLUSTER, [jobs[1].job_id]))
    # Hidden after page 1 was read: the second read of page 1 lacks it, and a job the walk saw
    # on page 2 moves up: nothing new, but count fell.
    snap = fetch_snapshot(client, _source(sim), PAGE, max_walks=1)
    assert not snap.complete
    assert "49 distinct records where page 1 reported 50" in (snap.incomplete_reason or "")


def _without_count(reply: Reply) -> Reply:
    payload = json.loads(reply.body)
    payload["data"].pop("count", None)
    return Reply(reply.status, json.dumps(payload).encode(), reply.headers, reply.code)


def test_a_list_without_a_count_is_never_proven_complete_over_several_pages(sim, client):
    """A job leaving a page already read skips the first job of the next page: without count,
    nothing shows it. Walking again would meet the same server: one walk, no head read."""
    sim.add_fault(Fault(status=200, path=LIST_PATH, transform=_without_count))
    victim = sim.jobs(CLUSTER)[20].job_id  # first job of page 3
    _on_list_page(sim, {3}, lambda: sim.remove_jobs(CLUSTER, [sim.jobs(CLUSTER)[15].job_id]))
    snap = fetch_snapshot(client, _source(sim), PAGE)
    assert victim not in snap.jobs  # skipped, as offset paging does
    assert not snap.complete and snap.walks == 1
    assert "reports no count" in (snap.incomplete_reason or "")
    assert _list_requests(sim) == 5  # the walk (its last page short after the removal) alone
    # One page is one answer of the server: complete without a count.
    sim.remove_jobs(CLUSTER, [j.job_id for j in sim.jobs(CLUSTER)[PAGE - 1 :]])
    snap = fetch_snapshot(client, _source(sim), PAGE)
    assert snap.complete and len(snap.jobs) == PAGE - 1


def _shuffled(reply: Reply) -> Reply:
    payload = json.loads(reply.body)
    records = payload["data"]["records"]
    payload["data"]["records"] = records[1::2] + records[::2]
    return Reply(reply.status, json.dumps(payload).encode(), reply.headers, reply.code)


def test_a_list_in_no_order_needs_a_still_list(sim, client):
    sim.add_fault(Fault(status=200, path=LIST_PATH, transform=_shuffled))
    _on_list_page(sim, {2}, lambda: sim.add_jobs(1))
    snap = fetch_snapshot(client, _source(sim), PAGE)
    assert snap.complete and snap.walks == 2  # the second walk found the list still
    sim.on_request(lambda number, path, body: sim.add_jobs(1) if number % 7 == 0 else None)
    snap = fetch_snapshot(client, _source(sim), PAGE, max_walks=2)
    assert not snap.complete
    assert "no consistent order" in (snap.incomplete_reason or "")


def test_more_arrivals_than_the_head_pages_read_walk_again(sim, client):
    _on_list_page(sim, {3}, lambda: sim.add_jobs(PAGE * HEAD_PAGES + 1))
    snap = fetch_snapshot(client, _source(sim), PAGE, max_walks=1)
    assert not snap.complete


def _cycling(reply: Reply) -> Reply:
    """A server without ``count`` that answers every page with 10 of the same 30 jobs."""
    payload = json.loads(reply.body)
    page = _cycling.pages = getattr(_cycling, "pages", 0) + 1
    records = [{"jobId": f"job-{(page * 7 + k) % 30:03d}", "state": "Importing"} for k in range(10)]
    payload["data"] = {"records": records}
    return Reply(reply.status, json.dumps(payload).encode(), reply.headers, reply.code)


def test_a_server_that_lists_the_same_jobs_forever_is_cut_short(sim, client):
    _cycling.pages = 0
    sim.add_fault(Fault(status=200, path=LIST_PATH, transform=_cycling))
    snap = fetch_snapshot(client, _source(sim), PAGE)
    assert not snap.complete and snap.walks == 1
    assert f"{STALE_PAGES} full pages in a row" in (snap.incomplete_reason or "")
    assert snap.distinct_jobs == 30
    assert snap.pages < STALE_PAGES + 10  # not the 20,000-page cap


def test_the_reason_is_recorded_on_the_run_and_nothing_vanishes(sim, db_url, engine):
    settings = settings_for(sim, db_url, page_size=PAGE, http=FAST)
    source = settings.sources[0]
    assert sync_source(engine, source, settings).complete
    sim.add_fault(Fault(status=200, path=LIST_PATH, transform=_shuffled))
    sim.on_request(lambda number, path, body: sim.add_jobs(1) if number % 7 == 0 else None)
    results = [sync_source(engine, source, settings) for _ in range(2)]
    assert all(r.ok and not r.complete for r in results)
    with engine.connect() as conn:
        reasons = conn.execute(select(sync_runs.c.complete, sync_runs.c.incomplete_reason)).all()
        vanished = conn.execute(
            select(import_job_records.c.job_id).where(import_job_records.c.vanished_at.is_not(None))
        ).all()
    assert reasons[0] == (True, None)
    assert [complete for complete, _ in reasons[1:]] == [False, False]
    assert all("no consistent order (after 3 walks)" in reason for _, reason in reasons[1:])
    assert vanished == []


@pytest.mark.parametrize(
    "data",
    [None, {}, {"records": None}, {"count": None, "records": None}],
    ids=["no-data", "empty-data", "null-records", "null-records-and-count"],
)
def test_a_success_answer_without_a_listing_fails_the_pass_and_vanishes_nothing(
    sim, db_url, engine, data
):
    settings = settings_for(sim, db_url, page_size=PAGE)
    source = settings.sources[0]
    assert sync_source(engine, source, settings).ok
    envelope: dict[str, object] = {"code": 0}
    if data is not None:
        envelope["data"] = data
    sim.add_fault(Fault(status=200, path=LIST_PATH, body=json.dumps(envelope).encode()))
    results = [sync_source(engine, source, settings) for _ in range(2)]
    assert all(not r.ok and isinstance(r.error, ProtocolError) for r in results)
    with engine.connect() as conn:
        statuses = conn.execute(select(sync_runs.c.status).order_by(sync_runs.c.id)).scalars()
        vanished = conn.execute(
            select(import_job_records.c.job_id).where(import_job_records.c.vanished_at.is_not(None))
        ).all()
    assert list(statuses) == ["succeeded", "failed", "failed"]
    assert vanished == []


def _runs(engine) -> list[tuple[bool, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(sync_runs.c.complete, sync_runs.c.incomplete_reason).order_by(sync_runs.c.id)
        ).all()
    return [(bool(complete), reason) for complete, reason in rows]


def test_a_job_back_below_the_head_leaves_the_pass_unproven_and_vanishes_nothing(
    sim, db_url, engine
):
    """A job missed by a complete snapshot comes back below the walk while a job on a page
    already read leaves: count and page 1 end as they began, but the walk skipped a job.
    Only the pass knows the job that came back was not listed before."""
    settings = settings_for(sim, db_url, page_size=PAGE, http=FAST)
    source = settings.sources[0]
    assert sync_source(engine, source, settings).complete
    back = sim.jobs(CLUSTER)[35].job_id
    sim.hide_jobs(CLUSTER, [back])
    assert sync_source(engine, source, settings).complete  # it missed `back`, truly
    victim = sim.jobs(CLUSTER)[20].job_id  # first job of page 3

    removed: list[str] = []

    def churn() -> None:
        removed.append(sim.jobs(CLUSTER)[15].job_id)  # read already, on page 2
        sim.remove_jobs(CLUSTER, removed[-1:])
        sim.relist_jobs([back])  # below the walk, on page 4

    for _ in range(2):
        _on_list_page(sim, {3}, churn)
        result = sync_source(engine, source, settings)
        assert result.ok and not result.complete
        sim.hide_jobs(CLUSTER, [back])
        assert sync_source(engine, source, settings).complete  # `back` missed again, truly
        sim.add_jobs(1)  # the victim back at the top of page 3
        assert sim.jobs(CLUSTER)[20].job_id == victim
    reasons = [reason for complete, reason in _runs(engine) if not complete]
    assert len(reasons) == 2
    assert all(f"job {back}, not listed before, appeared below the head" in r for r in reasons)
    with engine.connect() as conn:
        vanished = conn.execute(
            select(import_job_records.c.job_id).where(import_job_records.c.vanished_at.is_not(None))
        ).all()
    # The first job removed left for good, missed by two complete passes since; the victim
    # was listed throughout.
    assert [job_id for (job_id,) in vanished] == removed[:1]


def test_jobs_arriving_at_the_head_keep_passes_proven(sim, db_url, engine):
    """Between passes, during a walk (shown by the head read again) and during a walk that is
    then read again: new jobs at the head are arrivals where the proof allows them."""
    settings = settings_for(sim, db_url, page_size=PAGE, http=FAST)
    source = settings.sources[0]
    assert sync_source(engine, source, settings).complete
    sim.add_jobs(3)
    assert sync_source(engine, source, settings).complete
    _on_list_page(sim, {3}, lambda: sim.add_jobs(2))
    assert sync_source(engine, source, settings).complete
    gone = sim.jobs(CLUSTER)[0].job_id

    def leave_and_arrive() -> None:
        sim.remove_jobs(CLUSTER, [gone])  # count falls short: walked again
        sim.add_jobs(1)

    _on_list_page(sim, {2}, leave_and_arrive)
    result = sync_source(engine, source, settings)
    assert result.complete, _runs(engine)[-1]
    assert _runs(engine) == [(True, None)] * 4
