"""Injected misbehaviour: faults that replace or distort one reply, and quirks of a broken server.

A `Fault` acts on single requests chosen by number, path, list page and budget. It fires before
the API checks anything, as a proxy or load balancer in front of the real service would: a faulted
request is not authenticated or validated. Which reply a firing fault sends is decided in order:

1. `body` set: exactly those bytes, with `status` and `content_type` (malformed JSON, HTML, ...).
2. `code` set: a JSON envelope `{"code": code, "message": ...}` with `status` (use `status=200`
   for the API's own error style, e.g. 80001 or 96018).
3. `trickle` set: the normal reply, sent one byte at a time (to test client deadlines on an
   answer that looks healthy); `status` is not used.
4. `status` other than 200: a JSON error envelope `{"code": status, "message": <reason phrase>}`.
5. `status == 200`: the normal reply (useful with `delay`, `retry_after` or `transform`).

Then `retry_after` adds a header, `transform` may rewrite the reply (the hook for new fault kinds:
gzip bombs, huge bodies, deep nesting are each a small function from Reply to Reply), `delay`
sleeps before the reply is sent and `trickle` paces its bytes. Sleeping happens outside the
simulator's lock.

`Quirks` are standing misbehaviours of the list endpoint itself, which need the world rather than
the reply bytes: a server that ignores `currentPage`, or reports an absurd `count`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from .wire import JSON_TYPE, LIST_PATH, Reply, envelope, http_error


@dataclass(eq=False)
class Fault:
    """One injected failure; see the module docstring for how its fields combine.

    `on_requests` holds 1-based API request numbers (list and progress requests, counted since
    `start()` or `reset_counters()`); None fires on every request. `page` fires only on list
    requests for that `currentPage`: a client that reads pages concurrently numbers its requests
    in no fixed order, but a page is a page. `fired` counts firings, so a test can assert how
    often the fault was used.
    """

    status: int = 503
    body: bytes | None = None
    code: int | None = None
    retry_after: str | None = None
    on_requests: Collection[int] | None = None
    times: int | None = None
    path: str | None = None
    delay: float = 0.0
    trickle: float | None = None
    content_type: str = JSON_TYPE
    transform: Callable[[Reply], Reply] | None = None
    page: int | None = None
    fired: int = field(default=0, compare=False)

    def matches(self, number: int, path: str, body: Mapping[str, Any] | None = None) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        if self.path is not None and self.path != path:
            return False
        if self.page is not None and (
            path != LIST_PATH or body is None or body.get("currentPage", 1) != self.page
        ):
            return False
        return self.on_requests is None or number in self.on_requests

    def own_reply(self, messages: Mapping[int, str]) -> Reply | None:
        """The reply this fault sends instead of the normal one, or None to keep the normal one."""
        if self.body is not None:
            return Reply(self.status, self.body, (("Content-Type", self.content_type),))
        if self.code is not None:
            return envelope(self.code, messages.get(self.code, "simulated error"), self.status)
        if self.trickle is not None or self.status == 200:
            return None
        return http_error(self.status)

    def finish(self, reply: Reply) -> Reply:
        if self.retry_after is not None:
            reply = reply.with_header("Retry-After", self.retry_after)
        if self.transform is not None:
            reply = self.transform(reply)
        return reply


@dataclass
class Quirks:
    """Standing misbehaviours of the list endpoint (off by default)."""

    ignore_current_page: bool = False  # always serve page 1, whatever currentPage says
    count_override: int | None = None  # report this `count` instead of the true total


class FaultBook:
    """The active faults, in the order they were added; the first that matches a request fires."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        self._faults.append(fault)

    def clear(self) -> None:
        self._faults.clear()

    def take(self, number: int, path: str, body: Mapping[str, Any] | None = None) -> Fault | None:
        """The fault that fires for this request (its budget spent), or None."""
        for fault in self._faults:
            if fault.matches(number, path, body):
                fault.fired += 1
                return fault
        return None
