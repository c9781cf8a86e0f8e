"""HTTP for the import-job API: one session, Bearer auth, timeouts, bounded retries.

Retries are urllib3's ``Retry`` (POST explicitly allowed: the list and progress calls only
read), on connection errors, timeouts, 429 and 5xx gateway statuses, with exponential backoff,
jitter and a capped ``Retry-After``. A rejected key is never retried. Bodies are read with a
wall-clock deadline and a size cap, decompressed by us with a bound, and parsed defensively
(``jobsync.api.envelope``).

Requests are sent through the session's urllib3 pool directly (``_Route``): requests prepares
each path's request once (headers, the key), and its per-response work (a Response object,
cookie extraction, hooks, redirect checks), none of which this API needs, is skipped; it
doubled a list page's CPU.

Every string of a decoded body (job reasons, collection names, raw states, error messages) has
the client's API key and its variants masked before ``call`` returns it (see
:func:`jobsync.observability.redact.scrubber`): what a server echoes is never stored or shown.
A cheap test on the raw bytes skips the walk for the bodies that cannot hold the key, which is
nearly all.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import BaseHTTPResponse, HTTPConnectionPool, Timeout
from urllib3.exceptions import HTTPError, MaxRetryError, NewConnectionError, ResponseError
from urllib3.exceptions import TimeoutError as TimedOut
from urllib3.util.retry import Retry

from jobsync._version import __version__
from jobsync.api.envelope import decode_json, error_message, parse_envelope, scrub_payload
from jobsync.api.ratelimit import pause
from jobsync.config import HttpSettings
from jobsync.errors import ApiStatusError, Cancelled, ProtocolError, TransportError
from jobsync.observability.redact import Secret, redact, scrubber

__all__ = ["ApiClient", "BearerAuth"]

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_USER_AGENT = f"jobsync/{__version__}"


class BearerAuth(requests.auth.AuthBase):
    """Sets ``Authorization: Bearer``; unlike a plain header, ~/.netrc cannot replace it."""

    def __init__(self, key: Secret) -> None:
        self._key = key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._key.reveal()}"
        return request

    def __repr__(self) -> str:
        return "BearerAuth(***)"


def _sleep(seconds: float) -> None:
    # Looked up at call time, so tests of the CLI can replace time.sleep.
    time.sleep(seconds)


def _cancellable(
    cancel: threading.Event, sleep: Callable[[float], None] | None
) -> Callable[[float], None]:
    """A backoff that a stop request cuts short, ending the request with Cancelled."""

    def wait(seconds: float) -> None:
        pause(seconds, cancel, sleep)

    return wait


class _Retry(Retry):
    """urllib3's Retry with a capped Retry-After, an injectable sleep, and a retry counter."""

    sleeper: Callable[[float], None] = staticmethod(_sleep)
    on_retry: Callable[[float], None] | None = None
    retry_after_cap: float = 60.0
    # A retry is a request like any other: it waits for the rate limiter too.
    rate_limit: Callable[[str], None] | None = None
    retry_path: str | None = None

    def new(self, **kw: Any) -> Self:
        fresh = super().new(**kw)
        fresh.sleeper = self.sleeper
        fresh.on_retry = self.on_retry
        fresh.retry_after_cap = self.retry_after_cap
        fresh.rate_limit = self.rate_limit
        return fresh

    def increment(
        self, method: str | None = None, url: str | None = None, *args: Any, **kw: Any
    ) -> Self:
        fresh = super().increment(method, url, *args, **kw)
        fresh.retry_path = urlsplit(url).path if url else None
        return fresh

    def sleep(self, response: Any = None) -> None:
        delay: float | None = None
        if response is not None and self.respect_retry_after_header:
            delay = self.get_retry_after(response)
        if delay is None:
            delay = self.get_backoff_time()
        delay = max(0.0, min(delay, self.retry_after_cap))
        if self.on_retry is not None:
            self.on_retry(delay)
        self.sleeper(delay)
        if self.rate_limit is not None and self.retry_path is not None:
            self.rate_limit(self.retry_path)


@dataclass(frozen=True)
class _Route:
    """Where one path's requests go: its pool, the URL to ask the pool for, and every header
    but the body's length."""

    pool: HTTPConnectionPool
    url: str
    headers: dict[str, str] = field(repr=False)  # the key's among them


class ApiClient:
    """A session against one API root, one per source.

    ``call`` may run from several threads at once (list pages and progress requests are read
    concurrently): requests' Session and urllib3's pool are safe for that, and the retry
    counter is guarded.
    """

    def __init__(
        self,
        base_url: str,
        api_key: Secret | None,
        http: HttpSettings | None = None,
        *,
        sleep: Callable[[float], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        cancel: threading.Event | None = None,
        rate_limit: Callable[[str], None] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http or HttpSettings()
        self.retries = 0
        self._retries_lock = threading.Lock()
        # Times each request against its deadline, and list pages for reading ahead.
        self.monotonic = monotonic
        self._cancel = cancel
        self._rate_limit = rate_limit
        self._scrubber = scrubber(api_key.reveal()) if api_key is not None else scrubber()
        self._session = requests.Session()
        self._routes: dict[tuple[str, tuple[tuple[str, str], ...]], _Route] = {}
        self._timeout = Timeout(connect=self.http.connect_timeout, read=self.http.read_timeout)
        # Never consult ~/.netrc or proxy env for credentials; our auth object is the only source.
        self._session.trust_env = False
        if api_key is not None:
            self._session.auth = BearerAuth(api_key)
        self._session.headers.update(
            {
                "Accept": "application/json",
                "Content-Type": "application/json",
                "Accept-Encoding": "gzip, deflate",
                "User-Agent": _USER_AGENT,
            }
        )
        retry = _Retry(
            total=self.http.max_retries,
            connect=self.http.max_retries,
            read=self.http.max_retries,
            status=self.http.max_retries,
            other=0,
            redirect=0,
            allowed_methods=frozenset({"POST"}),
            status_forcelist=RETRY_STATUSES,
            backoff_factor=self.http.backoff_factor,
            backoff_max=self.http.backoff_max,
            backoff_jitter=self.http.backoff_jitter,
            respect_retry_after_header=True,
            raise_on_status=False,
            raise_on_redirect=False,
        )
        retry.sleeper = _sleep if sleep is None else sleep
        if cancel is not None:
            retry.sleeper = _cancellable(cancel, sleep)
        retry.on_retry = self._count_retry
        retry.retry_after_cap = self.http.retry_after_cap
        retry.rate_limit = rate_limit
        self._retry = retry
        self._adapter = HTTPAdapter(max_retries=retry, pool_connections=4, pool_maxsize=16)
        self._session.mount("http://", self._adapter)
        self._session.mount("https://", self._adapter)

    def __repr__(self) -> str:
        return f"ApiClient(base_url={self.base_url!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    def _count_retry(self, delay: float) -> None:
        with self._retries_lock:
            self.retries += 1
            count = self.retries
        log.debug("retrying in %.2fs (retry %d)", delay, count)

    def call(
        self, path: str, body: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> Any:
        """POST ``body`` to ``path`` and return the envelope's ``data`` (raises on any error).

        ``headers`` are added to this request only (Milvus reads the database from one).
        """
        if self._cancel is not None and self._cancel.is_set():
            raise Cancelled()
        if self._rate_limit is not None:
            self._rate_limit(path)
        status, payload = self._post(path, body, headers)
        return parse_envelope(status, payload)

    def _post(
        self, path: str, body: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> tuple[int, Any]:
        started = self.monotonic()
        route = self._route(path, headers)
        data = json.dumps(body).encode()
        try:
            response = route.pool.urlopen(
                "POST",
                route.url,
                body=data,
                headers={**route.headers, "Content-Length": str(len(data))},
                redirect=False,
                assert_same_host=False,
                preload_content=False,
                decode_content=False,
                retries=self._retry,
                timeout=self._timeout,
            )
        except (HTTPError, OSError) as exc:
            raise self._send_failed(path, exc) from exc
        try:
            raw = self._read_body(response, started, path)
        except BaseException:
            response.close()  # a half-read connection is closed, not handed back
            raise
        finally:
            response.release_conn()
        status = response.status
        log.debug(
            "POST %s -> %s (%d bytes, %.3fs)", path, status, len(raw), self.monotonic() - started
        )
        if 300 <= status < 400:
            raise ProtocolError(f"{path}: refusing to follow a redirect (HTTP {status})")
        payload = decode_json(raw, status, path, self._scrubber)
        if self._scrubber.suspects(raw):
            payload = scrub_payload(payload, self._scrubber, path)
        if status in RETRY_STATUSES:
            tried = f"{path}: HTTP {status} after {self.http.max_retries} retries"
            raise ApiStatusError(
                f"{tried}: {error_message(payload)}",
                http_status=status,
                code=payload.get("code") if isinstance(payload, dict) else None,
            )
        return status, payload

    def _route(self, path: str, headers: Mapping[str, str] | None) -> _Route:
        """Where requests to ``path`` with the call's ``headers`` go, worked out by requests
        once per path as ``Session.send`` would for each: the session's headers and the
        call's, the key, the pool and its TLS settings (verified against certifi's roots).
        No proxy: the session does not read the environment. (A cookie the server sets is not
        sent back: the API sets none.)"""
        key = (path, tuple(sorted(headers.items())) if headers else ())
        route = self._routes.get(key)
        if route is None:
            request = self._session.prepare_request(
                requests.Request(
                    "POST", f"{self.base_url}{path}", headers=dict(headers) if headers else None
                )
            )
            # Unannotated in types-requests.
            verify_tls: Callable[..., None] = self._adapter.cert_verify
            try:
                pool = self._adapter.get_connection_with_tls_context(request, True, proxies={})
                verify_tls(pool, self.base_url, True, None)
            except (requests.exceptions.InvalidURL, HTTPError, OSError) as exc:
                raise TransportError(f"{path}: cannot reach {self.base_url}: {exc}") from exc
            assert isinstance(pool, HTTPConnectionPool)  # what a PoolManager hands out
            route = self._routes[key] = _Route(
                pool, self._adapter.request_url(request, {}), dict(request.headers)
            )
        return route

    def _send_failed(self, path: str, exc: BaseException) -> TransportError:
        """The error for a request that got no response (the last try's, once retries ran out)."""
        cause = exc.reason if isinstance(exc, MaxRetryError) else exc
        if isinstance(cause, ResponseError):
            return TransportError(f"{path}: gave up after {self.http.max_retries} retries")
        # urllib3 counts a refused connection as a connect timeout too.
        if isinstance(cause, TimedOut) and not isinstance(cause, NewConnectionError):
            return TransportError(
                f"{path}: timed out after {self.http.max_retries} retries ({_reason(exc)})"
            )
        return TransportError(f"{path}: cannot reach {self.base_url}: {_reason(exc)}")

    def _read_body(self, response: BaseHTTPResponse, started: float, path: str) -> bytes:
        deadline = started + self.http.request_deadline
        cap = self.http.max_body_bytes
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        decoder = _decoder(encoding, path)
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                if self.monotonic() > deadline:
                    raise TransportError(
                        f"{path}: response not complete within {self.http.request_deadline:g}s"
                    )
                chunk = response.read1(65536, decode_content=False)
                if not chunk:
                    break
                if decoder is not None:
                    # max_length bounds what one chunk can expand to: a gzip bomb stops at the cap.
                    chunk = decoder.decompress(chunk, cap - size + 1)
                    if decoder.unconsumed_tail:
                        raise ProtocolError(f"{path}: response body exceeds {cap} bytes")
                size += len(chunk)
                if size > cap:
                    raise ProtocolError(f"{path}: response body exceeds {cap} bytes")
                chunks.append(chunk)
            if decoder is not None:
                tail = decoder.flush()
                if size + len(tail) > cap:
                    raise ProtocolError(f"{path}: response body exceeds {cap} bytes")
                chunks.append(tail)
        except zlib.error as exc:
            raise ProtocolError(f"{path}: response body is not valid {encoding}: {exc}") from exc
        except (HTTPError, OSError) as exc:
            # urllib3 wraps socket timeouts and protocol errors in its own exception types.
            raise TransportError(f"{path}: connection failed mid-response: {exc}") from exc
        return b"".join(chunks)


def _decoder(encoding: str, path: str) -> Any:
    if encoding in ("identity", ""):
        return None
    if encoding == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    raise ProtocolError(f"{path}: unsupported Content-Encoding {encoding!r}")


def _reason(exc: BaseException) -> str:
    # urllib3 nests its errors (MaxRetryError, then the cause); the innermost is the readable one.
    inner: BaseException = exc
    while True:
        nxt = getattr(inner, "reason", None) or (inner.args[0] if inner.args else None)
        if isinstance(nxt, BaseException) and nxt is not inner:
            inner = nxt
            continue
        break
    return redact(type(inner).__name__ + (f": {inner}" if str(inner) else ""))
