"""A server that echoes the API key, in any case, cut short or URL-encoded, never gets it stored
or shown: the scrubber's variants, the client that applies it to every body, and what reaches
the database (both kinds), `jobsync jobs`, the HTML report and error texts. How ``redact``
treats our own messages is in test_secrets.py."""

from __future__ import annotations

import json
import uuid
from urllib.parse import quote

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from jobsync.api.client import ApiClient
from jobsync.cli import cli
from jobsync.config import HttpSettings
from jobsync.errors import ApiStatusError, AuthError
from jobsync.observability.redact import Secret, scrubber
from jobsync.simulator import LIST_PATH, Fault, Reply, Simulator
from jobsync.storage.schema import import_job_records, sync_runs
from jobsync.storage.store import open_engine
from tests.conftest import CLUSTER, database_text

# ':' and '/' make the URL-encoded key differ from the key; mixed case makes case matter.
KEY = f"Zk:{uuid.uuid4().hex[:20]}AbCdEf/{uuid.uuid4().hex[:12]}"
ENCODED = quote(KEY, safe="")
FAST = HttpSettings(connect_timeout=2, read_timeout=5, request_deadline=5, max_retries=1)

VARIANTS = {
    "exact": KEY,
    "upper case": KEY.upper(),
    "lower case": KEY.lower(),
    "swapped case": KEY.swapcase(),
    "prefix of 8": KEY[:8],
    "prefix of 12, upper case": KEY[:12].upper(),
    "prefix up to the slash": KEY[: KEY.index("/") + 1],
    "url-encoded": ENCODED,
    "url-encoded, lower case": ENCODED.lower(),
    "url-encoded prefix of 10": ENCODED[:10],
    "path-encoded (slash kept)": quote(KEY),
}


def _leaks(text: str) -> list[str]:
    """The key's telltales in ``text``: every masked variant starts with one of these."""
    folded = text.lower()
    return [head for head in (KEY[:8].lower(), ENCODED[:8].lower()) if head in folded]


# -- the scrubber --------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS.keys())
def test_every_variant_of_the_key_is_masked(variant):
    scrub = scrubber(KEY)
    assert scrub(f"echo [{variant}] end") == "echo [***] end"


@pytest.mark.parametrize("variant", VARIANTS.values(), ids=VARIANTS.keys())
def test_every_variant_makes_a_body_suspect(variant):
    scrub = scrubber(KEY)
    body = json.dumps({"data": {"records": [{"reason": f"x {variant} y"}]}}).encode()
    assert scrub.suspects(body)


def test_a_prefix_of_seven_and_other_text_are_left_alone():
    scrub = scrubber(KEY)
    text = f"seven {KEY[:7]} and Invalid token: abc, key=value"
    assert scrub(text) == text
    assert not scrub.suspects(json.dumps({"message": text}).encode())


def test_a_key_written_with_json_escapes_makes_the_body_suspect():
    scrub = scrubber(KEY)
    escaped = json.dumps({"reason": KEY}, ensure_ascii=True).replace(KEY[:2], "\\u005a" + KEY[1])
    assert KEY[:8].encode() not in escaped.encode()
    assert json.loads(escaped)["reason"] == KEY
    assert scrub.suspects(escaped.encode())
    slashed = json.dumps({"reason": KEY}).replace("/", "\\/").encode()
    assert scrubber(KEY[KEY.index("/") - 4 :]).suspects(slashed)


def test_a_short_key_is_masked_whole_in_any_case_but_not_by_prefix():
    scrub = scrubber("s3cr3t")
    assert scrub("a S3CR3T b s3cr3 c s3cr3t") == "a *** b s3cr3 c ***"
    assert scrub.suspects(b'{"m": "S3Cr3T"}') and not scrub.suspects(b'{"m": "s3cr3"}')


def test_overlapping_and_repeated_copies_are_masked_as_one():
    scrub = scrubber(KEY)
    assert scrub(f"{KEY}{KEY.upper()}|{KEY[:9]}{KEY[:8]}") == "***|***"


def test_no_key_scrubs_nothing():
    scrub = scrubber()
    assert scrub(f"keep {KEY}") == f"keep {KEY}" and not scrub.suspects(KEY.encode())


# -- the client: every string of every body ------------------------------------------------------


@pytest.fixture
def key_sim():
    with Simulator(cluster_ids=(CLUSTER,), jobs=6, api_key=KEY, seed=3) as sim:
        yield sim


def _rewrite_list(sim: Simulator, names: list[str], *, ascii_only: bool = False) -> None:
    """Make the list replies carry these collection names (the first records, in order)."""

    def rewrite(reply: Reply) -> Reply:
        payload = json.loads(reply.body)
        for record, name in zip(payload["data"]["records"], names, strict=False):
            record["collectionName"] = name
        body = json.dumps(payload, ensure_ascii=ascii_only).encode()
        return Reply(reply.status, body, reply.headers, reply.code)

    sim.add_fault(Fault(status=200, path=LIST_PATH, transform=rewrite))


def _list(client: ApiClient):
    return client.call(LIST_PATH, {"clusterId": CLUSTER, "pageSize": 10, "currentPage": 1})


def test_the_client_masks_the_key_in_every_string_it_returns(key_sim):
    names = [f"c_{variant}" for variant in VARIANTS.values()][:6]
    _rewrite_list(key_sim, names)
    with ApiClient(key_sim.url, Secret(KEY), FAST) as client:
        data = _list(client)
    got = [record["collectionName"] for record in data["records"]]
    assert got == ["c_***"] * 6
    assert _leaks(json.dumps(data)) == []


def test_the_client_masks_a_key_hidden_behind_unicode_escapes(key_sim):
    def escape(reply: Reply) -> Reply:
        payload = json.loads(reply.body)
        payload["data"]["records"][0]["collectionName"] = f"c_{KEY.upper()}"
        text = json.dumps(payload).replace(
            KEY.upper()[:3], "".join(f"\\u{ord(c):04x}" for c in KEY.upper()[:3])
        )
        return Reply(reply.status, text.encode(), reply.headers, reply.code)

    key_sim.add_fault(Fault(status=200, path=LIST_PATH, transform=escape))
    with ApiClient(key_sim.url, Secret(KEY), FAST) as client:
        data = _list(client)
    assert data["records"][0]["collectionName"] == "c_***"


def test_an_ordinary_page_is_not_suspect_so_it_is_not_walked(key_sim):
    bodies: list[bytes] = []

    def keep(reply: Reply) -> Reply:
        bodies.append(reply.body)
        return reply

    key_sim.add_fault(Fault(status=200, path=LIST_PATH, transform=keep))
    with ApiClient(key_sim.url, Secret(KEY), FAST) as client:
        data = _list(client)
    assert len(data["records"]) == 6 and len(bodies) == 1
    assert not scrubber(KEY).suspects(bodies[0])


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (200, {"code": 80001, "message": f"invalid token {KEY.swapcase()}"}, AuthError),
        (400, {"code": 1100, "message": f"bad header Bearer%20{ENCODED[:14]}"}, ApiStatusError),
        (200, {"code": 1100, "message": {"echo": KEY[:12].upper()}}, ApiStatusError),
        (502, f"<html>upstream said {KEY.lower()}</html>", ApiStatusError),
    ],
    ids=["auth envelope", "url-encoded prefix", "message not a string", "html error page"],
)
def test_error_messages_mask_the_key(key_sim, status, body, error):
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    key_sim.add_fault(Fault(status=status, body=raw, content_type="text/html"))
    with ApiClient(key_sim.url, Secret(KEY), FAST, sleep=lambda _s: None) as client:
        with pytest.raises(error) as info:
            _list(client)
    assert "***" in str(info.value) and _leaks(str(info.value)) == []


# -- what is stored and shown, on both databases -------------------------------------------------


@pytest.fixture
def echoing_sim():
    """Open jobs only, so every pass asks the progress endpoint about them."""
    with Simulator(
        cluster_ids=(CLUSTER,), jobs=4, api_key=KEY, seed=9, initial_states={"Importing": 1}
    ) as sim:
        yield sim


def test_what_the_server_echoes_is_stored_and_shown_scrubbed(
    echoing_sim, db_url, monkeypatch, tmp_path
):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    env = {"JOBSYNC_API_KEY": KEY}
    sync = ["sync", "--db", db_url, "--base-url", echoing_sim.url, "--cluster-id", CLUSTER]
    second, third = (job.job_id for job in echoing_sim.jobs()[1:3])
    _rewrite_list(echoing_sim, [f"coll_{KEY.lower()}"])
    assert runner.invoke(cli, sync, env=env).exit_code == 0

    echoing_sim.set_state(
        CLUSTER,
        second,
        "Failed",
        reason=f"token {KEY.upper()} rejected; prefix {KEY[:12].swapcase()}; sent {ENCODED.lower()}",
    )
    echoing_sim.set_state(CLUSTER, third, f"Paused{KEY[:9]}")
    result = runner.invoke(cli, sync, env=env)
    assert result.exit_code == 0, result.output

    engine = open_engine(db_url)
    with engine.connect() as conn:
        rows = {r.job_id: r for r in conn.execute(select(import_job_records))}
    engine.dispose()
    assert "coll_***" in {row.collection_name for row in rows.values()}
    assert rows[second].reason == "token *** rejected; prefix ***; sent ***"
    assert rows[third].raw_state == "Paused***" and rows[third].state == "Unknown"
    assert _leaks(database_text(db_url)) == []

    shown = runner.invoke(cli, ["jobs", "--db", db_url, "--format", "json"])
    assert shown.exit_code == 0
    assert "coll_***" in shown.output and "Paused***" in shown.output
    html = runner.invoke(cli, ["report", "html", "--db", db_url, "-o", "-"])
    assert html.exit_code == 0
    assert "token *** rejected" in html.output and "coll_***" in html.output
    assert _leaks(shown.output + html.output + result.output + (result.stderr or "")) == []


def test_an_error_that_quotes_the_key_is_scrubbed_on_screen_and_in_sync_runs(
    key_sim, db_url, monkeypatch, tmp_path
):
    monkeypatch.chdir(tmp_path)
    echo = {"code": 80001, "message": f"token {KEY.upper()} ({KEY[:10]}..., {ENCODED}) rejected"}
    key_sim.add_fault(Fault(status=200, body=json.dumps(echo).encode()))
    sync = ["sync", "--db", db_url, "--base-url", key_sim.url, "--cluster-id", CLUSTER]

    result = CliRunner().invoke(cli, sync, env={"JOBSYNC_API_KEY": KEY})

    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "token *** (***..., ***) rejected" in result.stderr
    engine = open_engine(db_url)
    with engine.connect() as conn:
        error = conn.execute(select(sync_runs.c.error)).scalar_one()
    engine.dispose()
    assert "token *** (***..., ***) rejected" in error
    assert _leaks(result.output + result.stderr + database_text(db_url)) == []
