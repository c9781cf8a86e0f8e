"""``jobsync notify test`` and ``--notify`` on the command line: exit statuses, what is printed,
and a delivery that fails without failing the sync."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from jobsync.cli import cli
from tests.conftest import API_KEY, CLUSTER

JOBSYNC = str(Path(sys.executable).with_name("jobsync"))


@pytest.fixture
def run(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith(("JOBSYNC_", "ZILLIZ_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str, env: dict[str, str] | None = None):
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)

    return invoke


def _config(tmp_path: Path, *variables: str) -> str:
    path = tmp_path / "jobsync.toml"
    names = ", ".join(f'"{v}"' for v in variables)
    path.write_text(f"[notify]\nurls_env = [{names}]\n")
    return str(path)


def test_notify_test_sends_one_message_to_every_target_and_exits_0(run, receiver, tmp_path):
    config = _config(tmp_path, "NOTIFY_A", "NOTIFY_B")
    env = {"NOTIFY_A": receiver.url("a"), "NOTIFY_B": receiver.url("b")}

    result = run("notify", "test", "--config", config, env=env)

    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "NOTIFY_A (JSON): delivered",
        "NOTIFY_B (JSON): delivered",
    ]
    assert [(a.path, a.title, a.type) for a in receiver.arrivals] == [
        ("a", "jobsync test notification", "info"),
        ("b", "jobsync test notification", "info"),
    ]
    assert "(NOTIFY_A)" in receiver.arrivals[0].message


def test_notify_test_exits_1_when_a_target_does_not_take_the_message(run, receiver, tmp_path):
    receiver.fail("b", 500)
    config = _config(tmp_path, "NOTIFY_A")
    result = run(
        "notify",
        "test",
        "--config",
        config,
        "--notify",
        receiver.url("b"),
        env={"NOTIFY_A": receiver.url("a")},
    )

    assert result.exit_code == 1
    delivered, failed = result.output.splitlines()
    assert delivered == "NOTIFY_A (JSON): delivered"
    assert failed.startswith("--notify (JSON): failed: ") and "500" in failed
    assert str(receiver.port) not in result.output


def test_notify_test_without_targets_is_a_configuration_error(run):
    result = run("notify", "test")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: no notification targets: give --notify URL")


def test_a_url_apprise_cannot_use_is_one_error_line_that_never_shows_it(tmp_path):
    token = "T0SECRET99XYZ"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBSYNC_", "ZILLIZ_"))}
    env["JOBSYNC_NOTIFY_URL"] = f"nosuchservice://{token}/B0SECRET99"
    result = subprocess.run(
        [JOBSYNC, "notify", "test"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(
        "Error: notification target --notify: Apprise cannot use this URL"
    )
    assert token.lower() not in (result.stdout + result.stderr).lower()


def test_sync_with_notify_announces_a_failure_and_exits_0(run, receiver, sim, db_url):
    args = ["sync", "--db", db_url, "--base-url", sim.url, "--cluster-id", CLUSTER]
    args += ["--notify", receiver.url()]
    env = {"JOBSYNC_API_KEY": API_KEY}
    assert run(*args, env=env).exit_code == 0
    job = next(j.job_id for j in sim.jobs(CLUSTER) if j.state == "Pending")
    sim.set_state(CLUSTER, job, "Failed")

    result = run(*args, env=env)

    assert result.exit_code == 0, result.output
    [arrival] = receiver.accepted()
    assert f"Job {job}" in arrival.message


def test_a_delivery_that_fails_is_a_warning_and_not_a_failed_sync(run, receiver, sim, db_url):
    args = ["sync", "--db", db_url, "--base-url", sim.url, "--cluster-id", CLUSTER]
    env = {"JOBSYNC_API_KEY": API_KEY, "JOBSYNC_NOTIFY_URL": receiver.url()}
    assert run(*args, env=env).exit_code == 0
    sim.set_state(
        CLUSTER, next(j.job_id for j in sim.jobs(CLUSTER) if j.state == "Pending"), "Failed"
    )
    receiver.fail("hook", 502)

    result = run(*args, env=env)

    assert result.exit_code == 0
    [warning] = [line for line in result.stderr.splitlines() if "notify" in line]
    assert "could not notify --notify of 1 event(s): " in warning
    assert "will retry on the next pass (attempt 1 of 5)" in warning
    assert str(receiver.port) not in result.stderr
