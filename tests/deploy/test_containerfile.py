"""The Containerfile builds what the docs and the manifests expect (scripts/container-check.sh
builds and runs it for real), and that script skips plainly where Docker cannot run."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path

import yaml

from tests.deploy.conftest import DEPLOY, ROOT

CONTAINERFILE = ROOT / "Containerfile"
CHECK = ROOT / "scripts" / "container-check.sh"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments left out."""
    text = re.sub(r"\\\n(?:\s*#[^\n]*\n)*", " ", CONTAINERFILE.read_text(encoding="utf-8"))
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def _final_stage() -> list[tuple[str, str]]:
    steps = _instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def _env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for word, rest in stage:
        if word == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", rest)))
    return env


def test_the_base_image_is_a_build_argument():
    steps = _instructions()
    assert steps[0][0] == "ARG" and steps[0][1].startswith("BASE=")
    froms = [rest for word, rest in steps if word == "FROM"]
    assert froms and all(rest.split()[0] == "${BASE}" for rest in froms)


def test_jobsync_is_installed_from_the_wheels_of_the_context_alone():
    steps = _instructions()
    assert ("COPY", "wheels/ /wheels/") in steps
    (install,) = [rest for word, rest in steps if word == "RUN" and "pip install" in rest]
    assert "--no-index" in install and "--find-links=/wheels" in install
    assert "'jobsync[postgres]'" in install


def test_the_image_runs_the_daemon_as_uid_10001_with_a_healthcheck_on_its_metrics_port():
    stage = _final_stage()
    (user,) = [rest for word, rest in stage if word == "USER"]
    assert user == "10001:10001"  # numeric, so that runAsNonRoot can check it
    (entrypoint,) = [json.loads(rest) for word, rest in stage if word == "ENTRYPOINT"]
    assert entrypoint[-1] == "jobsync"
    (cmd,) = [json.loads(rest) for word, rest in stage if word == "CMD"]
    assert cmd[0] == "daemon"
    port = cmd[cmd.index("--metrics-port") + 1]
    assert cmd[cmd.index("--metrics-host") + 1] == "0.0.0.0"
    assert ("EXPOSE", port) in stage
    env = _env(stage)
    assert env["HEALTHCHECK_URL"] == f"http://127.0.0.1:{port}/healthz"
    (healthcheck,) = [rest for word, rest in stage if word == "HEALTHCHECK"]
    assert "HEALTHCHECK_URL" in healthcheck
    assert env["JOBSYNC_API_KEY_FILE"] == "/run/secrets/jobsync-api-key"
    # The Deployment spells the image's default command out: they must agree.
    daemon = next(yaml.safe_load_all((DEPLOY / "kubernetes" / "daemon.yaml").read_text()))
    (container,) = daemon["spec"]["template"]["spec"]["containers"]
    assert container["args"] == cmd


def _fake_tools(tmp_path: Path) -> Path:
    """docker that cannot reach an engine, dockerd that dies as it does without cgroups."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {
        "docker": "#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n",
        "dockerd": "#!/bin/sh\necho 'level=fatal msg=\"cgroups: not mounted\"' >&2\nexit 1\n",
        "debootstrap": "#!/bin/sh\nexit 0\n",
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(body)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return bin_dir


def _run_check(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    bin_dir = _fake_tools(tmp_path)
    environment = {k: v for k, v in os.environ.items() if k != "JOBSYNC_CHECK_REQUIRE_DOCKER"}
    environment.update(env, PATH=f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin")
    return subprocess.run(
        ["bash", str(CHECK)],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        check=False,
    )


def test_the_container_check_says_skipped_and_exits_0_where_dockerd_cannot_start(tmp_path):
    result = _run_check(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("skipped: ")]
    if os.geteuid() == 0:
        assert "dockerd cannot start here" in line and "cgroups" in line
    else:
        assert "needs root" in line


def test_the_container_check_fails_instead_when_docker_is_required(tmp_path):
    result = _run_check(tmp_path, JOBSYNC_CHECK_REQUIRE_DOCKER="1")
    assert result.returncode == 1
    assert "container check FAILED" in result.stderr
    assert "required: JOBSYNC_CHECK_REQUIRE_DOCKER=1" in result.stderr
