"""The HTTP client and the paging rules, against the simulator over real loopback sockets."""

from __future__ import annotations

import gzip
import json
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trustme

from jobsync.api.client import ApiClient, BearerAuth
from jobsync.api.listing import fetch_snapshot, iter_pages
from jobsync.config import HttpSettings, Source
from jobsync.errors import ApiStatusError, AuthError, ProtocolError, TransportError
from jobsync.observability.redact import Secret
from jobsync.simulator import Fault, Reply, Simulator
from tests.conftest import API_KEY, CLUSTER

LIST = "/v2/vectordb/jobs/import/list"
FAST = HttpSettings(
    connect_timeout=2, read_timeout=5, request_deadline=5, max_retries=3, backoff_factor=0.1
)


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(sim, sleeps):
    with ApiClient(sim.url, Secret(API_KEY), FAST, sleep=sleeps) as c:
        yield c


def _list(client: ApiClient, page: int = 1, size: int = 10):
    return client.call(LIST, {"clusterId": CLUSTER, "pageSize": size, "currentPage": page})


def _source(sim: Simulator) -> Source:
    return Source(name=CLUSTER, cluster_id=CLUSTER, base_url=sim.url, api_key=Secret(API_KEY))


def test_503_503_200_succeeds_with_exactly_three_requests(client, sim, sleeps):
    sim.add_fault(Fault(status=503, times=2))

    data = _list(client)

    assert len(data["records"]) == 10
    assert sim.request_count == 3
    assert client.retries == 2 == len(sleeps)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(client, sim, status):
    sim.add_fault(Fault(status=status, times=1))
    _list(client)
    assert sim.request_count == 2


@pytest.mark.parametrize("status", [400, 404, 501])
def test_other_statuses_are_not_retried(client, sim, status):
    sim.add_fault(Fault(status=status, times=1))
    with pytest.raises(ApiStatusError) as info:
        _list(client)
    assert info.value.http_status == status
    assert sim.request_count == 1


def test_retry_after_is_honoured(client, sim, sleeps):
    sim.add_fault(Fault(status=429, retry_after="1", times=1))
    _list(client)
    assert sleeps == [1.0]


def test_retry_after_is_capped(client, sim, sleeps):
    sim.add_fault(Fault(status=429, retry_after="99999", times=1))
    _list(client)
    assert sleeps == [FAST.retry_after_cap]


def test_backoff_grows_exponentially_and_retries_are_bounded(sim, sleeps):
    settings = HttpSettings(max_retries=4, backoff_factor=0.1, backoff_jitter=0.0)
    sim.add_fault(Fault(status=503))
    with ApiClient(sim.url, Secret(API_KEY), settings, sleep=sleeps) as c:
        with pytest.raises(ApiStatusError, match="503 after 4 retries"):
            _list(c)
    assert sim.request_count == 5
    assert sleeps == pytest.approx([0.0, 0.2, 0.4, 0.8])


def test_backoff_has_jitter(client, sim, sleeps):
    sim.add_fault(Fault(status=503))
    with pytest.raises(ApiStatusError):
        _list(client)
    base = [0.0, 0.2, 0.4]
    assert all(b <= s <= b + FAST.backoff_jitter for s, b in zip(sleeps, base, strict=True))
    assert sleeps != base


@pytest.mark.parametrize("code", [80001, 80002, 21119])
def test_a_rejected_key_is_never_retried(client, sim, code):
    sim.add_fault(Fault(status=200, code=code))
    with pytest.raises(AuthError, match="API key was rejected"):
        _list(client)
    assert sim.request_count == 1


@pytest.mark.parametrize("status", [401, 403])
def test_http_401_and_403_are_auth_errors(client, sim, status):
    sim.add_fault(Fault(status=status, code=1800))
    with pytest.raises(AuthError):
        _list(client)
    assert sim.request_count == 1


def test_the_simulator_rejects_a_wrong_key(sim, sleeps):
    with ApiClient(sim.url, Secret("not-the-key"), FAST, sleep=sleeps) as bad:
        with pytest.raises(AuthError) as info:
            _list(bad)
    assert "not-the-key" not in str(info.value)


def test_connection_refused_is_a_transport_error_after_retries(sleeps):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with ApiClient(f"http://127.0.0.1:{port}", Secret("k"), FAST, sleep=sleeps) as c:
        with pytest.raises(TransportError, match="cannot reach"):
            _list(c)
    assert len(sleeps) == 3


def test_a_server_that_never_answers_is_a_timeout_after_retries(sim, sleeps):
    settings = HttpSettings(read_timeout=0.2, max_retries=1)
    sim.add_fault(Fault(status=200, delay=1, times=2))
    with ApiClient(sim.url, Secret(API_KEY), settings, sleep=sleeps) as c:
        with pytest.raises(TransportError, match=r"timed out after 1 retries \(ReadTimeoutError"):
            _list(c)
    assert len(sleeps) == 1


def test_a_body_cut_off_at_the_cap_never_reaches_the_next_request(sim, sleeps):
    settings = HttpSettings(max_body_bytes=100_000, max_retries=0)
    sim.add_fault(Fault(status=200, body=b'{"code": 0}' + b" " * 1_000_000, times=1))
    with ApiClient(sim.url, Secret(API_KEY), settings, sleep=sleeps) as c:
        with pytest.raises(ProtocolError, match="exceeds"):
            _list(c)
        assert len(_list(c)["records"]) == 10


def test_a_walk_reuses_one_connection(sim, client):
    connects = []
    original = socket.socket.connect

    def counting(sock, address):
        connects.append(address)
        return original(sock, address)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", counting)
        for page in range(1, 6):
            _list(client, page)
    assert len(connects) == 1


class _Listing(BaseHTTPRequestHandler):
    """An API that lists nothing, for a server that speaks HTTPS."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = b'{"code": 0, "data": {"count": 0, "records": []}}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_certificate_the_client_cannot_verify_is_refused(sleeps):
    """TLS is verified on the path every request takes: a certificate from an authority the
    client does not trust ends the request before anything is sent."""
    cert = trustme.CA().issue_cert("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Listing)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_address[1]}"
    try:
        with ApiClient(url, Secret(API_KEY), HttpSettings(max_retries=0), sleep=sleeps) as c:
            with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
                _list(c)
    finally:
        server.shutdown()
        server.server_close()


def test_redirects_are_refused(client, sim):
    sim.add_fault(
        Fault(status=302, body=b"", transform=lambda r: r.with_header("Location", "http://evil/"))
    )
    with pytest.raises((ProtocolError, ApiStatusError), match=r"redirect|302"):
        _list(client)
    assert sim.request_count == 1


def test_a_trickling_server_is_cut_off_by_the_request_deadline(sim, sleeps):
    settings = HttpSettings(read_timeout=2, request_deadline=0.5, max_retries=0)
    sim.add_fault(Fault(status=200, trickle=0.05))
    with ApiClient(sim.url, Secret(API_KEY), settings, sleep=sleeps) as c:
        with pytest.raises(TransportError, match=r"not complete within 0\.5s"):
            _list(c, size=100)


@pytest.mark.parametrize(
    "body",
    [b'{"code": 0, "data": {"records": [', b"<html>Bad gateway</html>", b"", b"[" * 100_000],
    ids=["truncated", "html", "empty", "deep"],
)
def test_bodies_that_are_not_json_are_protocol_errors(client, sim, body):
    sim.add_fault(Fault(status=200, body=body))
    with pytest.raises(ProtocolError):
        _list(client)


def test_nan_is_not_json(client, sim):
    sim.add_fault(Fault(status=200, body=b'{"code": 0, "data": {"count": NaN, "records": []}}'))
    with pytest.raises(ProtocolError):
        _list(client)


def _gzip_reply(payload: bytes):
    def transform(reply: Reply) -> Reply:
        return Reply(
            200,
            gzip.compress(payload),
            (("Content-Type", "application/json"), ("Content-Encoding", "gzip")),
        )

    return transform


def test_gzip_bodies_are_decoded(client, sim):
    body = json.dumps({"code": 0, "data": {"count": 1, "records": [{"jobId": "1"}]}}).encode()
    sim.add_fault(Fault(status=200, transform=_gzip_reply(body)))
    assert _list(client)["records"] == [{"jobId": "1"}]


def test_a_gzip_bomb_stops_at_the_size_cap(sim, sleeps):
    settings = HttpSettings(max_body_bytes=1_000_000, max_retries=0)
    sim.add_fault(Fault(status=200, transform=_gzip_reply(b" " * 200_000_000)))
    with ApiClient(sim.url, Secret(API_KEY), settings, sleep=sleeps) as c:
        with pytest.raises(ProtocolError, match=r"exceeds 1000000 bytes"):
            _list(c)


def test_a_huge_plain_body_stops_at_the_size_cap(sim, sleeps):
    settings = HttpSettings(max_body_bytes=100_000, max_retries=0)
    sim.add_fault(Fault(status=200, body=b" " * 1_000_000))
    with ApiClient(sim.url, Secret(API_KEY), settings, sleep=sleeps) as c:
        with pytest.raises(ProtocolError, match="exceeds"):
            _list(c)


def test_bearer_auth_survives_a_netrc_entry(sim, tmp_path, monkeypatch):
    (tmp_path / ".netrc").write_text("machine 127.0.0.1 login someone password netrc-secret\n")
    (tmp_path / ".netrc").chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    with ApiClient(sim.url, Secret(API_KEY), FAST) as c:
        assert len(_list(c)["records"]) == 10  # the simulator accepted our Bearer key


def test_nothing_secret_in_reprs(sim):
    key = Secret("CANARY-123")
    assert "CANARY" not in repr(key) + str(key) + f"{key}" + repr(BearerAuth(key))
    assert "CANARY" not in repr(ApiClient("https://x", key))
    with ApiClient(sim.url, key, FAST) as c:
        with pytest.raises(AuthError):
            _list(c)
        # Each path's headers, the key's among them, are kept for every request.
        assert "CANARY" not in repr(c) + repr(vars(c))
    assert "CANARY" not in repr(Source(name="n", base_url="https://x", api_key=key))


# Paging


def test_paging_walks_every_page_and_stops_on_the_short_one(sim, client):
    pages = list(iter_pages(client, _source(sim), 7))
    assert [p.size for p in pages] == [7] * 7 + [1]
    assert sim.request_count == 8


def test_paging_stops_on_an_empty_page_when_the_count_divides_evenly(sim, client):
    pages = list(iter_pages(client, _source(sim), 10))
    assert [p.size for p in pages] == [10] * 5 + [0]


def test_a_server_that_ignores_current_page_is_detected_within_two_pages(sim, client):
    sim.ignore_current_page = True
    with pytest.raises(ProtocolError, match="ignore 'currentPage'"):
        list(iter_pages(client, _source(sim), 10))
    assert sim.request_count == 2


def test_an_absurd_count_fails_fast(sim, client):
    sim.count_override = 10**12
    with pytest.raises(ProtocolError, match="hard cap"):
        list(iter_pages(client, _source(sim), 10))
    assert sim.request_count == 1


def test_never_more_pages_than_count_implies_plus_one(sim, client):
    sim.count_override = 20  # the server under-reports; pages keep coming full
    pages = list(iter_pages(client, _source(sim), 10))
    assert len(pages) == 3


def test_the_hard_page_cap_stops_endless_full_pages(sim, client):
    sim.count_override = None
    with pytest.raises(ProtocolError, match="hard cap of 3 pages"):
        list(iter_pages(client, _source(sim), 5, max_pages=3))


def test_a_snapshot_of_a_quiet_list_is_complete(sim, client):
    snap = fetch_snapshot(client, _source(sim), 10)
    assert snap.complete and snap.distinct_jobs == 50 and snap.duplicates == 0
    assert snap.reported_count == 50 and snap.walks == 1


def test_jobs_added_mid_walk_are_deduplicated_and_the_walk_repeated(sim, client):
    added = []

    def add_on_third(number: int, path: str, body: object) -> None:
        if number == 3 and not added:
            added.extend(sim.add_jobs(2, cluster_id=CLUSTER))

    sim.on_request(add_on_third)
    snap = fetch_snapshot(client, _source(sim), 10)

    assert snap.duplicates == 2
    assert snap.distinct_jobs == 52
    # Two arrivals at the head, and count grew by two: one walk is proven complete.
    assert snap.walks == 1 and snap.complete


def test_a_list_that_never_settles_is_incomplete(sim, client):
    def remove_one(number: int, path: str, body: object) -> None:
        sim.remove_jobs(CLUSTER, [sim.jobs(CLUSTER)[0].job_id])

    sim.on_request(remove_one)
    snap = fetch_snapshot(client, _source(sim), 10, max_walks=2)
    assert not snap.complete and snap.walks == 2
    assert "(after 2 walks)" in (snap.incomplete_reason or "")


def test_invalid_records_make_the_snapshot_incomplete(sim, client):
    body = json.dumps(
        {"code": 0, "data": {"count": 3, "records": [{"jobId": "a"}, {"jobId": None}, 5]}}
    ).encode()
    sim.add_fault(Fault(status=200, body=body))
    snap = fetch_snapshot(client, _source(sim), 10)
    assert snap.invalid == 2 and list(snap.jobs) == ["a"] and not snap.complete


def test_a_stop_request_cancels_before_the_next_request_and_cuts_backoff_short(sim):
    import threading

    from jobsync.errors import Cancelled

    stop = threading.Event()
    settings = HttpSettings(max_retries=3, backoff_factor=100.0, backoff_jitter=0.0)
    sim.add_fault(Fault(status=503, times=2))
    sim.on_request(lambda number, path, body: stop.set())
    with ApiClient(sim.url, Secret(API_KEY), settings, cancel=stop) as c:
        with pytest.raises(Cancelled):
            _list(c)  # the backoff after the 503 ends at once, with no retry
        assert sim.request_count == 1
        with pytest.raises(Cancelled):
            _list(c)  # and no further request is made
    assert sim.request_count == 1
