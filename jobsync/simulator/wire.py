"""What crosses the wire: a request as the API layer sees it, and the reply it sends back.

Kept apart from the HTTP server so the protocol modules (`zilliz`, `milvus`) and the faults can be
written and reasoned about as plain functions from request to reply, without sockets.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from typing import Any

JSON_TYPE = "application/json"

_JOBS = "/v2/vectordb/jobs/import"
LIST_PATH = f"{_JOBS}/list"
PROGRESS_PATH = f"{_JOBS}/getProgress"  # Zilliz Cloud only
DESCRIBE_PATH = f"{_JOBS}/describe"  # what the official SDKs call
GET_PROGRESS_PATH = f"{_JOBS}/get_progress"


@dataclass(frozen=True)
class Reply:
    """One HTTP answer, fully rendered.

    `code` is the envelope code when the body is a JSON envelope (for `RequestRecord`), else None.
    """

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = (("Content-Type", JSON_TYPE),)
    code: int | None = None

    def with_header(self, name: str, value: str) -> Reply:
        kept = tuple((k, v) for k, v in self.headers if k.lower() != name.lower())
        return replace(self, headers=(*kept, (name, value)))


@dataclass(frozen=True)
class ApiRequest:
    """A request as the API layer sees it, decoded once outside the simulator's lock.

    `body` is the decoded JSON object, or None when the body was empty, not JSON, or not an object;
    `malformed` tells the last two apart from an empty body.
    """

    path: str
    authorization: str | None
    body: dict[str, Any] | None
    malformed: bool

    @classmethod
    def decode(cls, path: str, headers: dict[str, str], raw: bytes) -> ApiRequest:
        authorization = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
        body: dict[str, Any] | None = None
        malformed = False
        if raw.strip():
            try:
                parsed = json.loads(raw)
            except (ValueError, RecursionError):
                malformed = True
            else:
                if isinstance(parsed, dict):
                    body = parsed
                else:
                    malformed = True
        return cls(path, authorization, body, malformed)


def json_reply(payload: dict[str, Any], status: int = 200) -> Reply:
    code = payload.get("code")
    # Compact and raw UTF-8, as the Go servers emit it; it also keeps a 100-record page small.
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    try:
        body = text.encode()
    except UnicodeEncodeError:
        # A lone surrogate (forced by a test) cannot be UTF-8: send it as a \ud800 escape,
        # which is what a hostile server would put on the wire.
        body = json.dumps(payload, separators=(",", ":")).encode()
    return Reply(status, body, code=code if isinstance(code, int) else None)


def envelope(code: int, message: str, status: int = 200) -> Reply:
    return json_reply({"code": code, "message": message}, status)


def success(data: Any) -> Reply:
    return json_reply({"code": 0, "data": data})


def http_error(status: int, message: str | None = None) -> Reply:
    """A JSON error body for a plain HTTP failure (404, 405, 413, a faulted 503, ...)."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    return envelope(status, message or phrase, status)


def bearer_token(authorization: str | None) -> str | None:
    """The token of a `Bearer <token>` Authorization header, else None."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def bearer_matches(authorization: str | None, api_key: str | None) -> bool:
    """Whether an Authorization header carries `Bearer <api_key>`; any request passes if no key."""
    if api_key is None:
        return True
    token = bearer_token(authorization)
    # Constant-time: the simulator stands in for a real auth check, so it behaves like one.
    return token is not None and hmac.compare_digest(token.encode(), api_key.encode())


def is_int(value: object) -> bool:
    """A JSON integer; `isinstance(True, int)` holds in Python, but JSON true is not a page size."""
    return isinstance(value, int) and not isinstance(value, bool)


def rfc3339(moment: datetime | None, offset: timedelta = timedelta(0)) -> str:
    """`2024-04-01T06:17:55Z` (or with a +hh:mm offset, as Milvus servers print), "" for None."""
    if moment is None:
        return ""
    local = moment.astimezone(timezone(offset))
    if not offset:
        return local.strftime("%Y-%m-%dT%H:%M:%SZ")
    return local.isoformat(timespec="seconds")
