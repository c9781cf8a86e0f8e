"""``jobsync daemon`` as a real process against the simulator and a real database.

Every test polls with a deadline instead of sleeping, and judges by what the database holds
(``sync_runs``, transitions) rather than by timing. Intervals are sub-second so the whole file
stays fast.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, inspect, select

from jobsync.cli import cli
from jobsync.simulator import Fault, Simulator
from jobsync.storage.locking import sync_lock
from jobsync.storage.schema import import_job_records, import_job_transitions, sync_runs
from jobsync.storage.store import open_engine
from tests import polling
from tests.conftest import API_KEY, CLUSTER

STOP_DEADLINE = 10.0  # the issue: SIGTERM -> exit 0 within 10 s
DEADLINE = 20.0  # for anything the tests wait on


def poll(predicate: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    """Call ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    return polling.poll(predicate, what, timeout)


class Daemon:
    """A ``python -m jobsync daemon`` subprocess with its stderr in a file."""

    def __init__(self, tmp_path: Path, args: list[str], key: str, global_args: list[str]) -> None:
        self.stderr_path = tmp_path / "daemon.err"
        self.stdout_path = tmp_path / "daemon.out"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBSYNC_", "ZILLIZ_"))}
        env["JOBSYNC_API_KEY"] = key
        with self.stderr_path.open("wb") as err, self.stdout_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jobsync", *global_args, "daemon", *args],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=tmp_path,
                env=env,
            )

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def stop(
        self, sig: int = signal.SIGTERM, *, to_another_thread: bool = False
    ) -> tuple[int, float]:
        """Send ``sig`` (to the process, or to one of its threads but the main one); return the
        exit status and how long the process took to exit."""
        began = time.monotonic()
        if to_another_thread:
            _signal_another_thread(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=STOP_DEADLINE + 5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"the daemon ignored signal {sig} for {STOP_DEADLINE + 5}s")
        return code, time.monotonic() - began

    def metrics_url(self) -> str:
        found = poll(
            lambda: (
                re.search(r"http://127\.0\.0\.1:\d+", self.stderr)
                if "/metrics" in self.stderr
                else None
            ),
            "the metrics server's address in the log",
        )
        return found.group(0)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(*args: str, key: str = API_KEY, global_args: tuple[str, ...] = ()) -> Daemon:
        d = Daemon(tmp_path, list(args), key, list(global_args))
        started.append(d)
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


@pytest.fixture
def reader(db_url: str) -> Iterator[Any]:
    engine = open_engine(db_url, readonly=True)
    yield engine
    engine.dispose()


def source_args(sim: Simulator, db_url: str) -> list[str]:
    # Scheduling is under test: progress details (up to 20 requests a second per pass, see
    # test_details.py) would only stretch the passes and add requests to the ones counted here.
    return ["--db", db_url, "--base-url", sim.url, "--cluster-id", CLUSTER, "--no-details"]


def runs(engine: Any) -> list[Any]:
    """Every sync_runs row; none while the daemon has not created the schema yet."""
    if not inspect(engine).has_table("sync_runs"):
        return []
    with engine.connect() as conn:
        return list(conn.execute(select(sync_runs).order_by(sync_runs.c.id)))


def finished(engine: Any) -> list[Any]:
    return [r for r in runs(engine) if r.status in ("succeeded", "failed")]


def succeeded(engine: Any) -> list[Any]:
    return [r for r in runs(engine) if r.status == "succeeded"]


def jobs(engine: Any) -> dict[str, tuple[str, str | None]]:
    r = import_job_records
    with engine.connect() as conn:
        return {row.job_id: (row.state, row.raw_state) for row in conn.execute(select(r))}


def assert_consistent(engine: Any) -> None:
    """No pass left running; every history row belongs to a pass that succeeded."""
    all_runs = runs(engine)
    assert [r.id for r in all_runs if r.status == "running"] == []
    ok_ids = {r.id for r in all_runs if r.status == "succeeded"}
    with engine.connect() as conn:
        run_ids = set(conn.execute(select(import_job_transitions.c.sync_run_id)).scalars())
    assert run_ids <= ok_ids


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, keyed by (sample name, sorted labels)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def health(url: str) -> int:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def stop_cleanly(d: Daemon) -> None:
    code, took = d.stop()
    assert code == 0, d.stderr
    assert took < STOP_DEADLINE, f"took {took:.1f}s to stop"
    assert "Traceback" not in d.stderr


# -- passes and stopping --------------------------------------------------------------------------


def test_daemon_makes_passes_and_sigterm_stops_it_cleanly(daemon, sim, db_url, reader):
    sim.run_progression(interval=0.1, fraction=0.2, new_jobs=1)
    d = daemon("--every", "0.3s", *source_args(sim, db_url))

    poll(lambda: len(succeeded(reader)) >= 3, "three successful passes")
    stop_cleanly(d)

    assert_consistent(reader)
    with reader.connect() as conn:
        changes = conn.execute(
            select(func.count())
            .select_from(import_job_transitions)
            .where(import_job_transitions.c.kind == "change")
        ).scalar()
    assert changes > 0  # the passes after the first saw the simulated jobs progress
    assert d.stdout_path.read_text() == ""


def test_a_pass_slower_than_the_interval_never_overlaps_the_next(daemon, db_url, reader):
    # ~0.3 s per pass (6 requests at 0.05 s) against a 0.1 s interval.
    with Simulator(cluster_ids=(CLUSTER,), jobs=250, api_key=API_KEY, latency=0.05) as sim:
        d = daemon(
            "--every", "0.1s", "--page-size", "50", "--metrics-port", "0", *source_args(sim, db_url)
        )
        poll(lambda: len(finished(reader)) >= 3, "three passes")
        overrun = ("jobsync_skipped_passes_total", (("reason", "overrun"),))
        assert scrape(d.metrics_url())[overrun] >= 1  # the scheduler did try to overlap
        stop_cleanly(d)

    passes = sorted(finished(reader), key=lambda r: r.started_at)
    # The pass in flight at SIGTERM may have been cancelled; every other one succeeded.
    assert all(r.status == "succeeded" for r in passes[:-1]), [(r.status, r.error) for r in passes]
    for before, after in itertools.pairwise(passes):
        assert after.started_at >= before.finished_at, (before, after)
    assert (passes[0].finished_at - passes[0].started_at).total_seconds() > 0.1  # really slow
    assert_consistent(reader)


@pytest.mark.parametrize(
    ("slow", "outcome"),
    [("page 2", "failed"), ("last request", "succeeded")],
    ids=["mid-walk-rolls-back", "last-request-completes"],
)
def test_sigterm_during_a_slow_request_rolls_back_or_completes_the_pass(
    slow, outcome, daemon, sim, db_url, reader
):
    # 50 jobs in pages of 10: pages 1-6 (6 is empty), then page 1 again to verify the walk.
    d = daemon("--every", "0.3s", "--page-size", "10", *source_args(sim, db_url))
    poll(lambda: succeeded(reader), "a first pass")
    sim.advance(count=10)  # the next pass has changes to write
    pages: list[int] = []
    arrived = threading.Event()

    def slow_down(number, path, body):
        page = (body or {}).get("currentPage", 1)
        # "last request": page 1 read again after the walk.
        after_walk = page == 1 and bool(pages) and pages[-1] != 1
        target = page == 2 if slow == "page 2" else after_walk
        pages.append(page)
        if target and not arrived.is_set():
            arrived.set()
            # Runs under the simulator's lock before the fault book is read: this request
            # takes the fault.
            sim.add_fault(Fault(status=200, delay=0.5, times=1))

    sim.on_request(slow_down)
    poll(arrived.is_set, f"the slow request ({slow})")
    before = jobs(reader)  # the pass in flight is still fetching: it has written nothing

    stop_cleanly(d)

    last = runs(reader)[-1]
    assert last.status == outcome, last.error
    if outcome == "failed":  # cancelled before its next request: nothing of it was written
        assert "stopped on request" in last.error
        assert jobs(reader) == before
    else:  # no request left to cancel: the pass wrote its changes
        assert last.changed_jobs == 10 and jobs(reader) != before
    assert_consistent(reader)


def _signal_another_thread(pid: int, sig: int) -> None:
    """``sig`` to a thread of process ``pid`` other than its main one, as the kernel may choose
    to deliver a signal sent to the process (tgkill, glibc 2.30 or later)."""
    tgkill = getattr(ctypes.CDLL(None, use_errno=True), "tgkill", None)
    if tgkill is None:
        pytest.skip("this C library has no tgkill() to signal one thread of another process")
    others = sorted(int(tid) for tid in os.listdir(f"/proc/{pid}/task") if int(tid) != pid)
    assert others, "the daemon runs threads beside its main one"
    assert tgkill(pid, others[0], sig) == 0, os.strerror(ctypes.get_errno())


def test_a_sigterm_another_thread_receives_stops_an_idle_daemon_at_once(daemon, sim, tmp_path):
    # Between two passes a minute apart, the main thread has nothing to wake it but the signal.
    db_url = f"sqlite:///{tmp_path / 'jobsync.db'}"
    engine = open_engine(db_url, readonly=True)
    d = daemon("--every", "60s", *source_args(sim, db_url))
    poll(lambda: succeeded(engine), "a first pass")
    code, took = d.stop(signal.SIGTERM, to_another_thread=True)
    assert code == 0 and took < 2, (code, took, d.stderr)
    assert "SIGTERM: stopping after the pass in flight" in d.stderr
    engine.dispose()


@pytest.mark.parametrize("second_to", ["the process", "another thread"])
def test_a_second_sigint_stops_at_once_and_the_pass_leaves_nothing_behind(
    daemon, sim, tmp_path, second_to
):
    db_url = f"sqlite:///{tmp_path / 'jobsync.db'}"
    engine = open_engine(db_url, readonly=True)
    d = daemon("--every", "0.3s", *source_args(sim, db_url))
    try:
        poll(lambda: succeeded(engine), "a first pass")
        sim.advance(count=10)
        before = jobs(engine)
        hanging = threading.Event()

        def hang(_number, _path, _body):
            # Under the simulator's lock, before the fault book is read: this request and every
            # later one hang, and the test knows a pass is inside one.
            if not hanging.is_set():
                sim.add_fault(Fault(status=200, delay=30.0))
                hanging.set()

        sim.on_request(hang)
        # Its run row too: a pass between two requests would end at the first SIGINT.
        poll(
            lambda: hanging.is_set() and runs(engine)[-1].status == "running",
            "a pass stuck in a request",
        )

        d.proc.send_signal(signal.SIGINT)
        poll(lambda: "stopping after the pass in flight" in d.stderr, "the first SIGINT noted")
        code, took = d.stop(signal.SIGINT, to_another_thread=second_to == "another thread")
        assert code == 0 and took < 2, (code, took, d.stderr)
        assert "SIGINT again: stopping at once" in d.stderr
        # The killed pass is left 'running' (the next sync marks it abandoned); it wrote nothing.
        assert runs(engine)[-1].status == "running"
        assert jobs(engine) == before
        ok_ids = {r.id for r in succeeded(engine)}
        with engine.connect() as conn:
            run_ids = set(conn.execute(select(import_job_transitions.c.sync_run_id)).scalars())
        assert run_ids <= ok_ids
    finally:
        sim.clear_faults()
        engine.dispose()


def test_another_process_holding_the_lock_skips_passes_without_exiting(daemon, sim, db_url, reader):
    holder = open_engine(db_url)
    try:
        with sync_lock(holder):
            d = daemon("--every", "0.2s", *source_args(sim, db_url))
            poll(lambda: d.stderr.count("skipping this pass") >= 2, "two skipped passes")
            assert d.proc.poll() is None
            assert runs(reader) == []
        poll(lambda: succeeded(reader), "a pass once the lock is free")
        stop_cleanly(d)
    finally:
        holder.dispose()
    assert "another jobsync sync is running" in d.stderr


# -- monitoring -------------------------------------------------------------------------------------


def test_metrics_match_the_database_after_a_pass(daemon, sim, db_url, reader):
    sim.add_fault(Fault(status=503, times=1))  # one retry, which both sides must count
    d = daemon("--every", "1h", "--metrics-port", "0", *source_args(sim, db_url))
    url = d.metrics_url()

    passes = ("jobsync_passes_total", (("source", CLUSTER), ("status", "succeeded")))
    samples = poll(lambda: (m := scrape(url)).get(passes) == 1 and m, "the pass in the metrics")

    [run] = runs(reader)
    assert run.status == "succeeded" and run.retries == 1
    with reader.connect() as conn:
        r = import_job_records
        by_state = dict(
            conn.execute(
                select(r.c.state, func.count()).where(r.c.vanished_at.is_(None)).group_by(r.c.state)
            ).all()
        )
        first_seen = conn.execute(
            select(func.count())
            .select_from(import_job_transitions)
            .where(import_job_transitions.c.kind == "first_seen")
        ).scalar()
    for state in ("Pending", "Importing", "Completed", "Failed", "Unknown"):
        key = ("jobsync_jobs", (("source", CLUSTER), ("state", state)))
        assert samples[key] == by_state.get(state, 0), state
    assert sum(by_state.values()) == 50
    assert samples[
        ("jobsync_transitions_total", (("kind", "first_seen"), ("source", CLUSTER)))
    ] == (first_seen)
    assert samples[("jobsync_retries_total", (("source", CLUSTER),))] == 1
    count = ("jobsync_pass_duration_seconds_count", (("source", CLUSTER), ("status", "succeeded")))
    assert samples[count] == 1
    last = samples[("jobsync_last_success_timestamp_seconds", (("source", CLUSTER),))]
    assert abs(last - run.finished_at.timestamp()) < 5
    assert samples[("jobsync_healthy", ())] == 1
    assert health(url) == 200
    stop_cleanly(d)


def test_healthz_turns_503_while_passes_keep_failing_and_recovers(daemon, sim, tmp_path):
    db_url = f"sqlite:///{tmp_path / 'jobsync.db'}"
    d = daemon(
        "--every",
        "0.2s",
        "--unhealthy-after",
        "2",
        "--metrics-port",
        "0",
        *source_args(sim, db_url),
    )
    url = d.metrics_url()
    ok = ("jobsync_passes_total", (("source", CLUSTER), ("status", "succeeded")))
    poll(lambda: scrape(url).get(ok, 0) >= 1, "a successful pass")
    assert health(url) == 200

    sim.add_fault(Fault(status=200, code=80001))  # the key is rejected from now on
    poll(lambda: health(url) == 503, "/healthz to say 503")
    samples = scrape(url)
    assert samples[("jobsync_errors_total", (("kind", "AuthError"), ("source", CLUSTER)))] >= 1
    assert samples[("jobsync_passes_total", (("source", CLUSTER), ("status", "failed")))] >= 1
    assert samples[("jobsync_healthy", ())] == 0

    sim.clear_faults()
    poll(lambda: health(url) == 200, "/healthz to recover")
    stop_cleanly(d)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/healthz", timeout=2)  # the server went with the daemon


# -- logs -------------------------------------------------------------------------------------------


def test_json_logs_are_one_object_per_line_one_per_pass_and_never_show_the_key(daemon, tmp_path):
    canary = "canary-key-7f3a9c1e5b"
    db_url = f"sqlite:///{tmp_path / 'jobsync.db'}"
    echo = json.dumps({"code": 65535, "message": f"no such token {canary}"}).encode()
    with Simulator(cluster_ids=(CLUSTER,), jobs=30, api_key=canary, seed=3) as sim:
        sim.run_progression(interval=0.1, fraction=0.3)
        d = daemon(
            "--every",
            "0.2s",
            "--log-format",
            "json",
            *source_args(sim, db_url),
            key=canary,
            global_args=("--debug",),
        )
        engine = open_engine(db_url, readonly=True)
        try:
            poll(lambda: len(succeeded(engine)) >= 2, "two passes")
            sim.add_fault(Fault(status=200, body=echo, times=1))  # a server echoing the key
            poll(lambda: any(r.status == "failed" for r in runs(engine)), "a failed pass")
            poll(lambda: len(succeeded(engine)) >= 3, "a pass after the failure")
            stop_cleanly(d)
            done = finished(engine)
        finally:
            engine.dispose()

    text = d.stderr
    assert canary not in text and canary not in d.stdout_path.read_text()
    lines = [json.loads(line) for line in text.splitlines()]  # every line is JSON
    assert all({"time", "level", "logger", "message"} <= set(entry) for entry in lines)
    pass_lines = [e for e in lines if e.get("event") == "pass"]
    assert sorted(e["run_id"] for e in pass_lines) == [r.id for r in done]
    for entry in pass_lines:
        assert entry["source"] == CLUSTER and entry["level"] in ("INFO", "ERROR")
        if entry["status"] == "succeeded":
            assert set(entry["counts"]) == {"new", "changed", "vanished"}
            assert entry["duration"] >= 0
        else:
            assert entry["error_kind"] == "ApiStatusError"
            assert "***" in entry["error"]
    assert any(e["level"] == "DEBUG" for e in lines)  # --debug gives detail


# -- configuration errors (in process: they fail before anything starts) ---------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "exactly one of --every and --cron"),
        (["--every", "1m", "--cron", "* * * * *"], "exactly one of --every and --cron"),
        (["--every", "5x"], "'5x' is not a duration"),
        (["--every", "60"], "'60' is not a duration"),
        (["--every", "0s"], "longer than zero"),
        (["--every", "0.01s"], "at least 0.1s"),
        (["--cron", "*/5 * * *"], "not a crontab expression"),
        (["--cron", "61 * * * *"], "not a crontab expression"),
        (["--cron", "0 0 30 2 *"], "never fires"),
    ],
    ids=["neither", "both", "bad-unit", "no-unit", "zero", "too-short", "4-fields", "61", "feb-30"],
)
def test_schedule_errors_exit_2_with_a_clear_message(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        cli,
        ["daemon", "--db", f"sqlite:///{tmp_path / 'x.db'}", "--cluster-id", CLUSTER, *args],
        env={"JOBSYNC_API_KEY": API_KEY, "JOBSYNC_CONFIG": None, "JOBSYNC_DATABASE_URL": None},
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "x.db").exists()  # refused before touching the database


def test_a_taken_metrics_port_is_a_config_error(tmp_path, monkeypatch):
    import socket

    monkeypatch.chdir(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            cli,
            [
                "daemon",
                "--db",
                f"sqlite:///{tmp_path / 'x.db'}",
                "--cluster-id",
                CLUSTER,
                "--every",
                "1h",
                "--metrics-port",
                str(port),
            ],
            env={"JOBSYNC_API_KEY": API_KEY, "JOBSYNC_CONFIG": None},
        )
    assert result.exit_code == 2, result.output
    assert f"cannot serve metrics on 127.0.0.1:{port}" in result.output


# -- schedules and log formats (in process) ---------------------------------------------------------


def test_schedules_know_their_interval():
    from jobsync.service.daemon import cron, every

    assert every(0.5).interval == 0.5
    assert cron("*/5 * * * *").interval == 300
    assert cron("0 9 * * 1-5").interval == 3 * 86400  # Friday to Monday is the longest gap


def test_log_formatters_remove_the_key_and_keep_one_line():
    import logging

    from jobsync.observability.logs import JsonFormatter, TextFormatter, fields
    from jobsync.observability.redact import Secret

    key = Secret('canary"key\\0123')
    record = logging.LogRecord(
        "jobsync.daemon", logging.INFO, __file__, 1, "sent %s\nFAKE line", (key.reveal(),), None
    )
    record.__dict__.update(fields(source="a", error=f"echo {key.reveal()}", counts={"new": 1}))

    as_json = JsonFormatter().format(record)
    as_text = TextFormatter().format(record)

    assert key.reveal() not in as_json and key.reveal() not in as_text
    entry = json.loads(as_json)
    assert entry["message"] == "sent ***\nFAKE line" and entry["error"] == "echo ***"
    assert entry["source"] == "a" and entry["counts"] == {"new": 1}
    assert "\n" not in as_text and "sent ***\\nFAKE line" in as_text  # no forged log lines


def test_a_pass_is_reported_as_overrun_only_past_its_interval(caplog):
    import logging

    from jobsync.service.passlog import log_overrun

    log = logging.getLogger("jobsync.test.overrun")
    with caplog.at_level(logging.WARNING, logger=log.name):
        log_overrun(log, "s", 60, 59.0, 0.5, 0)  # within the interval, waiting included
        assert caplog.records == []
        log_overrun(log, "s", 60, 130.0, 0.0, 0)  # ran through two more scheduled runs
        log_overrun(log, "s", 60, 10.0, 0.0, 1)  # short, but the scheduler skipped a run
    first, second = caplog.records
    assert "took 130.0s" in first.getMessage() and "covered 3 scheduled runs" in first.getMessage()
    assert "covered 2 scheduled runs" in second.getMessage()
