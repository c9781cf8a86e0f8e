"""Notifications end to end, on both databases: passes over the simulator decide events, Apprise's
``json://`` target posts them to a receiver on loopback, and the receiver's record is the truth.

Time is an injected clock, so "stuck for two hours" takes no time; nothing sleeps.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from jobsync.config import NotifySettings, NotifyTarget
from jobsync.domain.notifications import MAX_ATTEMPTS, Event, event_key
from jobsync.observability.redact import Secret
from jobsync.reporting.status import source_status
from jobsync.service.notify import Notifier
from jobsync.service.sync import sync_all
from jobsync.simulator import LIST_PATH, Fault, Simulator
from jobsync.storage.notifications import failed_streak, record_events
from jobsync.storage.schema import notifications, sync_runs
from jobsync.storage.store import apply_pass, start_run
from tests.conftest import CLUSTER, count_rows, settings_for, snapshot_of

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
OPEN = ("Pending", "Importing")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def targets(*urls: str, **settings: object) -> NotifySettings:
    return NotifySettings(
        targets=tuple(NotifyTarget(Secret(u), f"target {i}") for i, u in enumerate(urls, 1)),
        **settings,  # type: ignore[arg-type]
    )


def sync(engine, sim, db_url, clock, notify, **overrides):
    settings = settings_for(sim, db_url, notify=notify, **overrides)
    results = sync_all(engine, settings, clock=clock)
    return results


def rows(engine) -> list[dict]:
    with engine.connect() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(select(notifications).order_by(notifications.c.id))
        ]


def open_jobs(sim: Simulator) -> list[str]:
    return [j.job_id for j in sim.jobs(CLUSTER) if j.state in OPEN]


def fail_jobs_while_the_target_is_down(
    engine, sim, db_url, clock, receiver, status: int, jobs: int = 1
) -> NotifySettings:
    """A first pass, then ``jobs`` open jobs fail while the one target answers ``status``."""
    notify = targets(receiver.url())
    sync(engine, sim, db_url, clock, notify)
    for job in open_jobs(sim)[:jobs]:
        sim.set_state(CLUSTER, job, "Failed")
    receiver.fail("hook", status)
    return notify


def test_a_first_sync_announces_nothing_and_a_later_failure_once_with_reason_and_window(
    engine, sim, db_url, clock, receiver
):
    notify = targets(receiver.url())
    [first] = sync(engine, sim, db_url, clock, notify, details=True)
    assert first.ok and any(j.state == "Failed" for j in sim.jobs(CLUSTER))  # a backlog
    assert receiver.arrivals == []

    job = open_jobs(sim)[0]
    sim.set_state(CLUSTER, job, "Failed", reason="file s3://bucket/part-7.parquet is not Parquet")
    clock.advance(minutes=5)
    sync(engine, sim, db_url, clock, notify, details=True)
    clock.advance(minutes=5)
    sync(engine, sim, db_url, clock, notify, details=True)

    [arrival] = receiver.accepted()
    assert arrival.type == "failure"
    assert arrival.title == f"Import job failed in {CLUSTER}"
    assert f"Job {job} (collection " in arrival.message
    assert "failed: file s3://bucket/part-7.parquet is not Parquet." in arrival.message
    assert "It failed after 2026-03-02T09:00:00Z and by 2026-03-02T09:05:00Z" in arrival.message
    [row] = rows(engine)
    assert arrival.keys == [row["event_key"]]
    assert (row["kind"], row["cluster_id"], row["job_id"], row["attempts"]) == (
        "job_failed",
        CLUSTER,
        job,
        1,
    )
    assert row["sent_at"] == T0 + timedelta(minutes=5)
    assert json.loads(row["payload"])["reason"] == "file s3://bucket/part-7.parquet is not Parquet"


def test_a_job_that_starts_and_fails_between_passes_is_announced(
    engine, sim, db_url, clock, receiver
):
    notify = targets(receiver.url())
    sync(engine, sim, db_url, clock, notify)
    [new] = sim.add_jobs(1, CLUSTER)
    sim.set_state(CLUSTER, new.job_id, "Failed", reason="no such bucket")
    clock.advance(minutes=1)
    sync(engine, sim, db_url, clock, notify)

    [arrival] = receiver.accepted()
    assert f"Job {new.job_id}" in arrival.message and "(first seen failed)" in arrival.message


def test_jobs_stuck_past_the_threshold_come_once_in_one_digest(
    engine, sim, db_url, clock, receiver
):
    notify = targets(receiver.url())
    sync(engine, sim, db_url, clock, notify)
    stuck = open_jobs(sim)
    assert len(stuck) > notify.digest_after

    clock.advance(hours=1, minutes=59)
    sync(engine, sim, db_url, clock, notify)
    assert receiver.arrivals == []
    clock.advance(minutes=2)
    sync(engine, sim, db_url, clock, notify)
    clock.advance(hours=5)
    sync(engine, sim, db_url, clock, notify)

    [digest] = receiver.accepted()
    assert digest.title == f"{len(stuck)} import job events in {CLUSTER}"
    assert digest.type == "warning"
    assert f"{len(stuck)} jobs stuck." in digest.message
    assert len(set(digest.keys)) == len(stuck)
    assert count_rows(engine, notifications, notifications.c.sent_at.is_(None)) == 0


@pytest.mark.parametrize("one_by_one", [True, False])
def test_events_come_one_by_one_up_to_digest_after_and_in_a_digest_beyond(
    engine, sim, db_url, clock, receiver, one_by_one
):
    sync(engine, sim, db_url, clock, targets(receiver.url()))
    stuck = len(open_jobs(sim))
    notify = targets(receiver.url(), digest_after=stuck if one_by_one else stuck - 1)
    clock.advance(hours=3)
    sync(engine, sim, db_url, clock, notify)

    arrivals = receiver.accepted()
    assert len(arrivals) == (stuck if one_by_one else 1)
    assert sum(len(a.keys) for a in arrivals) == stuck


def test_stuck_jobs_are_not_announced_when_turned_off(engine, sim, db_url, clock, receiver):
    notify = targets(receiver.url(), stuck_after=None)
    sync(engine, sim, db_url, clock, notify)
    clock.advance(days=3)
    sync(engine, sim, db_url, clock, notify)
    assert receiver.arrivals == []


def test_a_source_failing_passes_in_a_row_is_announced_once_and_so_is_its_recovery(
    engine, sim, db_url, clock, receiver
):
    notify = targets(receiver.url(), stuck_after=None)
    sync(engine, sim, db_url, clock, notify)
    rejected = sim.add_fault(Fault(code=80001, status=200, path=LIST_PATH))
    for passes in range(1, 6):
        clock.advance(minutes=1)
        [result] = sync(engine, sim, db_url, clock, notify)
        assert not result.ok
        assert len(receiver.accepted()) == (0 if passes < 3 else 1), passes
    sim.clear_faults()
    clock.advance(minutes=1)
    sync(engine, sim, db_url, clock, notify)
    clock.advance(minutes=1)
    sync(engine, sim, db_url, clock, notify)

    failing, recovered = receiver.accepted()
    assert rejected.fired == 5
    assert failing.title == f"jobsync cannot sync {CLUSTER}"
    assert "The last 3 passes over" in failing.message and "Last error: " in failing.message
    assert "Failing since 2026-03-02T09:01:00Z." in failing.message
    assert recovered.title == f"jobsync syncs {CLUSTER} again"
    assert "synced again after 5 failed passes" in recovered.message
    assert recovered.type == "success"


def test_a_failed_delivery_is_retried_on_the_next_pass_and_shown_until_then(
    engine, sim, db_url, clock, receiver
):
    notify = fail_jobs_while_the_target_is_down(engine, sim, db_url, clock, receiver, 503)
    clock.advance(minutes=1)
    sync(engine, sim, db_url, clock, notify)

    assert len(receiver.arrivals) == 1 and receiver.accepted() == []
    [row] = source_status(engine, overdue_after=3600, now=clock.now)
    assert (row["notify_pending"], row["notify_failed"]) == (1, 0)
    assert row["notify_error"].startswith("target 1: ")
    assert "503" in row["notify_error"]

    receiver.fail("hook", None)
    clock.advance(minutes=1)
    sync(engine, sim, db_url, clock, notify)
    clock.advance(minutes=1)
    sync(engine, sim, db_url, clock, notify)

    assert len(receiver.accepted()) == 1
    [row] = source_status(engine, overdue_after=3600, now=clock.now)
    assert (row["notify_pending"], row["notify_failed"], row["notify_error"]) == (0, 0, None)
    assert rows(engine)[0]["attempts"] == 2


def test_delivery_gives_up_after_the_last_attempt_and_status_says_so(
    engine, sim, db_url, clock, receiver
):
    notify = fail_jobs_while_the_target_is_down(engine, sim, db_url, clock, receiver, 500)
    for _ in range(MAX_ATTEMPTS + 3):
        clock.advance(minutes=1)
        sync(engine, sim, db_url, clock, notify)

    assert len(receiver.arrivals) == MAX_ATTEMPTS
    [row] = source_status(engine, overdue_after=3600, now=clock.now)
    assert (row["notify_pending"], row["notify_failed"]) == (0, 1)
    assert "500" in row["notify_error"]


def test_a_target_that_failed_gets_the_message_later_and_the_others_only_once(
    engine, sim, db_url, clock, receiver
):
    notify = targets(receiver.url("a"), receiver.url("b"))
    sync(engine, sim, db_url, clock, notify)
    sim.set_state(CLUSTER, open_jobs(sim)[0], "Failed")
    receiver.fail("b", 500)
    for _ in range(2):
        clock.advance(minutes=1)
        sync(engine, sim, db_url, clock, notify)
    assert (len(receiver.accepted("a")), len(receiver.accepted("b"))) == (1, 0)
    [row] = rows(engine)
    assert row["sent_at"] is None and len(row["delivered_to"].split()) == 1

    receiver.fail("b", None)
    for _ in range(2):
        clock.advance(minutes=1)
        sync(engine, sim, db_url, clock, notify)

    assert receiver.keys("a") == receiver.keys("b") == {row["event_key"]: 1}
    [row] = rows(engine)
    assert row["sent_at"] is not None and len(row["delivered_to"].split()) == 2


def test_without_targets_nothing_is_decided(engine, sim, db_url, clock):
    sync(engine, sim, db_url, clock, NotifySettings())
    sim.set_state(CLUSTER, open_jobs(sim)[0], "Failed")
    clock.advance(hours=3)
    sync(engine, sim, db_url, clock, NotifySettings())
    assert rows(engine) == []


def test_events_decided_in_a_pass_that_does_not_commit_are_not_recorded(engine):
    run_id = start_run(engine, CLUSTER, T0)
    event = Event(event_key("job_failed", CLUSTER, "j1"), "job_failed", CLUSTER, "j1")

    def decide(conn, plan):
        record_events(conn, [event], created_at=T0, run_id=plan.run_id)
        raise RuntimeError("the pass dies before its commit")

    def j1_fails(decide) -> None:
        apply_pass(
            engine,
            CLUSTER,
            run_id,
            snapshot_of(T0, {"j1": "Failed"}),
            finished_at=T0,
            decide=decide,
        )

    with pytest.raises(RuntimeError):
        j1_fails(decide)
    assert rows(engine) == []
    j1_fails(lambda conn, plan: record_events(conn, [event, event], created_at=T0, run_id=7))
    assert [(r["event_key"], r["sync_run_id"]) for r in rows(engine)] == [(event.key, 7)]


def test_passes_that_were_superseded_or_stopped_neither_make_nor_break_a_streak(engine):
    def run(status: str, error: str | None = None) -> None:
        with engine.begin() as conn:
            conn.execute(
                sync_runs.insert().values(
                    cluster_id=CLUSTER, started_at=T0, status=status, error=error
                )
            )

    run("succeeded")
    run("failed", "ApiStatusError: boom")
    run("failed", "superseded: another pass of the source was applied")
    run("failed", "stopped on request before the pass finished; nothing was written")
    run("abandoned")
    run("failed", "TransportError: timed out")
    with engine.connect() as conn:
        streak = failed_streak(conn, CLUSTER)
    assert streak is not None
    assert (streak.failures, streak.last_error) == (2, "TransportError: timed out")


def test_a_payload_never_holds_a_registered_secret(engine):
    secret = Secret("json://127.0.0.1/SeCrEt-0123456789abcdef")
    event = Event(
        event_key("job_failed", CLUSTER, "j1"),
        "job_failed",
        CLUSTER,
        "j1",
        {"reason": f"posting to {secret.reveal()} failed", "collection": None},
    )
    with engine.begin() as conn:
        record_events(conn, [event], created_at=T0, run_id=None)
    [row] = rows(engine)
    assert "SeCrEt" not in row["payload"] and "***" in row["payload"]


def test_a_url_apprise_cannot_use_is_refused_before_anything_runs():
    from jobsync.errors import ConfigError

    with pytest.raises(ConfigError, match=r"notification target target 1: Apprise cannot use"):
        Notifier(targets("nosuchservice://T0SECRET99/B0SECRET99"))
    with pytest.raises(ConfigError, match="no notification targets"):
        Notifier(NotifySettings())


def test_a_target_that_fails_is_tried_once_per_pass_however_many_messages_are_due(
    engine, sim, db_url, clock, receiver
):
    notify = fail_jobs_while_the_target_is_down(engine, sim, db_url, clock, receiver, 503, jobs=3)
    clock.advance(minutes=1)
    sync(engine, sim, db_url, clock, notify)

    assert len(receiver.arrivals) == 1
    first, *untried = rows(engine)
    assert "503" in first["last_error"]
    assert [
        r["last_error"].startswith("target 1: not tried after a failure: ") for r in untried
    ] == [
        True,
        True,
    ]

    receiver.fail("hook", None)
    clock.advance(minutes=1)
    sync(engine, sim, db_url, clock, notify)
    assert len(receiver.accepted()) == 3 and len(receiver.keys()) == 3


def test_a_job_stuck_again_in_another_state_is_announced_again(
    engine, sim, db_url, clock, receiver
):
    notify = targets(receiver.url(), digest_after=100)
    sync(engine, sim, db_url, clock, notify)
    job = next(j.job_id for j in sim.jobs(CLUSTER) if j.state == "Pending")
    clock.advance(hours=3)
    sync(engine, sim, db_url, clock, notify)
    sim.set_state(CLUSTER, job, "Importing")
    clock.advance(minutes=1)
    sync(engine, sim, db_url, clock, notify)
    clock.advance(hours=3)
    sync(engine, sim, db_url, clock, notify)
    clock.advance(hours=3)
    sync(engine, sim, db_url, clock, notify)

    about = [a.message.splitlines()[0] for a in receiver.accepted() if f"Job {job} " in a.message]
    assert len(about) == 2
    assert "has been Pending for 3h00m" in about[0]
    assert "has been Importing for 3h00m" in about[1]
    assert sum(receiver.keys().values()) == len(receiver.keys())  # nothing twice
