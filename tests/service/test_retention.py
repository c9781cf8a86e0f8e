"""The daemon applies ``retention`` by itself: old passes that recorded nothing are rolled up
and removed while it syncs; ``retention = "never"`` keeps them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from jobsync.storage.schema import sync_run_days, sync_runs
from jobsync.storage.store import open_engine
from tests.conftest import API_KEY, CLUSTER, count_rows, daily_passes
from tests.polling import poll

OLD = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # far more than 90 days before the test runs


def _old_passes(db_url: str, days: int = 5) -> None:
    daily_passes(db_url, "old", OLD, days)


@pytest.mark.parametrize("retention", [None, "never"])
def test_the_daemon_prunes_by_its_retention(sim, db_url, tmp_path, retention):
    _old_passes(db_url)
    config = tmp_path / "jobsync.toml"
    config.write_text("" if retention is None else f'retention = "{retention}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBSYNC_", "ZILLIZ_"))}
    env["JOBSYNC_API_KEY"] = API_KEY
    args = ["--db", db_url, "--config", str(config), "--base-url", sim.url]
    args += ["--cluster-id", CLUSTER, "--no-details", "--every", "1h"]
    err = (tmp_path / "daemon.err").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobsync", "daemon", *args],
        stdout=subprocess.DEVNULL,
        stderr=err,
        cwd=tmp_path,
        env=env,
    )
    engine = open_engine(db_url, readonly=True)
    try:
        poll(lambda: "daemon started" in (tmp_path / "daemon.err").read_text(), "start", 30)
        poll(
            lambda: (
                count_rows(engine, sync_runs, sync_runs.c.cluster_id == CLUSTER)
                and count_rows(
                    engine,
                    sync_runs,
                    sync_runs.c.status == "succeeded",
                    sync_runs.c.cluster_id == CLUSTER,
                )
            ),
            "a first pass",
            30,
        )
        if retention is None:  # the default, 90 days
            poll(lambda: count_rows(engine, sync_run_days) == 3, "the old passes rolled up", 30)
            # The log line follows the commit that the poll above saw: wait for it too.
            poll(
                lambda: "retention: removed 3 pass(es)" in (tmp_path / "daemon.err").read_text(),
                "the prune's log line",
                30,
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
        err.close()
    log = (tmp_path / "daemon.err").read_text()
    assert code == 0, log
    assert count_rows(engine, sync_runs, sync_runs.c.cluster_id == "old") == (
        2 if retention is None else 5
    )
    if retention == "never":
        assert count_rows(engine, sync_run_days) == 0 and "retention:" not in log
    engine.dispose()
