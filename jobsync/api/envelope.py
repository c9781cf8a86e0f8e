"""What an answer of the import-job API means: its envelope, its JSON, the key masked in it.

Every answer is a JSON object ``{"code": ..., "data": ..., "message": ...}``; ``code`` 0 (or
200) is success, whatever the HTTP status says. Codes come as numbers or strings of digits. A
rejected key is told apart from every other error, so that it is never retried. A body that is
not JSON is an error on a success status, and quoted (masked, cut short) on any other: a proxy's
error page.
"""

from __future__ import annotations

import json
from typing import Any

from jobsync.errors import ApiStatusError, AuthError, ProtocolError
from jobsync.observability.redact import Scrubber, redact

__all__ = ["decode_json", "error_message", "parse_envelope", "scrub_payload"]

SUCCESS_CODES = frozenset({0, 200})
AUTH_CODES = frozenset({80001, 80002, 21119, 1800})
MESSAGE_LIMIT = 300


def parse_envelope(status: int, payload: Any) -> Any:
    """Return ``data`` of a success envelope, or raise the error the envelope describes."""
    code = _normal_code(payload.get("code") if isinstance(payload, dict) else None)
    if status == 200 and isinstance(payload, dict) and _is_success(code):
        return payload.get("data")
    text = error_message(payload)
    if status in (401, 403) or (
        isinstance(code, int) and not isinstance(code, bool) and code in AUTH_CODES
    ):
        raise AuthError(
            f"the API key was rejected (HTTP {status}, code {code}): {text}",
            http_status=status,
            code=code,
        )
    if status == 200 and not isinstance(payload, dict):
        raise ProtocolError("response is JSON but not an object envelope")
    if status == 200 and "code" not in payload:
        raise ProtocolError("response envelope has no 'code'")
    detail = f"HTTP {status}" + (f", code {code}" if code is not None else "")
    raise ApiStatusError(f"API error ({detail}): {text}", http_status=status, code=code)


def _normal_code(code: object) -> object:
    """Codes come as ints or strings of digits; compare them as ints (but never a bool)."""
    if isinstance(code, str) and code.strip().lstrip("-").isdigit():
        return int(code)
    return code


def _is_success(code: object) -> bool:
    # bool is an int in Python: False would otherwise equal 0.
    return not isinstance(code, bool) and isinstance(code, int) and code in SUCCESS_CODES


def error_message(payload: Any) -> str:
    if isinstance(payload, dict):
        text = payload.get("message")
        text = text if isinstance(text, str) else json.dumps(payload)[: 2 * MESSAGE_LIMIT]
    elif isinstance(payload, _RawBody):
        text = payload.text
    else:
        text = str(payload)
    # Redacted before it is cut short: a cut could leave a part of a secret that no longer
    # looks like one.
    text = redact(" ".join(text.split()))
    if len(text) > MESSAGE_LIMIT:
        text = text[:MESSAGE_LIMIT] + "..."
    return text or "(no message)"


class _RawBody:
    """A body that was not JSON, kept only to quote the start of it in an error message."""

    def __init__(self, raw: bytes, scrub: Scrubber) -> None:
        self.text = scrub(raw[: 2 * MESSAGE_LIMIT].decode("utf-8", "replace"))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def decode_json(raw: bytes, status: int, path: str, scrub: Scrubber) -> Any:
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise ProtocolError(f"{path}: response JSON is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        if status != 200:
            # An error page from a proxy or load balancer: report the status, quote the body.
            return _RawBody(raw, scrub)
        snippet = scrub(" ".join(raw[:120].decode("utf-8", "replace").split()))[:80]
        raise ProtocolError(
            f"{path}: response is not valid JSON ({type(exc).__name__}: {scrub(str(exc))}); "
            f"it starts with {snippet!r}"
        ) from None


def scrub_payload(payload: Any, scrub: Scrubber, path: str) -> Any:
    """``payload`` with the key masked in every string, dictionary keys included."""

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return scrub(value)
        if isinstance(value, dict):
            return {scrub(k): walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    if isinstance(payload, _RawBody):
        return payload  # scrubbed when it was made
    try:
        return walk(payload)
    except RecursionError:
        # json.loads and this walk both recurse per level, from different stack depths.
        raise ProtocolError(f"{path}: response JSON is nested too deeply") from None
