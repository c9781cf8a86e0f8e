"""deploy/kubernetes: every manifest passes kubernetes-validate's schema check (strict, offline,
for every Kubernetes version from 1.27 on), runs jobsync as it must be run, and is shown whole
in docs/deployment.md."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

from tests.deploy.conftest import DEPLOY, ROOT

MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
IMAGE = "<your-registry>/jobsync:<version>"
# CronJob's timeZone is stable from 1.27 on.
VERSIONS = sorted(
    {v for v in kv_utils.all_versions() if tuple(map(int, v.split(".")[:2])) >= (1, 27)},
    key=lambda v: tuple(map(int, v.split("."))),
)


def _resources(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _pod_spec(resource: dict[str, Any]) -> dict[str, Any] | None:
    spec = resource["spec"]
    if resource["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"] if "template" in spec else None


def _pods(path: Path) -> list[dict[str, Any]]:
    """The pod specs of a manifest's resources that run pods."""
    return [pod for resource in _resources(path) if (pod := _pod_spec(resource)) is not None]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network use during validation: {args!r}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_there_are_manifests_for_the_daemon_the_cronjob_and_the_schema_upgrade():
    kinds = {r["kind"] for path in MANIFESTS for r in _resources(path)}
    assert {"Deployment", "CronJob", "Job", "Service"} <= kinds
    assert len(VERSIONS) >= 2


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_every_manifest_passes_the_schema_check_offline(path, no_network):
    for resource in _resources(path):
        for version in VERSIONS:
            try:
                kubernetes_validate.validate(resource, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{path.name}, {resource['kind']}, Kubernetes {version}: {exc.message}")


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_every_pod_runs_the_image_as_uid_10001_without_privileges(path):
    for pod in _pods(path):
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for container in pod.get("initContainers", []) + pod["containers"]:
            assert container["image"] == IMAGE
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["limits"]["memory"]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_the_key_comes_from_a_secret_as_a_file_only_its_owner_reads(path):
    for pod in _pods(path):
        (jobsync,) = pod["containers"]
        env = _env(jobsync)
        assert "JOBSYNC_API_KEY" not in env and "ZILLIZ_API_KEY" not in env
        if "JOBSYNC_API_KEY_FILE" not in env:
            assert jobsync["args"][:2] == ["db", "upgrade"], "only the schema upgrade needs no key"
            continue
        key_dir, key_name = env["JOBSYNC_API_KEY_FILE"]["value"].rsplit("/", 1)
        volumes = {v["name"]: v for v in pod["volumes"]}
        (mount,) = [m for m in jobsync["volumeMounts"] if m["mountPath"] == key_dir]
        assert mount["readOnly"] is True
        assert volumes[mount["name"]]["emptyDir"]["medium"] == "Memory"
        # The init container copies the Secret's file into that volume with mode 0400.
        (init,) = pod["initContainers"]
        secret_mount = next(m for m in init["volumeMounts"] if "secret" in volumes[m["name"]])
        assert init["command"] == [
            "install",
            "-m",
            "0400",
            f"{secret_mount['mountPath']}/{key_name}",
            f"{key_dir}/{key_name}",
        ]
        assert volumes[secret_mount["name"]]["secret"]["secretName"] == "jobsync-api-key"
        assert env["JOBSYNC_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "jobsync-db"


def test_the_daemon_is_probed_on_healthz_at_its_metrics_port_and_rolled_out_one_at_a_time():
    (deployment,) = [r for p in MANIFESTS for r in _resources(p) if r["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    (container,) = _pod_spec(deployment)["containers"]
    args = container["args"]
    assert args[0] == "daemon"
    port = int(args[args.index("--metrics-port") + 1])
    assert args[args.index("--metrics-host") + 1] == "0.0.0.0"
    (named,) = [p for p in container["ports"] if p["name"] == "metrics"]
    assert named["containerPort"] == port
    probe = container["livenessProbe"]["httpGet"]
    assert probe == {"path": "/healthz", "port": "metrics"}
    # Stopping takes at most 10 s (docs/deployment.md): the grace period must cover it.
    assert _pod_spec(deployment)["terminationGracePeriodSeconds"] > 10


def test_the_cronjob_never_overlaps_itself():
    (cronjob,) = [r for p in MANIFESTS for r in _resources(p) if r["kind"] == "CronJob"]
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert _pod_spec(cronjob)["containers"][0]["args"][0] == "sync"


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_the_deployment_page_shows_every_manifest_whole(path):
    page = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    if path.read_text(encoding="utf-8").strip() not in page:
        pytest.fail(f"docs/deployment.md does not show {path.relative_to(ROOT)} as it is")


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_every_jobsync_container_asks_for_a_command_and_options_that_exist(path):
    # The image's entry point is jobsync: its args are a command line, parsed here as the CLI
    # would parse it (without running it), so that an option that does not exist fails here
    # rather than on every run in the cluster.
    import click

    from jobsync.cli import cli

    ran = 0
    for pod in _pods(path):
        for container in pod.get("initContainers", []) + pod["containers"]:
            if "command" in container:
                continue  # not jobsync: the entry point replaced (the key file's copy)
            args = list(container["args"])
            command: click.Command = cli
            while isinstance(command, click.Group) and args and args[0] in command.commands:
                command = command.commands[args.pop(0)]
            assert not isinstance(command, click.Group), container["args"]
            ran += 1
            with command.make_context(command.name or "", args):
                pass
    assert ran
