"""Canaries: the API key and database passwords never reach output, logs, errors, reprs,
help texts or the database, even with --debug and urllib3's debug logging on."""

from __future__ import annotations

import json
import traceback
import uuid

import pytest
from click.testing import CliRunner, Result

from jobsync.api.client import ApiClient, BearerAuth
from jobsync.cli import cli
from jobsync.config import CliValues, resolve_settings
from jobsync.observability.redact import Secret, redact
from jobsync.service.sync import PassResult
from jobsync.simulator import DESCRIBE_PATH, Fault, Simulator
from tests.cli.test_faults import FAULTS
from tests.conftest import CLUSTER, database_text, sync_args

# Also a database password below, so nothing that a URL would need to encode (test_scrub.py
# has a key that does).
CANARY = f"CANARY-{uuid.uuid4().hex}"
CANARY_VARIANTS = {
    "exact": CANARY,
    "upper case": CANARY.upper(),
    "lower case": CANARY.lower(),
    "prefix of 8": CANARY[:8],
    "prefix of 12, lower case": CANARY[:12].lower(),
    "prefix of 20, upper case": CANARY[:20].upper(),
}


def _leaked(texts: list[str]) -> list[str]:
    """The texts holding the canary in any variant: each starts with its first 8 characters
    in some letter case."""
    return [text for text in texts if CANARY[:8].lower() in text.lower()]


def _everything(result: Result) -> str:
    text = result.output + (result.stderr or "")
    if result.exc_info is not None:
        text += "".join(traceback.format_exception(*result.exc_info))
    return text


@pytest.fixture
def canary_sim():
    with Simulator(cluster_ids=(CLUSTER,), jobs=40, api_key=CANARY, seed=5) as sim:
        yield sim


def test_the_api_key_never_leaks_through_the_fault_matrix(canary_sim, db_url, no_backoff_in_tmp):
    runner = CliRunner()
    env = {"JOBSYNC_API_KEY": CANARY}
    args = ["--debug", *sync_args(canary_sim, db_url, "--page-size", "10")]
    seen: list[str] = []

    ok = runner.invoke(cli, args, env=env)
    assert ok.exit_code == 0, _everything(ok)
    assert "DEBUG" in ok.stderr and "urllib3" in ok.stderr  # debug logging really was on
    seen.append(_everything(ok))
    for name, (inject, _expected) in FAULTS.items():
        canary_sim.clear_faults()
        canary_sim.ignore_current_page = False
        canary_sim.count_override = None
        inject(canary_sim)
        result = runner.invoke(cli, args, env=env)
        assert result.exit_code != 0, name
        seen.append(_everything(result))
    wrong = runner.invoke(cli, args, env={"JOBSYNC_API_KEY": CANARY + "-wrong"})
    seen.append(_everything(wrong))
    for command in ([], ["sync"], ["db", "upgrade"], ["jobs"], ["history"], ["simulate"], ["demo"]):
        seen.append(runner.invoke(cli, [*command, "--help"], env=env).output)

    assert _leaked(seen) == []
    assert _leaked([database_text(db_url)]) == []


def test_the_api_key_never_leaks_through_progress_requests(canary_sim, db_url, no_backoff_in_tmp):
    """Failing progress requests are logged as warnings: a server echoing the key is scrubbed."""
    runner = CliRunner()
    env = {"JOBSYNC_API_KEY": CANARY}
    args = sync_args(canary_sim, db_url)
    # A few progress requests per pass are enough to see them fail; more only wait on the pacer.
    args += ["--details-max-per-pass", "3"]
    echoed = " ".join(CANARY_VARIANTS.values())
    echo = json.dumps({"code": 96026, "message": f"no job for token {echoed}"}).encode()
    seen: list[str] = []
    for fault in (
        Fault(status=200, body=echo, path=DESCRIBE_PATH),
        Fault(status=500, body=echo, path=DESCRIBE_PATH),
        Fault(status=200, body=b"not json " + CANARY.upper().encode(), path=DESCRIBE_PATH),
        # Last: after a 404 the fallback path is remembered, and /describe is not asked again.
        Fault(status=404, body=echo, path=DESCRIBE_PATH),
    ):
        canary_sim.clear_faults()
        canary_sim.add_fault(fault)
        result = runner.invoke(cli, args, env=env)
        assert result.exit_code == 0, _everything(result)
        seen.append(_everything(result))
        debug = runner.invoke(cli, ["--debug", *args], env=env)
        assert debug.exit_code == 0, _everything(debug)
        seen.append(_everything(debug))
        assert fault.fired > 0

    assert any("progress of job" in text for text in seen)  # the warnings were really logged
    assert _leaked(seen) == []
    assert _leaked([database_text(db_url)]) == []


def test_objects_never_show_the_key():
    key = Secret(CANARY)
    settings = resolve_settings(
        CliValues(cluster_ids=(CLUSTER,), base_url="https://api.example.com"),
        {"JOBSYNC_API_KEY": CANARY},
    )
    client = ApiClient("https://api.example.com", key)
    for obj in (
        key,
        BearerAuth(key),
        client,
        settings,
        settings.sources[0],
        PassResult("s", 1, True),
    ):
        assert CANARY not in repr(obj) and CANARY not in str(obj)
    client.close()


def test_redact_scrubs_keys_and_both_password_forms():
    Secret(CANARY)
    text = (
        f"Bearer {CANARY} postgresql://u:{CANARY}@db/x "
        f"postgresql://db/x?password={CANARY}&sslmode=require {CANARY}"
    )
    assert CANARY not in redact(text)


def test_redact_masks_the_registered_key_in_every_variant():
    Secret(CANARY)
    for name, variant in CANARY_VARIANTS.items():
        assert redact(f"server said: {variant}!") == "server said: ***!", name


def test_redact_keeps_the_word_after_token_and_key_when_it_is_no_secret():
    Secret(CANARY)
    for text in ("Invalid token: abc", "api_key: missing", "secret: none given", "key=value"):
        assert redact(text) == text


def test_redact_still_masks_credentials_by_their_place():
    text = (
        "postgresql://u:pw1@db/x postgresql://db/x?password=pw2&sslmode=require "
        "https://h/hook?token=pw3 host=db password=pw4 Authorization: Bearer pw5"
    )
    masked = redact(text)
    assert [s for s in ("pw1", "pw2", "pw3", "pw4", "pw5") if s in masked] == []
    assert "sslmode=require" in masked and "postgresql://u:***@db/x" in masked


@pytest.mark.postgres
@pytest.mark.parametrize("form", ["userinfo", "query"])
def test_a_database_password_never_leaks(form, postgres_url, canary_sim, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    base, name = postgres_url.rsplit("/", 1)
    user_host = base.removeprefix("postgresql://")
    user, host = user_host.split("@")
    # Trust authentication ignores the password, so the canary can travel the whole way.
    if form == "userinfo":
        url = f"postgresql://{user}:{CANARY}@{host}/{name}"
    else:
        url = f"postgresql://{user}@{host}/{name}?password={CANARY}"
    missing = url.replace(f"/{name}", "/no_such_database_jobsync")
    runner = CliRunner()
    env = {"JOBSYNC_API_KEY": CANARY}
    results = [
        runner.invoke(
            cli,
            ["--debug", "sync", "--db", url, "--base-url", canary_sim.url, "--cluster-id", CLUSTER],
            env=env,
        ),
        runner.invoke(
            cli,
            ["sync", "--db", missing, "--base-url", canary_sim.url, "--cluster-id", CLUSTER],
            env=env,
        ),
        runner.invoke(cli, ["--debug", "db", "current", "--db", missing], env=env),
        runner.invoke(cli, ["jobs", "--db", url], env=env),
    ]
    assert results[0].exit_code == 0, _everything(results[0])
    assert results[1].exit_code == 1 and "no_such_database_jobsync" in results[1].output
    assert _leaked([_everything(result) for result in results]) == []
    assert _leaked([database_text(postgres_url)]) == []


# -- notification URLs -------------------------------------------------------------------------

NOTIFY_CANARY = f"NOTIFY-{uuid.uuid4().hex}"


def _notify_leaked(texts: list[str]) -> list[str]:
    return [text for text in texts if NOTIFY_CANARY[:8].lower() in text.lower()]


def test_a_notification_url_never_leaks_through_deliveries_that_fail(
    canary_sim, db_url, monkeypatch, tmp_path
):
    from tests.receiver import Receiver

    monkeypatch.chdir(tmp_path)
    receiver = Receiver()
    try:
        path = f"hook/{NOTIFY_CANARY}"
        refused = f"json://u:{NOTIFY_CANARY}@127.0.0.1:1/{NOTIFY_CANARY}"  # nothing listens
        failing = f"json://u:{NOTIFY_CANARY}-pw@127.0.0.1:{receiver.port}/{path}"
        receiver.fail(path, 500)
        runner = CliRunner()
        env = {"JOBSYNC_API_KEY": CANARY, "JOBSYNC_NOTIFY_URL": f"{failing} {refused}"}
        sync = ["sync", "--db", db_url, "--base-url", canary_sim.url, "--cluster-id", CLUSTER]
        seen: list[str] = []
        for args in (
            sync,
            ["--debug", *sync],
            ["notify", "test"],
            ["--debug", "notify", "test"],
            ["status", "--db", db_url],
            ["status", "--db", db_url, "--format", "json"],
        ):
            if args[-1] != "test" and "status" not in args:
                job = next(j for j in canary_sim.jobs(CLUSTER) if j.state == "Pending")
                canary_sim.set_state(CLUSTER, job.job_id, "Failed", reason="bad file")
            result = runner.invoke(cli, args, env=env)
            seen.append(_everything(result))
        bad = runner.invoke(
            cli,
            [*sync, "--notify", f"nosuchservice://{NOTIFY_CANARY}/x"],
            env={"JOBSYNC_API_KEY": CANARY},
        )
        assert bad.exit_code == 2
        seen.append(_everything(bad))
    finally:
        receiver.close()

    assert receiver.arrivals, "the failing target was really tried"
    assert any("could not notify" in text for text in seen)  # the warnings were really logged
    assert any("DEBUG" in text and "apprise" in text for text in seen)  # and Apprise's own lines
    assert any('"notify_error": "' in text for text in seen)  # status shows the error
    assert _notify_leaked(seen) == []
    assert _notify_leaked([database_text(db_url)]) == []


def test_objects_never_show_a_notification_url():
    from jobsync.service.notify import TargetResult

    url = f"json://u:{NOTIFY_CANARY}@127.0.0.1:1/{NOTIFY_CANARY}"
    settings = resolve_settings(CliValues(notify_urls=(url,)), {})
    target = settings.notify.targets[0]
    for obj in (settings, settings.notify, target, TargetResult(target.origin, "JSON", None)):
        assert NOTIFY_CANARY not in repr(obj) and NOTIFY_CANARY not in str(obj)


def test_redact_masks_notification_urls_and_their_secret_parts():
    token_a, token_b = f"T{NOTIFY_CANARY[7:19]}", f"B{NOTIFY_CANARY[19:31]}"
    resolve_settings(
        CliValues(notify_urls=(f"slack://{token_a}/{token_b}/{NOTIFY_CANARY}/#alerts",)), {}
    )
    said = redact(
        f"POST https://hooks.slack.com/services/{token_a}/{token_b}/{NOTIFY_CANARY} failed; "
        f"{token_a.lower()} {token_b.upper()} slack://{token_a}/{token_b}/{NOTIFY_CANARY}/#alerts"
    )
    for part in (token_a, token_b, NOTIFY_CANARY):
        assert part.lower() not in said.lower(), said
    assert "https://hooks.slack.com/services/" in said
