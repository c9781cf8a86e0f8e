"""The fault matrix, end to end through the CLI on both databases: every hostile answer from
the API gives one clear line, exit status 1, a failed run, and leaves jobs and history intact."""

from __future__ import annotations

import gzip
import json
import os
import stat

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from jobsync.cli import cli
from jobsync.simulator import Fault, Reply
from jobsync.storage.schema import import_job_records, import_job_transitions, sync_runs
from jobsync.storage.store import open_engine
from tests.conftest import API_KEY, CLUSTER, sync_args


def _gzip_bomb(reply: Reply) -> Reply:
    bomb = gzip.compress(b"[" + b" " * 50_000_000 + b"]")
    return Reply(200, bomb, (("Content-Type", "application/json"), ("Content-Encoding", "gzip")))


FAULTS = {
    "503 forever": (lambda sim: sim.add_fault(Fault(status=503)), "HTTP 503 after 5 retries"),
    "429 forever": (
        lambda sim: sim.add_fault(Fault(status=429, retry_after="99999")),
        "HTTP 429 after 5 retries",
    ),
    "truncated JSON": (
        lambda sim: sim.add_fault(Fault(status=200, body=b'{"code": 0, "data": {"records": [')),
        "not valid JSON",
    ),
    "invalid JSON": (
        lambda sim: sim.add_fault(Fault(status=200, body=b"{oops}")),
        "not valid JSON",
    ),
    "HTML with status 200": (
        lambda sim: sim.add_fault(
            Fault(
                status=200, body=b"<html><body>Maintenance</body></html>", content_type="text/html"
            )
        ),
        "not valid JSON",
    ),
    "deeply nested JSON": (
        lambda sim: sim.add_fault(Fault(status=200, body=b"[" * 200_000 + b"]" * 200_000)),
        "nested too deeply",
    ),
    "gzip bomb": (lambda sim: sim.add_fault(Fault(status=200, transform=_gzip_bomb)), "exceeds"),
    "wrong shape": (
        lambda sim: sim.add_fault(
            Fault(status=200, body=json.dumps({"code": 0, "data": 5}).encode())
        ),
        "not an object",
    ),
    "error envelope": (lambda sim: sim.add_fault(Fault(status=200, code=96018)), "code 96018"),
    "rejected key": (
        lambda sim: sim.add_fault(Fault(status=200, code=80001)),
        "API key was rejected",
    ),
    "ignores currentPage": (
        lambda sim: setattr(sim, "ignore_current_page", True),
        "ignore 'currentPage'",
    ),
    "absurd count": (lambda sim: setattr(sim, "count_override", 10**12), "hard cap"),
}


@pytest.fixture
def cli_run(no_backoff_in_tmp):

    def invoke(*args: str):
        return CliRunner().invoke(cli, list(args), env={"JOBSYNC_API_KEY": API_KEY})

    return invoke


def _dump(db_url: str) -> tuple[list, list, list]:
    engine = open_engine(db_url)
    with engine.connect() as conn:
        jobs = conn.execute(select(import_job_records).order_by(import_job_records.c.job_id)).all()
        history = conn.execute(
            select(import_job_transitions).order_by(import_job_transitions.c.id)
        ).all()
        runs = conn.execute(
            select(sync_runs.c.status, sync_runs.c.error).order_by(sync_runs.c.id)
        ).all()
    engine.dispose()
    return jobs, history, runs


@pytest.mark.parametrize("name", list(FAULTS))
def test_a_hostile_answer_fails_the_pass_cleanly(name, cli_run, sim, db_url):
    inject, expected = FAULTS[name]
    args = sync_args(sim, db_url, "--page-size", "20")
    assert cli_run(*args).exit_code == 0
    sim.advance(fraction=0.5)
    jobs_before, history_before, _ = _dump(db_url)
    inject(sim)

    result = cli_run(*args)

    assert result.exit_code == 1, result.output
    errors = result.stderr.splitlines()
    assert len(errors) == 1 and errors[0].startswith("Error: "), result.stderr
    assert expected in errors[0]
    assert "Traceback" not in result.output
    jobs_after, history_after, runs = _dump(db_url)
    assert jobs_after == jobs_before
    assert history_after == history_before
    assert runs[-1].status == "failed" and expected in runs[-1].error


def test_invalid_records_are_skipped_counted_and_valid_ones_applied(cli_run, sim, db_url):
    records = [
        {"jobId": "good-1", "collectionName": "c", "state": "Completed"},
        {"jobId": None, "state": "Failed"},
        {"collectionName": "no id"},
        {"jobId": "", "state": "Pending"},
        {"jobId": True},
        {"jobId": ["x"]},
        "not an object",
        {"jobId": 448761313698322011, "state": "Importing"},
    ]
    body = json.dumps({"code": 0, "data": {"count": len(records), "records": records}}).encode()
    sim.add_fault(Fault(status=200, body=body))

    result = cli_run("sync", "--db", db_url, "--base-url", sim.url, "--cluster-id", CLUSTER)

    assert result.exit_code == 0, result.output
    assert "snapshot incomplete" in result.output
    jobs, _history, _runs = _dump(db_url)
    assert sorted(j.job_id for j in jobs) == ["448761313698322011", "good-1"]
    engine = open_engine(db_url)
    with engine.connect() as conn:
        run = conn.execute(select(sync_runs)).one()
    engine.dispose()
    assert (run.invalid_records, run.distinct_jobs, run.complete) == (6, 2, False)


def test_hostile_text_is_stored_and_escaped_on_the_terminal(cli_run, sim, db_url):
    job = sim.jobs(CLUSTER)[0].job_id
    hostile = "Failed\x1b[2J\x07'; DROP TABLE import_jobs; --" + "é" * 5000
    sim.set_state(CLUSTER, job, hostile)
    assert (
        cli_run("sync", "--db", db_url, "--base-url", sim.url, "--cluster-id", CLUSTER).exit_code
        == 0
    )

    shown = cli_run("jobs", "--db", db_url, "--state", "Unknown")

    assert shown.exit_code == 0
    assert "\x1b" not in shown.output and "\x07" not in shown.output
    assert "\\x1b[2J" in shown.output
    as_json = json.loads(
        cli_run("jobs", "--db", db_url, "--format", "json", "--state", "Unknown").output
    )
    assert as_json[0]["raw_state"] == hostile  # stored exactly; only the table escapes


def test_a_group_readable_key_file_is_refused(cli_run, sim, db_url, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(API_KEY)
    os.chmod(key_file, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP)
    args = ["sync", "--db", db_url, "--base-url", sim.url, "--cluster-id", CLUSTER]

    result = cli_run(*args, "--api-key-file", str(key_file))

    assert result.exit_code == 2
    assert "readable by group or others" in result.output and "chmod 600" in result.output
    os.chmod(key_file, stat.S_IRUSR | stat.S_IWUSR)
    assert cli_run(*args, "--api-key-file", str(key_file)).exit_code == 0
    assert sim.request_count > 0
