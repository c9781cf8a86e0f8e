"""The daemon's monitoring parts in process: health verdicts, metrics from passes, the server."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections import Counter
from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobsync.domain.states import canonical_state
from jobsync.errors import AuthError
from jobsync.observability.metrics import Health, MetricsServer
from jobsync.service.metrics import DaemonMetrics, jobs_by_state
from jobsync.service.sync import PassResult, sync_all
from jobsync.storage.store import PassCounts
from tests.conftest import CLUSTER, settings_for


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def samples(metrics: DaemonMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def ok_result(source: str = "a", new: int = 3, changed: int = 2, vanished: int = 1) -> PassResult:
    return PassResult(
        source=source,
        run_id=1,
        ok=True,
        complete=True,
        pages=1,
        jobs=10,
        counts=PassCounts(new, changed, vanished, rows_written=6),
        retries=2,
        seconds=0.7,
    )


def test_a_new_daemon_is_healthy_for_one_window_then_not_without_a_success():
    clock = FakeClock()
    health = Health(["a"], window=30, clock=clock)

    clock.now += 30
    assert health.check()[0] is True  # the grace period
    clock.now += 0.1
    healthy, detail = health.check()
    assert healthy is False and "no success yet" in detail


def test_every_source_must_have_succeeded_within_the_window():
    clock = FakeClock()
    health = Health(["a", "b"], window=30, clock=clock)
    clock.now += 20
    health.record_success("a")
    clock.now += 20  # a succeeded 20 s ago; b never, and the grace period is over

    healthy, detail = health.check()

    assert healthy is False
    assert "a: ok" in detail and "b: stale" in detail
    health.record_success("b")
    assert health.check()[0] is True


def test_a_pass_feeds_every_metric():
    metrics = DaemonMetrics(["a"])

    metrics.record_pass(ok_result())
    metrics.record_pass(
        PassResult(
            source="a", run_id=2, ok=False, seconds=0.2, error=AuthError("no", http_status=200)
        )
    )
    metrics.set_jobs("a", {"Pending": 4, "Completed": 6})
    m = samples(metrics)

    assert m[("jobsync_passes_total", (("source", "a"), ("status", "succeeded")))] == 1
    assert m[("jobsync_passes_total", (("source", "a"), ("status", "failed")))] == 1
    assert m[("jobsync_transitions_total", (("kind", "first_seen"), ("source", "a")))] == 3
    assert m[("jobsync_transitions_total", (("kind", "change"), ("source", "a")))] == 2
    assert m[("jobsync_transitions_total", (("kind", "vanished"), ("source", "a")))] == 1
    assert m[("jobsync_retries_total", (("source", "a"),))] == 2
    assert m[("jobsync_errors_total", (("kind", "AuthError"), ("source", "a")))] == 1
    assert m[("jobsync_pass_duration_seconds_count", (("source", "a"), ("status", "failed")))] == 1
    assert m[("jobsync_pass_duration_seconds_sum", (("source", "a"), ("status", "succeeded")))] == (
        pytest.approx(0.7)
    )
    assert m[("jobsync_last_success_timestamp_seconds", (("source", "a"),))] > 0
    assert m[("jobsync_jobs", (("source", "a"), ("state", "Pending")))] == 4
    assert m[("jobsync_jobs", (("source", "a"), ("state", "Failed")))] == 0  # every state shown


def test_progress_detail_requests_are_counted_by_outcome():
    metrics = DaemonMetrics(["a"])
    m = samples(metrics)
    assert m[("jobsync_details_total", (("outcome", "failed"), ("source", "a")))] == 0

    metrics.record_pass(replace(ok_result(), details_requested=7, details_failed=2))
    m = samples(metrics)

    assert m[("jobsync_details_total", (("outcome", "ok"), ("source", "a")))] == 5
    assert m[("jobsync_details_total", (("outcome", "failed"), ("source", "a")))] == 2


def test_a_state_that_empties_drops_to_zero():
    metrics = DaemonMetrics(["a"])
    metrics.set_jobs("a", {"Pending": 4})
    metrics.set_jobs("a", {"Completed": 4})

    m = samples(metrics)

    assert m[("jobsync_jobs", (("source", "a"), ("state", "Pending")))] == 0
    assert m[("jobsync_jobs", (("source", "a"), ("state", "Completed")))] == 4


def test_two_daemons_in_one_process_keep_separate_metrics():
    first, second = DaemonMetrics(["a"]), DaemonMetrics(["a"])
    first.record_pass(ok_result())

    assert samples(first)[("jobsync_passes_total", (("source", "a"), ("status", "succeeded")))] == 1
    assert (
        samples(second)[("jobsync_passes_total", (("source", "a"), ("status", "succeeded")))] == 0
    )


def test_jobs_by_state_counts_what_a_pass_stored(engine, sim, db_url):
    sync_all(engine, settings_for(sim, db_url))
    expected = Counter(canonical_state(job.state) for job in sim.jobs(CLUSTER))

    counts = jobs_by_state(engine, CLUSTER)

    assert sum(counts.values()) == 50
    assert counts == dict(expected)
    assert jobs_by_state(engine, "another-cluster") == {}


def test_the_server_answers_metrics_healthz_and_404_until_closed():
    clock = FakeClock()
    health = Health(["a"], window=10, clock=clock)
    metrics = DaemonMetrics(["a"], health)
    server = MetricsServer("127.0.0.1", 0, metrics.registry, health)
    server.start()
    try:
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            assert b"jobsync_passes_total" in response.read()
        with urllib.request.urlopen(f"{server.url}/healthz", timeout=5) as response:
            assert response.status == 200 and response.read().startswith(b"ok\n")
        clock.now += 11
        with pytest.raises(urllib.error.HTTPError) as unhealthy:
            urllib.request.urlopen(f"{server.url}/healthz", timeout=5)
        assert unhealthy.value.code == 503
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{server.url}/other", timeout=5)
        assert missing.value.code == 404
    finally:
        server.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{server.url}/healthz", timeout=2)
