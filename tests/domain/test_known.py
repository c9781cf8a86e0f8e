"""What a pass keeps of the stored open jobs: a compact lookup, and the due jobs it could ask."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from jobsync.domain.known import LeastRecentlyAsked, OpenJobs

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def test_open_jobs_answer_state_and_progress_of_the_jobs_they_hold_and_none_for_others():
    jobs = OpenJobs(
        [
            ("j1", "Importing", 40),
            ("j2", "Pending", None),
            ("j3", "ImportRunning", 0),
            ("j4", None, 7),
        ]
    )
    assert len(jobs) == 4
    assert jobs.get("j1") == ("Importing", 40)
    assert jobs.get("j2") == ("Pending", None)
    assert jobs.get("j3") == ("ImportRunning", 0)
    assert jobs.get("j4") == (None, 7)
    assert jobs.get("j5") is None and jobs.get("") is None
    assert len(OpenJobs()) == 0 and OpenJobs().get("j1") is None
    assert repr(jobs) == "OpenJobs(4 jobs)"


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=12),
        st.tuples(
            st.sampled_from([None, "Pending", "Importing", "Weird 'state'"]),
            st.one_of(st.none(), st.integers(-(2**62), 2**62)),
        ),
        max_size=60,
    ),
    st.lists(st.text(max_size=12), max_size=20),
)
def test_open_jobs_are_a_dict_in_18_bytes_a_job(stored, others):
    jobs = OpenJobs((job_id, raw, progress) for job_id, (raw, progress) in stored.items())
    for job_id in [*stored, *others]:
        assert jobs.get(job_id) == stored.get(job_id)


def _asked(minutes_ago: float | None) -> datetime | None:
    return None if minutes_ago is None else T0 - timedelta(minutes=minutes_ago)


def test_least_recently_asked_keeps_the_never_asked_then_the_oldest_ties_in_order_added():
    ages = {"a": 5, "b": None, "c": 60, "d": 60, "e": 1, "f": None, "g": 30}
    chosen = LeastRecentlyAsked[str](4)
    for job_id, age in ages.items():
        chosen.add(job_id, _asked(age))
    assert chosen.best() == ["b", "f", "c", "d"]
    everything = LeastRecentlyAsked[str](None)
    for job_id, age in ages.items():
        everything.add(job_id, _asked(age))
    assert everything.best() == ["b", "f", "c", "d", "g", "a", "e"]
    assert LeastRecentlyAsked[str](0).best() == []


@given(st.lists(st.one_of(st.none(), st.integers(0, 50)), max_size=80), st.integers(0, 30))
def test_least_recently_asked_is_a_prefix_of_the_full_order(ages, limit):
    everything = LeastRecentlyAsked[int](None)
    bounded = LeastRecentlyAsked[int](limit)
    for n, age in enumerate(ages):
        everything.add(n, _asked(age))
        bounded.add(n, _asked(age))
    assert bounded.best() == everything.best()[:limit]
