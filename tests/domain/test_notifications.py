"""Notification events on plain values: which changes are news, stable keys, the messages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jobsync.domain.history import SourceMarks, StoredJob, plan_pass
from jobsync.domain.notifications import (
    DIGEST_LINES,
    JOB_FAILED,
    JOB_STUCK,
    SOURCE_FAILING,
    SOURCE_RECOVERED,
    Event,
    FailedStreak,
    clean,
    digest,
    duration,
    failed_jobs,
    message,
    streak_events,
    stuck_job,
)
from jobsync.domain.records import JobRecord, Snapshot

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SOURCE = "in01-0123456789abcdef"


def _stored(job_id: str, state: str, raw: str | None = None) -> StoredJob:
    return StoredJob(
        job_id, "coll", state, raw or state, None, None, True, 0, False, False, None, None, None
    )


def _plan(stored: dict[str, StoredJob], listed: dict[str, tuple[str, str | None]]):
    seen = T0 + timedelta(minutes=5)
    snapshot = Snapshot(source_key=SOURCE, started_at=T0 + timedelta(minutes=4), finished_at=seen)
    snapshot.jobs = {
        job_id: JobRecord(job_id, "coll", raw, None, reason, seen)
        for job_id, (raw, reason) in listed.items()
    }
    snapshot.complete = True
    marks = SourceMarks(
        last_snapshot_started_at=T0,
        last_snapshot_at=T0 + timedelta(minutes=1),
        last_complete_started_at=T0,
        last_run_id=1,
    )
    return plan_pass(stored, snapshot, marks, run_id=2)


@pytest.mark.parametrize(
    ("before", "after", "news"),
    [
        ("Importing", "Failed", True),
        ("Pending", "ImportFailed", True),
        ("Importing", "Completed", False),
        ("Pending", "Importing", False),
        ("Failed", "ImportFailedAndCleaned", False),  # the same canonical state: no change
    ],
)
def test_a_job_that_changes_into_failed_is_news_and_nothing_else_is(before, after, news):
    plan = _plan({"j1": _stored("j1", before)}, {"j1": (after, "disk full")})

    events = failed_jobs(plan, SOURCE)

    assert [e.job_id for e in events] == (["j1"] if news else [])
    if news:
        [event] = events
        assert event.kind == JOB_FAILED
        assert event.facts["reason"] == "disk full"
        assert event.facts["from_state"] == before
        assert event.facts["window_start"] == "2026-01-01T00:00:00Z"
        assert event.facts["observed_at"] == "2026-01-01T00:05:00Z"
        assert event.facts["collection"] == "coll"


def test_a_new_job_already_failed_is_news_with_the_first_seen_window():
    plan = _plan(
        {"old": _stored("old", "Pending")},
        {"old": ("Pending", None), "new": ("Failed", "bad file")},
    )

    [event] = failed_jobs(plan, SOURCE)

    assert event.job_id == "new"
    assert event.facts["from_state"] is None
    assert event.facts["reason"] == "bad file"
    assert event.facts["window_start"] == "2026-01-01T00:00:00Z"  # the last complete snapshot
    assert "first seen failed" in message(event).body


def test_a_vanished_failed_job_listed_again_failed_is_not_news():
    stored = _stored("j1", "Failed")._replace(vanished=True, listed=False)
    plan = _plan({"j1": stored}, {"j1": ("Failed", None)})

    assert plan.transitions and plan.transitions[0]["kind"] == "reappeared"
    assert failed_jobs(plan, SOURCE) == []


def test_the_same_failure_decided_twice_has_the_same_key_and_another_job_another():
    first = failed_jobs(_plan({"j1": _stored("j1", "Pending")}, {"j1": ("Failed", None)}), SOURCE)
    again = failed_jobs(_plan({"j1": _stored("j1", "Pending")}, {"j1": ("Failed", "x")}), SOURCE)
    other = failed_jobs(_plan({"j2": _stored("j2", "Pending")}, {"j2": ("Failed", None)}), SOURCE)

    assert first[0].key == again[0].key != other[0].key
    assert first[0].key.startswith("job_failed:")


def _pending_for_three_hours(job_id: str) -> Event:
    """A stuck_job event for a job Pending since T0, seen three hours later."""
    return stuck_job(
        SOURCE,
        job_id,
        collection=None,
        state="Pending",
        raw_state="Pending",
        state_since=T0,
        progress=None,
        seen_at=T0 + timedelta(hours=3),
    )


def test_keys_stay_short_whatever_the_job_id():
    event = _pending_for_three_hours("j" * 100_000)
    assert len(event.key) <= 64


def test_a_stuck_job_is_one_event_per_stay_in_a_state():
    def stuck(state, since, seen):
        return stuck_job(
            SOURCE,
            "j1",
            collection="c",
            state=state,
            raw_state=state,
            state_since=since,
            progress=40,
            seen_at=seen,
        )

    later_pass = stuck("Importing", T0, T0 + timedelta(hours=5))
    first_pass = stuck("Importing", T0, T0 + timedelta(hours=3))
    another_state = stuck("Pending", T0, T0 + timedelta(hours=3))
    another_stay = stuck("Importing", T0 + timedelta(hours=4), T0 + timedelta(hours=7))

    assert first_pass.key == later_pass.key
    assert len({first_pass.key, another_state.key, another_stay.key}) == 3
    assert first_pass.facts["seconds"] == 3 * 3600
    text = message(first_pass).body
    assert "has been Importing for 3h00m" in text and "Progress: 40%" in text


@pytest.mark.parametrize(
    ("failures", "kinds"), [(2, []), (3, [SOURCE_FAILING]), (7, [SOURCE_FAILING])]
)
def test_a_source_is_failing_from_the_nth_failed_pass_in_a_row(failures, kinds):
    streak = FailedStreak(first_run_id=10, failures=failures, since=T0, last_error="boom")
    assert [e.kind for e in streak_events(SOURCE, streak, 3)] == kinds


def test_a_recovery_comes_with_the_failing_event_of_its_streak_under_the_same_key():
    going = FailedStreak(first_run_id=10, failures=3, since=T0, last_error="boom")
    ended = FailedStreak(
        first_run_id=10, failures=4, since=T0, recovered_at=T0 + timedelta(hours=1)
    )

    [failing] = streak_events(SOURCE, going, 3)
    again, recovered = streak_events(SOURCE, ended, 3)

    assert again.key == failing.key
    assert recovered.kind == SOURCE_RECOVERED
    assert "synced again after 4 failed passes" in message(recovered).body
    assert streak_events(SOURCE, None, 3) == []
    assert streak_events(SOURCE, FailedStreak(11, 2, T0, recovered_at=T0), 3) == []


def test_a_message_names_the_job_reason_window_and_key():
    [event] = failed_jobs(
        _plan({"j1": _stored("j1", "Importing")}, {"j1": ("Failed", "bad\nfile\x1b[31m")}), SOURCE
    )

    msg = message(event)

    assert msg.level == "failure"
    assert SOURCE in msg.title
    assert "job j1 (collection coll) failed: bad\\nfile\\x1b[31m" in msg.body.lower()
    assert (
        "after 2026-01-01T00:00:00Z and by 2026-01-01T00:05:00Z (Importing -> Failed)" in msg.body
    )
    assert msg.body.endswith(f"Event: {event.key}")


def test_a_digest_lists_every_event_with_its_key_up_to_a_limit():
    events = [_pending_for_three_hours(f"j{i}") for i in range(DIGEST_LINES + 7)]
    events += failed_jobs(_plan({"x": _stored("x", "Pending")}, {"x": ("Failed", None)}), SOURCE)

    msg = digest(SOURCE, events)

    assert msg.title == f"{len(events)} import job events in {SOURCE}"
    assert msg.body.startswith(f"{len(events)} events in {SOURCE}: 1 job failed, 57 jobs stuck.")
    assert msg.body.count("[job_stuck:") == DIGEST_LINES
    assert f"... and {len(events) - DIGEST_LINES} more" in msg.body
    assert msg.level == "failure"
    assert {e.kind for e in events} == {JOB_STUCK, JOB_FAILED}


def test_text_from_the_api_is_escaped_and_cut():
    assert clean("a\u202eb\x00") == "a\\u202eb\\x00"
    assert len(clean("x" * 10_000)) == 500
    assert [duration(s) for s in (5, 60, 90, 7500, 200_000)] == [
        "5s",
        "1m",
        "1m30s",
        "2h05m",
        "2d07h",
    ]
