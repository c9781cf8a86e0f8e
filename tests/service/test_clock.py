"""Time only moves forward in the history: a pass whose clock reads earlier than the source's
last observation refuses to write (one line naming both times), or, within a small tolerance,
moves its times forward to it and says so. Windows never end before they start."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from jobsync.domain.fencing import CLOCK_TOLERANCE, clock_shift, pass_span, spanning
from jobsync.domain.records import JobDetails
from jobsync.errors import ClockError
from jobsync.service.sync import sync_source
from jobsync.storage.schema import (
    import_job_records,
    import_job_transitions,
    sync_runs,
    sync_sources,
)
from jobsync.storage.store import apply_pass, start_run
from tests.conftest import API_KEY, CLUSTER, count_rows, settings_for, snapshot_of

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_the_clock_rule():
    assert clock_shift(T0, None) == timedelta(0)
    assert clock_shift(T0, T0) == timedelta(0)
    assert clock_shift(T0 + timedelta(seconds=1), T0) == timedelta(0)
    assert clock_shift(T0 - timedelta(seconds=2), T0) == timedelta(seconds=2)
    assert clock_shift(T0 - CLOCK_TOLERANCE, T0) == CLOCK_TOLERANCE
    with pytest.raises(ClockError, match="2026-01-01T11:00:00"):
        clock_shift(T0 - timedelta(hours=1), T0)


def test_a_pass_spans_every_time_it_stamped():
    snapshot = snapshot_of(T0, {"a": "Pending"})
    snapshot.started_at, snapshot.finished_at = (
        T0 + timedelta(seconds=60),
        T0 + timedelta(seconds=61),
    )
    sample = JobDetails("a", None, None, None, None, None, None, None, T0 + timedelta(seconds=90))
    assert pass_span(snapshot, {}) == (T0, T0 + timedelta(seconds=61))
    assert pass_span(snapshot, {"a": sample}) == (T0, T0 + timedelta(seconds=90))
    widened = spanning(snapshot, T0, T0 + timedelta(seconds=90))
    assert (widened.started_at, widened.finished_at) == (T0, T0 + timedelta(seconds=90))
    assert spanning(widened, T0, T0) is widened


def _apply(engine, snapshot):
    run_id = start_run(engine, "c", snapshot.started_at)
    return apply_pass(engine, "c", run_id, snapshot, finished_at=snapshot.finished_at)


def test_a_clock_stepped_back_while_the_list_was_read_is_caught_too(db_url, engine):
    # Pass 2 read its clock at the start, then the clock stepped back 90 s before page 1
    # arrived: the start alone looks fine, the observations run backwards.
    _apply(engine, snapshot_of(T0, {"a": "Pending"}))
    stepped = snapshot_of(T0 - timedelta(seconds=30), {"a": "ImportRunning"})
    stepped.started_at = T0 + timedelta(seconds=60)
    with pytest.raises(ClockError, match="earlier than this source's last observation"):
        _apply(engine, stepped)
    assert count_rows(engine, import_job_transitions) == 1
    # A step within the tolerance: moved forward, and the pass spans what it saw.
    small = snapshot_of(T0 - timedelta(seconds=2), {"a": "ImportRunning", "b": "Pending"})
    small.started_at, small.finished_at = T0 + timedelta(seconds=60), T0 - timedelta(seconds=1)
    _apply(engine, small)
    assert _inverted_windows(engine) == 0
    with engine.connect() as conn:
        last = conn.execute(select(sync_sources.c.last_snapshot_at)).scalar_one()
        since = conn.execute(select(func.max(import_job_records.c.state_since))).scalar_one()
        observed = conn.execute(select(func.max(import_job_transitions.c.observed_at))).scalar()
    assert last >= since and last >= observed >= T0


def _behind(by: timedelta):
    return lambda: datetime.now(UTC) - by


def _inverted_windows(engine) -> int:
    t = import_job_transitions.c
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).where(
                    t.window_start.is_not(None), t.window_start > t.observed_at
                )
            ).scalar_one()
        )


def test_a_clock_an_hour_behind_refuses_to_write(sim, db_url, engine):
    settings = settings_for(sim, db_url)
    source = settings.sources[0]
    for _ in range(2):
        assert sync_source(engine, source, settings).ok
        sim.advance(fraction=0.5)
    before = count_rows(engine, import_job_transitions)
    result = sync_source(engine, source, settings, clock=_behind(timedelta(hours=1)))
    assert isinstance(result.error, ClockError)
    message = str(result.error)
    assert "earlier than this source's last observation" in message and "\n" not in message
    with engine.connect() as conn:
        last = conn.execute(select(sync_sources.c.last_snapshot_at)).scalar_one()
        status, error = conn.execute(
            select(sync_runs.c.status, sync_runs.c.error).where(sync_runs.c.id == result.run_id)
        ).one()
    assert last.isoformat() in message  # both times are named
    assert (status, error) == ("failed", message)
    assert count_rows(engine, import_job_transitions) == before
    # The clock set right again, the next pass writes what changed.
    assert sync_source(engine, source, settings).ok
    assert count_rows(engine, import_job_transitions) > before
    assert _inverted_windows(engine) == 0


def test_a_small_step_back_moves_the_pass_forward_and_says_so(sim, db_url, engine, caplog):
    settings = settings_for(sim, db_url)
    source = settings.sources[0]
    assert sync_source(engine, source, settings).ok
    sim.advance(fraction=1.0)
    with engine.connect() as conn:
        last = conn.execute(select(sync_sources.c.last_snapshot_at)).scalar_one()
    # Behind the last observation by about 3 s, within the tolerance.
    step = (datetime.now(UTC) - last) + timedelta(seconds=3)
    with caplog.at_level("WARNING", logger="jobsync"):
        result = sync_source(engine, source, settings, clock=_behind(step))
    assert result.ok, result.error
    assert result.counts is not None and result.counts.changed_jobs > 0
    assert "moved forward" in caplog.text
    t = import_job_transitions.c
    with engine.connect() as conn:
        earliest = conn.execute(
            select(func.min(t.observed_at)).where(t.sync_run_id == result.run_id)
        ).scalar_one()
        started = conn.execute(
            select(sync_runs.c.snapshot_started_at).where(sync_runs.c.id == result.run_id)
        ).scalar_one()
    assert earliest >= last and started >= last
    assert _inverted_windows(engine) == 0


@pytest.mark.skipif(
    shutil.which("faketime") is None and os.environ.get("JOBSYNC_TEST_REQUIRE_FAKETIME") != "1",
    reason="faketime is not installed (apt-get install faketime) to step the clock of a command",
)
def test_jobsync_sync_under_faketime_an_hour_behind_exits_1_with_one_line(sim, db_url):
    """The operator's view: ``faketime -f -1h jobsync sync`` after two passes."""
    env = {
        **os.environ,
        "JOBSYNC_API_KEY": API_KEY,
        "JOBSYNC_DATABASE_URL": db_url,
        "JOBSYNC_BASE_URL": sim.url,
        "JOBSYNC_CLUSTER_ID": CLUSTER,
    }
    command = [sys.executable, "-m", "jobsync", "sync", "--no-details"]
    for _ in range(2):
        assert subprocess.run(command, env=env, capture_output=True, timeout=60).returncode == 0
        sim.advance(fraction=0.5)
    stepped = subprocess.run(
        ["faketime", "-f", "-1h", *command], env=env, capture_output=True, text=True, timeout=60
    )
    assert stepped.returncode == 1, stepped.stderr
    lines = stepped.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), stepped.stderr
    assert "earlier than this source's last observation" in lines[0]
    assert "Traceback" not in stepped.stderr
