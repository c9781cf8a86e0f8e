"""The reporting views on real databases: hand-written histories against hand-computed rows,
a real sync giving identical rows on SQLite and PostgreSQL, and the revision going down and up.

Times in the fixed history are on 2024-05-01 (UTC) unless a day is given. Passes of the source
``in01-a`` start every ten minutes from 12:00:00, see their jobs one second later and finish two
seconds after starting; the last one finished at 13:00:02, which is every listed job's
``last_seen_at``.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from click.testing import CliRunner
from sqlalchemy import Engine, insert, inspect, select, text

from jobsync.cli import cli
from jobsync.service.sync import sync_source
from jobsync.simulator import Simulator
from jobsync.storage.migrate import current_revision, head_revision, migrations_dir, upgrade
from jobsync.storage.refacts import rebuild
from jobsync.storage.schema import (
    import_job_records,
    import_job_transitions,
    import_jobs,
    sync_runs,
    sync_sources,
)
from jobsync.storage.store import open_engine
from jobsync.storage.views import (
    REPORTING_VIEWS,
    active_jobs,
    daily_job_stats,
    job_durations,
    job_state_intervals,
    transition_counts,
)
from tests.conftest import API_KEY, CLUSTER, settings_for, sync_backlog_then_new_jobs

VIEW_NAMES = [
    "job_state_intervals",
    "job_durations",
    "daily_job_stats",
    "transition_counts",
    "active_jobs",
]


def t(clock: str, day: int = 1) -> datetime:
    """``t("12:00:01.2505")``: that time of 2024-05-``day``, UTC."""
    return datetime.fromisoformat(f"2024-05-{day:02d}T{clock}").replace(tzinfo=UTC)


LAST_PASS = t("13:00:02")
D1, D2 = date(2024, 5, 1), date(2024, 5, 2)


def job(
    cluster: str,
    job_id: str,
    collection: str | None,
    moves: list[tuple[str, str | None, str | None, datetime | None, datetime]],
    **record: Any,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A job's row and its transitions, ``moves`` being (kind, from, to, window_start, observed)."""
    changes = [m for m in moves if m[0] != "vanished" and m[2] is not None]
    state = changes[-1][2]
    row = {
        "cluster_id": cluster,
        "job_id": job_id,
        "collection_name": collection,
        "state": state,
        "raw_state": state,
        "first_seen_at": moves[0][4],
        "state_since": changes[-1][4],
        "last_seen_at": LAST_PASS,
        "last_seen_started_at": LAST_PASS - timedelta(seconds=2),
        "finished_at": next((m[4] for m in changes if m[2] in ("Completed", "Failed")), None),
        "listed": True,
        **record,
    }
    transitions = [
        {
            "cluster_id": cluster,
            "job_id": job_id,
            "kind": kind,
            "from_state": from_state,
            "to_state": to_state,
            "raw_from_state": from_state,
            "raw_to_state": to_state,
            "window_start": window_start,
            "observed_at": observed_at,
        }
        for kind, from_state, to_state, window_start, observed_at in moves
    ]
    return row, transitions


def fixed_jobs() -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    a = "in01-a"
    # fmt: off
    jobs = [
        # Pending, Importing, Completed, each seen for two passes; the start is known.
        job(a, "job-a", "c1", [
            ("first_seen", None, "Pending", t("11:50:00"), t("12:00:01")),
            ("change", "Pending", "Importing", t("12:10:00"), t("12:20:01")),
            ("change", "Importing", "Completed", t("12:30:00"), t("12:40:01")),
        ]),
        # Listed on the source's first pass (start unknown), at a time with microseconds;
        # Failed, with a completeTime before its finish window, which must be ignored.
        job(a, "job-b", "c1", [
            ("first_seen", None, "Importing", None, t("12:00:01.250500")),
            ("change", "Importing", "Failed", t("12:10:00"), t("12:20:01")),
        ], complete_time=t("11:00:00")),
        # completeTime inside the finish window: the finish moment, for all three figures.
        job(a, "job-c", "c1", [
            ("first_seen", None, "Pending", t("11:50:00"), t("12:00:01")),
            ("change", "Pending", "Completed", t("12:00:00"), t("12:10:01")),
        ], complete_time=t("12:05:30.123456")),
        # Back to a state it was in; completeTime equal to the end of its window counts.
        job(a, "job-d", "c2", [
            ("first_seen", None, "Pending", t("11:50:00"), t("12:00:01")),
            ("change", "Pending", "Importing", t("12:00:00"), t("12:10:01")),
            ("change", "Importing", "Pending", t("12:10:00"), t("12:20:01")),
            ("change", "Pending", "Importing", t("12:20:00"), t("12:30:01")),
            ("change", "Importing", "Completed", t("12:30:00"), t("12:40:01")),
        ], complete_time=t("12:40:01")),
        # Vanished while Importing: history kept, state unchanged, not active.
        job(a, "job-f", "c3", [
            ("first_seen", None, "Importing", t("11:50:00"), t("12:00:01")),
            ("vanished", "Importing", None, t("12:00:00"), t("12:20:02")),
        ], listed=False, last_seen_at=t("12:00:02"), vanished_at=t("12:30:02")),
        # Vanished while Importing and listed again as Completed: the state changed some time
        # after the last pass that listed it Importing began (the vanished window's start).
        job(a, "job-g", "c1", [
            ("first_seen", None, "Importing", t("11:50:00"), t("12:00:01")),
            ("vanished", "Importing", None, t("12:00:00"), t("12:10:02")),
            ("reappeared", "Importing", "Completed", t("12:20:00"), t("12:30:01")),
        ]),
        # Active.
        job(a, "job-h", "c3", [
            ("first_seen", None, "Pending", t("12:30:00"), t("12:40:01")),
            ("change", "Pending", "Importing", t("12:40:00"), t("12:50:01")),
        ], raw_state="InProgress", progress=40, imported_rows=400, total_rows=1000),
        # A state the API invented: Unknown is not terminal, so it is active.
        job(a, "job-u", "c3", [
            ("first_seen", None, "Unknown", t("12:50:00"), t("13:00:01")),
        ], raw_state="Paused"),
        # Already Completed on the source's first pass: nothing is known but that it is done.
        job(a, "job-j", "c2", [("first_seen", None, "Completed", None, t("12:00:01"))]),
        # Self-hosted Milvus (cluster_id is the source name, decimal job id): completeTime came
        # as +08:00; gone from the list three hours after it finished.
        job("onprem", "458823045123456789", "milvus_coll", [
            ("first_seen", None, "Pending", None, t("12:00:01")),
            ("change", "Pending", "Importing", t("12:00:00"), t("12:10:01")),
            ("change", "Importing", "Completed", t("12:10:00"), t("12:20:01")),
            ("vanished", "Completed", None, t("15:20:00"), t("15:30:02")),
        ], complete_time=datetime(2024, 5, 1, 20, 15, tzinfo=timezone(timedelta(hours=8))),
           listed=False, last_seen_at=t("15:20:02"), vanished_at=t("15:40:02")),
    ]
    # fmt: on
    # Percentiles on 2024-05-02: known estimates (in seconds) in scrambled order. Created in
    # (00:00:00, 00:00:02], completeTime = 00:00:01 + estimate inside a finish window
    # (00:00:02, 00:30:00].
    start = t("00:00:00", day=2)
    for collection, estimates in (
        ("p1", [42]),
        ("p2", [30, 10]),
        ("p10", [50, 10, 90, 30, 70, 20, 100, 40, 80, 60]),
    ):
        for n, seconds in enumerate(estimates):
            moves = [
                ("first_seen", None, "Importing", start, start + timedelta(seconds=2)),
                (
                    "change",
                    "Importing",
                    "Completed",
                    start + timedelta(seconds=2),
                    start + timedelta(minutes=30),
                ),
            ]
            jobs.append(
                job(
                    a,
                    f"{collection}-{n}",
                    collection,
                    moves,
                    complete_time=start + timedelta(seconds=1 + seconds),
                    listed=False,
                    last_seen_at=start + timedelta(minutes=30),
                )
            )
    return jobs


def load(engine: Engine, jobs: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> None:
    with engine.begin() as conn:
        clusters = sorted({row["cluster_id"] for row, _ in jobs})
        run_ids = {}
        for cluster in clusters:
            run_ids[cluster] = conn.execute(
                insert(sync_runs)
                .values(cluster_id=cluster, started_at=t("11:50:00"), status="succeeded")
                .returning(sync_runs.c.id)
            ).scalar_one()
        conn.execute(
            insert(sync_sources),
            [
                {"cluster_id": "in01-a", "last_snapshot_at": LAST_PASS},
                {"cluster_id": "onprem", "last_snapshot_at": t("15:40:02")},
            ],
        )
        for row, transitions in jobs:
            conn.execute(insert(import_job_records).values(**row))
            for transition in transitions:
                conn.execute(
                    insert(import_job_transitions).values(
                        **transition, sync_run_id=run_ids[row["cluster_id"]]
                    )
                )
        # History written by hand: its facts come from it, as revision 0009 derives them.
        rebuild(conn)


@pytest.fixture
def fixed(engine: Engine) -> Engine:
    load(engine, fixed_jobs())
    return engine


# The columns these tests expect, in revision 0004's order (0009 leads with a time column).
COLUMNS = {
    "job_state_intervals": (
        "cluster_id", "job_id", "collection_name", "state", "entered_window_start", "entered_at",
        "left_window_start", "left_at", "min_seconds", "max_seconds", "is_open",
    ),
    "job_durations": (
        "cluster_id", "job_id", "collection_name", "final_state", "created_window_start",
        "created_at", "finished_window_start", "finished_at", "complete_time", "min_seconds",
        "max_seconds", "estimated_seconds", "is_finished",
    ),
    "daily_job_stats": (
        "day", "cluster_id", "collection_name", "jobs_first_seen", "completed", "failed",
        "failure_rate", "p50_seconds", "p90_seconds",
    ),
    "active_jobs": (
        "cluster_id", "job_id", "collection_name", "state", "raw_state", "progress",
        "imported_rows", "total_rows", "state_since", "last_seen_at", "seconds_in_state",
    ),
}  # fmt: skip


def rows(engine: Engine, view, *where, order_by=()) -> list[tuple]:
    columns = [view.c[name] for name in COLUMNS.get(view.name, view.c.keys())]
    with engine.connect() as conn:
        query = select(*columns).where(*where).order_by(*order_by)
        return [tuple(r) for r in conn.execute(query)]


# -- job_state_intervals ---------------------------------------------------------------------

# (state, entered_window_start, entered_at, left_window_start, left_at, min, max, is_open)
# fmt: off
INTERVALS = [
    pytest.param("job-a", [
        ("Pending", t("11:50:00"), t("12:00:01"), t("12:10:00"), t("12:20:01"), 599.0, 1801.0, 0),
        ("Importing", t("12:10:00"), t("12:20:01"), t("12:30:00"), t("12:40:01"), 599.0, 1801.0, 0),
        # Open: the time known so far runs to the last pass that listed it (13:00:02).
        ("Completed", t("12:30:00"), t("12:40:01"), None, None, 1201.0, None, 1),
    ], id="closed-and-open"),
    pytest.param("job-b", [
        # 12:10:00 - 12:00:01.2505 = 598.7495 s, rounded half away from zero on both backends.
        ("Importing", None, t("12:00:01.250500"), t("12:10:00"), t("12:20:01"), 598.75, None, 0),
        ("Failed", t("12:10:00"), t("12:20:01"), None, None, 2401.0, None, 1),
    ], id="unknown-start-has-no-lower-bound"),
    pytest.param("job-d", [
        # Seen in each state by one pass only: the known time is floored at 0, never negative.
        ("Pending", t("11:50:00"), t("12:00:01"), t("12:00:00"), t("12:10:01"), 0.0, 1201.0, 0),
        ("Importing", t("12:00:00"), t("12:10:01"), t("12:10:00"), t("12:20:01"), 0.0, 1201.0, 0),
        ("Pending", t("12:10:00"), t("12:20:01"), t("12:20:00"), t("12:30:01"), 0.0, 1201.0, 0),
        ("Importing", t("12:20:00"), t("12:30:01"), t("12:30:00"), t("12:40:01"), 0.0, 1201.0, 0),
        ("Completed", t("12:30:00"), t("12:40:01"), None, None, 1201.0, None, 1),
    ], id="returning-to-a-state-gives-one-row-per-entry"),
    pytest.param("job-f", [
        ("Importing", t("11:50:00"), t("12:00:01"), None, None, 1.0, None, 1),
    ], id="vanishing-ends-no-interval-and-freezes-last-seen"),
    pytest.param("job-g", [
        # Left Importing after the last pass that listed it began (the vanished window's start).
        ("Importing", t("11:50:00"), t("12:00:01"), t("12:00:00"), t("12:30:01"), 0.0, 2401.0, 0),
        ("Completed", t("12:00:00"), t("12:30:01"), None, None, 1801.0, None, 1),
    ], id="reappearing-in-another-state"),
    pytest.param("458823045123456789", [
        ("Pending", None, t("12:00:01"), t("12:00:00"), t("12:10:01"), 0.0, None, 0),
        ("Importing", t("12:00:00"), t("12:10:01"), t("12:10:00"), t("12:20:01"), 0.0, 1201.0, 0),
        # Vanishing changes no state; the known time stops at the last listing (15:20:02).
        ("Completed", t("12:10:00"), t("12:20:01"), None, None, 10801.0, None, 1),
    ], id="milvus-job-after-vanishing"),
]
# fmt: on


@pytest.mark.parametrize(("job_id", "expected"), INTERVALS)
def test_job_state_intervals(fixed, job_id, expected):
    v = job_state_intervals
    got = rows(fixed, v, v.c.job_id == job_id, order_by=[v.c.entered_at])
    assert [r[3:] for r in got] == expected


def test_intervals_carry_the_cluster_and_collection(fixed):
    v = job_state_intervals
    (row,) = rows(fixed, v, v.c.job_id == "job-u")
    assert row[:4] == ("in01-a", "job-u", "c3", "Unknown")
    (row,) = rows(fixed, v, v.c.cluster_id == "onprem", v.c.is_open == 1)
    assert row[:3] == ("onprem", "458823045123456789", "milvus_coll")


# -- job_durations ---------------------------------------------------------------------------

# (final_state, created_window_start, created_at, finished_window_start, finished_at,
#  complete_time, min, max, estimated, is_finished)
# fmt: off
DURATIONS = [
    pytest.param("job-a", (
        "Completed", t("11:50:00"), t("12:00:01"), t("12:30:00"), t("12:40:01"), None,
        1799.0,  # 12:30:00 - 12:00:01
        3001.0,  # 12:40:01 - 11:50:00
        2400.0,  # 12:35:00.5 - 11:55:00.5
        1,
    ), id="from-observed-windows"),
    pytest.param("job-c", (
        "Completed", t("11:50:00"), t("12:00:01"), t("12:00:00"), t("12:10:01"),
        t("12:05:30.123456"),
        329.123,  # 12:05:30.123456 - 12:00:01
        930.123,  # 12:05:30.123456 - 11:50:00
        629.623,  # 12:05:30.123456 - 11:55:00.5
        1,
    ), id="complete-time-inside-the-window-tightens-all-three"),
    pytest.param("job-d", (
        "Completed", t("11:50:00"), t("12:00:01"), t("12:30:00"), t("12:40:01"), t("12:40:01"),
        2400.0, 3001.0, 2700.5, 1,
    ), id="complete-time-at-the-end-of-the-window-counts"),
    pytest.param("job-b", (
        "Failed", None, t("12:00:01.250500"), t("12:10:00"), t("12:20:01"), t("11:00:00"),
        598.75, None, None, 1,
    ), id="complete-time-outside-the-window-ignored-unknown-start-nulls"),
    pytest.param("job-j", (
        "Completed", None, t("12:00:01"), None, t("12:00:01"), None, 0.0, None, None, 1,
    ), id="finished-before-first-seen-took-at-least-zero"),
    pytest.param("job-g", (
        "Completed", t("11:50:00"), t("12:00:01"), t("12:00:00"), t("12:30:01"), None,
        # The midpoint of [0, 2401]: its finish window began before it was first seen, so
        # the minimum is floored at 0, and the estimate stays between the bounds.
        0.0, 2401.0, 1200.5, 1,
    ), id="reappearing-finished-uses-its-last-listing"),
    pytest.param("job-h", (
        None, t("12:30:00"), t("12:40:01"), None, None, None, None, None, None, 0,
    ), id="unfinished-has-no-figures"),
    pytest.param("job-f", (
        None, t("11:50:00"), t("12:00:01"), None, None, None, None, None, None, 0,
    ), id="vanished-unfinished-has-no-figures"),
    pytest.param("458823045123456789", (
        "Completed", None, t("12:00:01"), t("12:10:00"), t("12:20:01"),
        t("12:15:00"),  # 20:15:00+08:00
        899.0,  # 12:15:00 - 12:00:01
        None, None, 1,
    ), id="milvus-job-after-vanishing"),
]
# fmt: on


@pytest.mark.parametrize(("job_id", "expected"), DURATIONS)
def test_job_durations(fixed, job_id, expected):
    v = job_durations
    (row,) = rows(fixed, v, v.c.job_id == job_id)
    assert row[3:] == expected


def test_one_duration_row_per_job_with_its_cluster_and_collection(fixed):
    with fixed.connect() as conn:
        jobs = conn.execute(
            select(
                import_job_records.c.cluster_id,
                import_job_records.c.job_id,
                import_job_records.c.collection_name,
            )
        )
        expected = sorted(tuple(r) for r in jobs)
    assert sorted(r[:3] for r in rows(fixed, job_durations)) == expected


# -- daily_job_stats -------------------------------------------------------------------------


def test_daily_stats_count_first_seen_and_finished_with_failure_rate_and_percentiles(fixed):
    v = daily_job_stats
    assert rows(fixed, v, v.c.day == D1, order_by=[v.c.cluster_id, v.c.collection_name]) == [
        # Estimates of the jobs whose start was observed, 629.623, 1200.5 and 2400.0 (job-b
        # came with the backlog): nearest ranks 2 and 3.
        (D1, "in01-a", "c1", 4, 3, 1, 0.25, 1200.5, 2400.0),
        (D1, "in01-a", "c2", 2, 2, 0, 0.0, 2700.5, 2700.5),
        # nothing finished: no failure rate, no percentiles
        (D1, "in01-a", "c3", 3, 0, 0, None, None, None),
        (D1, "onprem", "milvus_coll", 1, 1, 0, 0.0, None, None),
    ]


@pytest.mark.parametrize(
    ("collection", "p50", "p90"),
    [("p1", 42.0, 42.0), ("p2", 10.0, 30.0), ("p10", 50.0, 90.0)],
)
def test_nearest_rank_percentiles_of_one_two_and_ten_values(fixed, collection, p50, p90):
    v = daily_job_stats
    (row,) = rows(fixed, v, v.c.collection_name == collection)
    count = {"p1": 1, "p2": 2, "p10": 10}[collection]
    assert row == (D2, "in01-a", collection, count, count, 0, 0.0, p50, p90)


def test_days_are_utc_whatever_the_session_time_zone(fixed):
    with fixed.connect() as conn:
        if fixed.dialect.name == "postgresql":
            conn.execute(text("SET TIME ZONE 'Pacific/Kiritimati'"))  # UTC+14
        days = conn.execute(select(daily_job_stats.c.day).distinct()).scalars().all()
        counted = conn.execute(select(transition_counts.c.day).distinct()).scalars().all()
    assert sorted(days) == sorted(counted) == [D1, D2]


# -- transition_counts -----------------------------------------------------------------------


def test_transition_counts_per_day_cluster_kind_and_states(fixed):
    expected = Counter(
        (
            tr["observed_at"].date(),
            tr["cluster_id"],
            tr["kind"],
            tr["from_state"],
            tr["to_state"],
        )
        for _row, transitions in fixed_jobs()
        for tr in transitions
    )
    got = {r[:5]: r[5] for r in rows(fixed, transition_counts)}
    assert got == dict(expected)
    assert got[(D1, "in01-a", "change", "Pending", "Importing")] == 4
    assert got[(D1, "in01-a", "vanished", "Importing", None)] == 2
    assert got[(D2, "in01-a", "first_seen", None, "Importing")] == 13


# -- active_jobs -----------------------------------------------------------------------------


def test_active_jobs_are_unfinished_and_not_vanished(fixed):
    v = active_jobs
    # fmt: off
    assert rows(fixed, v, order_by=[v.c.job_id]) == [
        ("in01-a", "job-h", "c3", "Importing", "InProgress", 40, 400, 1000,
         t("12:50:01"), LAST_PASS, 601.0),
        ("in01-a", "job-u", "c3", "Unknown", "Paused", None, None, None,
         t("13:00:01"), LAST_PASS, 1.0),
    ]
    # fmt: on


def test_last_seen_at_of_active_jobs_is_the_one_import_jobs_shows(fixed):
    with fixed.connect() as conn:
        shown = dict(conn.execute(select(import_jobs.c.job_id, import_jobs.c.last_seen_at)).all())
        active = conn.execute(select(active_jobs.c.job_id, active_jobs.c.last_seen_at)).all()
    assert active and all(shown[job_id] == seen for job_id, seen in active)


# -- a real sync, the same on both backends --------------------------------------------------


class StepClock:
    """Every call is 1.000250 s after the previous one; ``jump`` moves it on between passes."""

    def __init__(self) -> None:
        self.now = datetime(2024, 5, 1, 23, 40, 0, 123456, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1, microseconds=250)
        return self.now

    def jump(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)


def _normalised(engine: Engine) -> dict[str, list[tuple]]:
    with engine.connect() as conn:
        return {
            view.name: sorted(
                (
                    tuple(r)
                    for r in conn.execute(
                        select(*(view.c[n] for n in COLUMNS.get(view.name, view.c.keys())))
                    )
                ),
                key=lambda r: tuple((v is None, str(v)) for v in r),
            )
            for view in REPORTING_VIEWS
        }


def test_sqlite_and_postgresql_views_give_identical_rows_after_the_same_sync(
    tmp_path, postgres_url
):
    engines = [open_engine(f"sqlite:///{tmp_path / 'parity.db'}"), open_engine(postgres_url)]
    clocks = [StepClock(), StepClock()]
    for eng in engines:
        upgrade(eng)
    with Simulator(cluster_ids=(CLUSTER,), jobs=40, api_key=API_KEY, seed=7) as sim:
        job_ids = [j.job_id for j in sim.jobs(CLUSTER)]
        for step in range(7):
            for eng, clock in zip(engines, clocks, strict=True):
                settings = settings_for(sim, "unused")
                assert sync_source(eng, settings.sources[0], settings, clock=clock).ok
                clock.jump(7 + step)
            sim.advance(fraction=0.5)
            sim.add_jobs(2, cluster_id=CLUSTER)
            if step == 1:
                sim.remove_jobs(CLUSTER, job_ids[:3])
    sqlite_rows, pg_rows = (_normalised(eng) for eng in engines)
    for eng in engines:
        eng.dispose()
    for name in VIEW_NAMES:
        assert sqlite_rows[name] == pg_rows[name], name
    # The history spans midnight and has every kind of row the views derive from.
    assert {r[0] for r in sqlite_rows["transition_counts"]} == {D1, D2}
    assert {r[2] for r in sqlite_rows["transition_counts"]} >= {"first_seen", "change", "vanished"}
    assert any(r[-1] == 1 for r in sqlite_rows["job_durations"])
    assert any(r[11] is not None for r in sqlite_rows["job_durations"])  # known estimates
    for row in sqlite_rows["job_durations"]:
        if None not in row[9:12]:
            assert row[9] <= row[11] <= row[10], row  # min <= estimated <= max
    assert sqlite_rows["active_jobs"]
    assert any(r[7] is not None for r in sqlite_rows["daily_job_stats"])  # percentiles


# -- the revision goes down and up -----------------------------------------------------------


def _views(engine: Engine) -> set[str]:
    return set(inspect(engine).get_view_names())


def _whole(engine: Engine) -> dict[str, list[tuple]]:
    """Every column of every reporting view, rows in a stable order."""
    with engine.connect() as conn:
        return {
            view.name: sorted(
                (tuple(r) for r in conn.execute(select(view))),
                key=lambda r: tuple((v is None, str(v)) for v in r),
            )
            for view in REPORTING_VIEWS
        }


def test_db_upgrade_downgrade_to_0003_and_upgrade_again(db_url, sim):
    runner = CliRunner()
    first = runner.invoke(cli, ["db", "upgrade", "--db", db_url], catch_exceptions=False)
    assert first.exit_code == 0, first.output
    engine = open_engine(db_url)
    settings = settings_for(sim, db_url)
    # Facts of both kinds, which the upgrade from 0003 must derive from the history alone as
    # the passes kept them.
    sync_backlog_then_new_jobs(engine, settings, sim)
    assert _views(engine) >= set(VIEW_NAMES) | {"import_jobs"}
    before = _whole(engine)
    backlog = job_durations.c.keys().index("backlog")
    assert {bool(row[backlog]) for row in before["job_durations"]} == {True, False}
    new_jobs = daily_job_stats.c.keys().index("new_jobs")
    assert any(row[new_jobs] for row in before["daily_job_stats"])

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["no_logging"] = True
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0003")
    assert current_revision(engine) == "0003"
    assert _views(engine) == {"import_jobs"}

    again = runner.invoke(cli, ["db", "upgrade", "--db", db_url], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert f"from 0003 to {head_revision()}" in again.output
    assert _whole(engine) == before
    engine.dispose()


def test_view_tables_are_never_created_by_create_all():
    from jobsync.storage.schema import metadata

    assert not set(VIEW_NAMES) & set(metadata.tables)
    assert [v.name for v in REPORTING_VIEWS] == VIEW_NAMES


def test_the_view_tables_declare_the_columns_the_database_has(engine):
    insp = inspect(engine)
    for view in REPORTING_VIEWS:
        assert [c["name"] for c in insp.get_columns(view.name)] == [c.name for c in view.c]


def test_import_jobs_can_be_dropped_without_touching_the_views(fixed):
    # A later revision may recreate import_jobs: PostgreSQL must not refuse because of these.
    with fixed.connect() as conn:
        trans = conn.begin()
        conn.execute(text("DROP VIEW import_jobs"))
        assert len(conn.execute(select(job_durations)).all()) == 23
        assert len(conn.execute(select(active_jobs)).all()) == 2
        trans.rollback()
    assert "import_jobs" in inspect(fixed).get_view_names()


def test_the_public_names_of_jobsync_views():
    import jobsync.storage.views

    assert sorted(jobsync.storage.views.__all__) == sorted([*VIEW_NAMES, "REPORTING_VIEWS"])
