"""What a running daemon really exports, for the tests of the rules and the dashboard."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobsync.simulator import Simulator
from tests import polling
from tests.conftest import API_KEY, CLUSTER
from tests.deploy.promql import exported_names

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DEADLINE = 30.0


def poll(predicate: Callable[[], Any], what: str, timeout: float = DEADLINE) -> Any:
    return polling.poll(predicate, what, timeout, interval=0.05)


@pytest.fixture(scope="session")
def daemon_metrics(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``/metrics`` of a real ``jobsync daemon`` after one successful pass over the simulator."""
    tmp = tmp_path_factory.mktemp("daemon")
    err = tmp / "daemon.err"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JOBSYNC_", "ZILLIZ_"))}
    env["JOBSYNC_API_KEY"] = API_KEY
    with Simulator(cluster_ids=(CLUSTER,), jobs=20, api_key=API_KEY, seed=5) as sim:
        args = ["--every", "1h", "--metrics-port", "0", "--db", f"sqlite:///{tmp / 'd.db'}"]
        args += ["--base-url", sim.url, "--cluster-id", CLUSTER]
        with err.open("wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "jobsync", "daemon", *args],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                cwd=tmp,
                env=env,
            )
        try:
            found = poll(
                lambda: re.search(r"metrics at (http://127\.0\.0\.1:\d+)/metrics", err.read_text()),
                "the daemon's metrics address in its log",
            )

            def after_a_pass() -> str | None:
                with urllib.request.urlopen(f"{found[1]}/metrics", timeout=5) as response:
                    text = response.read().decode()
                ok = re.search(
                    r'^jobsync_passes_total\{[^}]*status="succeeded"[^}]*\} [1-9]', text, re.M
                )
                return text if ok else None

            return str(poll(after_a_pass, "a successful pass in /metrics"))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def exported_metrics(daemon_metrics: str) -> frozenset[str]:
    names = exported_names(daemon_metrics)
    assert "jobsync_passes_total" in names  # the fixture read what it meant to
    return names
