"""The `Simulator` facade: one world, one lock, one HTTP server, faults, and the test-facing API.

Every request is answered from a consistent world: the page is built under the same lock that
mutations (`advance`, `add_jobs`, ...) take, so a page never mixes two states of the list. The lock
is re-entrant because `on_request` callbacks run under it and may mutate the world (a test adding
jobs while a client pages). Sleeping (latency, fault delays, trickle) happens outside the lock.

`mode="zilliz"` (default) serves the Zilliz Cloud v2 API (see `zilliz.py`); `mode="milvus"` serves
a self-hosted Milvus REST v2 server (see `milvus.py`): no paging, random order, 3-hour retention
unless `retention` says otherwise.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal, Protocol

from .faults import Fault, FaultBook, Quirks
from .milvus import MILVUS_RETENTION, MilvusApi
from .model import RequestRecord, SimJob, StateChange
from .rates import PeakRate
from .server import HttpServerThread, Planned
from .wire import ApiRequest, Reply, bearer_token, http_error
from .world import Job, World
from .zilliz import ZillizApi

DEFAULT_CLUSTER_ID = "in01-sim0000000000000"

RequestCallback = Callable[[int, str, "dict[str, Any] | None"], None]


class _Api(Protocol):
    @property
    def paths(self) -> frozenset[str]: ...

    @property
    def messages(self) -> Mapping[int, str]: ...

    def not_found(self) -> Reply: ...

    def handle(self, request: ApiRequest, now: datetime) -> Reply: ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Simulator:
    """A simulated import-job API, in process, over real HTTP on loopback.

    `jobs` initial jobs are created in every cluster, with states drawn from `initial_states`
    (state -> weight). All randomness comes from `random.Random(seed)`. `clock` returns an aware
    UTC datetime and dates every job, change and request. `retention` drops finished jobs from
    the list that long after they finish (None: never; in Milvus mode None means 3 hours).
    `latency` seconds are slept (with `sleep`) before every reply, outside the lock, so
    concurrent requests are slow together, as over a real network.

    It does not throttle, but it measures: `peak_rate()` is the most requests that started within
    any one second (per API key with `peak_rates()`), timed by `monotonic`.
    """

    def __init__(
        self,
        cluster_ids: Sequence[str] = (DEFAULT_CLUSTER_ID,),
        jobs: int = 100,
        api_key: str | None = "test-key",
        seed: int = 0,
        clock: Callable[[], datetime] | None = None,
        retention: timedelta | None = None,
        latency: float = 0.0,
        initial_states: Mapping[str, float] | None = None,
        *,
        mode: Literal["zilliz", "milvus"] = "zilliz",
        sleep: Callable[[float], None] = time.sleep,
        ignore_current_page: bool = False,
        count_override: int | None = None,
        max_request_records: int | None = 100_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(cluster_ids, str):
            raise TypeError("cluster_ids must be a sequence of ids, not one string")
        if latency < 0:
            raise ValueError("latency must be >= 0")
        if mode == "milvus" and retention is None:
            retention = MILVUS_RETENTION
        self.mode = mode
        self.latency = latency
        self.quirks = Quirks(ignore_current_page, count_override)
        self._clock = clock or _utc_now
        self._sleep = sleep
        self._lock = threading.RLock()
        self._hidden: dict[str, list[Job]] = {}  # per cluster: jobs hide_jobs took off the list
        self._world = World(
            tuple(cluster_ids),
            jobs,
            seed=seed,
            now=self._clock(),
            retention=retention,
            initial_states=initial_states,
        )
        self._api: _Api
        if mode == "zilliz":
            self._api = ZillizApi(self._world, api_key, self.quirks)
        elif mode == "milvus":
            self._api = MilvusApi(self._world, api_key, order_seed=seed + 1)
        else:
            raise ValueError(f"unknown mode {mode!r}")
        self._faults = FaultBook()
        self._callbacks: list[RequestCallback] = []
        # Bounded so a long-running `jobsync simulate` does not grow without limit.
        self._requests: deque[RequestRecord] = deque(maxlen=max_request_records)
        self._request_count = 0
        self._api_request_count = 0
        self._monotonic = monotonic
        self._rates = PeakRate()
        self._http: HttpServerThread | None = None
        self._url: str | None = None
        self._progression: tuple[threading.Thread, threading.Event] | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on (host, port) from a daemon thread; port 0 picks a free port. Returns the URL."""
        if self._http is not None:
            raise RuntimeError(f"already serving at {self._http.url}")
        self.reset_counters()
        self._http = HttpServerThread(self, host, port)
        self._url = self._http.url
        return self._url

    @property
    def url(self) -> str:
        """Where it serves (after `stop()`, where it served: requests there are refused)."""
        if self._url is None:
            raise RuntimeError("the simulator has not been started: call start() first")
        return self._url

    def stop(self) -> None:
        """Stop the progression thread and the server, cutting open connections. Idempotent."""
        self.stop_progression()
        http, self._http = self._http, None
        if http is not None:
            http.stop()

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def run_progression(
        self, interval: float = 2.0, fraction: float = 0.05, new_jobs: int = 2
    ) -> None:
        """Every `interval` s, advance `fraction` of the open jobs, add `new_jobs` per cluster.

        For `jobsync simulate` and demos; tests call `advance()` themselves.
        """
        if self._progression is not None:
            raise RuntimeError("progression is already running")
        stopping = threading.Event()

        def tick() -> None:
            while not stopping.wait(interval):
                self.advance(fraction=fraction)
                for cluster_id in self.cluster_ids:
                    self.add_jobs(new_jobs, cluster_id)

        thread = threading.Thread(target=tick, name="simulator progression", daemon=True)
        self._progression = (thread, stopping)
        thread.start()

    def stop_progression(self) -> None:
        progression, self._progression = self._progression, None
        if progression is not None:
            thread, stopping = progression
            stopping.set()
            thread.join()

    # -- the world ----------------------------------------------------------------------------

    @property
    def cluster_ids(self) -> tuple[str, ...]:
        return tuple(self._world.clusters)

    def advance(self, fraction: float | None = None, count: int | None = None) -> list[StateChange]:
        """Move open jobs one step along Pending -> Importing -> Completed | Failed.

        `fraction` of each cluster's Pending/Importing jobs (rounded stochastically), or exactly
        `count` across all clusters (all of them if fewer are open). Default: fraction=0.1.
        About one finishing job in five fails (`failure_ratio`), with a reason; held jobs
        (`hold_jobs`) stay where they are.
        """
        if fraction is None and count is None:
            fraction = 0.1
        with self._lock:
            return self._world.advance(self._clock(), fraction, count)

    def hold_jobs(self, cluster_id: str, job_ids: Iterable[str]) -> None:
        """Leave these jobs where they are on every later `advance()`, as stuck jobs stay
        (`set_state` still moves them)."""
        with self._lock:
            self._world.cluster(cluster_id, self._clock()).held.update(job_ids)

    @property
    def failure_ratio(self) -> float:
        """The share of jobs finishing on `advance()` that fail (0.2 unless set)."""
        with self._lock:
            return self._world.failure_ratio

    @failure_ratio.setter
    def failure_ratio(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError("failure_ratio must be within 0..1")
        with self._lock:
            self._world.failure_ratio = value

    def set_state(
        self, cluster_id: str, job_id: str, state: str, reason: str | None = None
    ) -> StateChange:
        """Force one job into any state string; a Failed job without `reason` gets a random one.

        Setting the state a job already has changes nothing and is not logged.
        """
        with self._lock:
            return self._world.set_state(cluster_id, job_id, state, reason, self._clock())

    def add_jobs(self, n: int, cluster_id: str | None = None) -> list[SimJob]:
        """Create `n` Pending jobs (default: first cluster); they head the list, newest first."""
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._lock:
            return self._world.add_jobs(n, cluster_id, self._clock())

    def remove_jobs(self, cluster_id: str, job_ids: Iterable[str]) -> int:
        """Drop jobs from the list, as retention would; returns how many were there."""
        with self._lock:
            return self._world.remove_jobs(cluster_id, job_ids, self._clock())

    def hide_jobs(self, cluster_id: str, job_ids: Iterable[str]) -> datetime:
        """Drop jobs from the list for a while (``relist_jobs`` brings them back unchanged), as
        an API that briefly leaves jobs out would; returns the simulator's time of it."""
        with self._lock:
            now = self._clock()
            self._hidden.setdefault(cluster_id, []).extend(
                self._world.take_jobs(cluster_id, job_ids, now)
            )
            return now

    def relist_jobs(self, job_ids: Iterable[str] | None = None) -> datetime:
        """List hidden jobs again (default: all of them); returns the simulator's time of it."""
        wanted = None if job_ids is None else set(job_ids)
        with self._lock:
            now = self._clock()
            for cluster_id, hidden in self._hidden.items():
                back = [j for j in hidden if wanted is None or j.job_id in wanted]
                self._world.put_jobs(cluster_id, back, now)
                hidden[:] = [j for j in hidden if j not in back]
            return now

    def jobs(self, cluster_id: str | None = None) -> list[SimJob]:
        """Copies of the listed jobs, in list order (newest first)."""
        with self._lock:
            return self._world.snapshot(cluster_id or self._world.first_cluster_id, self._clock())

    @property
    def change_log(self) -> list[StateChange]:
        with self._lock:
            return list(self._world.change_log)

    # -- observation and faults -------------------------------------------------------------

    @property
    def request_count(self) -> int:
        with self._lock:
            return self._request_count

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    def reset_counters(self) -> None:
        """Zero the request count, the API request numbers faults count and the peak rates;
        forget the records."""
        with self._lock:
            self._request_count = 0
            self._api_request_count = 0
            self._requests.clear()
            self._rates.reset()

    def peak_rate(self) -> int:
        """The most requests (of any kind, with any key) that started within one second."""
        with self._lock:
            return self._rates.peak

    def peak_rates(self) -> dict[str | None, int]:
        """The same per API key (the Bearer token; None for requests without one)."""
        with self._lock:
            return self._rates.peaks()

    def endpoint_peak_rates(self) -> dict[tuple[str | None, str], int]:
        """The same per API key and path: the documented limit is per user and endpoint."""
        with self._lock:
            return self._rates.endpoint_peaks()

    def rate_summary(self) -> str:
        """One line for people: requests served and the peak rates (keys are not shown)."""
        with self._lock:
            peaks = sorted(self._rates.peaks().values(), reverse=True)
            total = self._rates.total
            peak = self._rates.peak
        per_key = f"; busiest key {peaks[0]}/s" if len(peaks) > 1 else ""
        return (
            f"{total} requests served, at most {peak} started within one second{per_key} "
            "(the API allows 20 per second per key and endpoint)"
        )

    def add_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.add(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def on_request(self, callback: RequestCallback) -> Callable[[], None]:
        """Call `callback(number, path, body)` under the lock before each API request is answered.

        Returns a function that unregisters it.
        """
        with self._lock:
            self._callbacks.append(callback)

        def unregister() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return unregister

    @property
    def ignore_current_page(self) -> bool:
        return self.quirks.ignore_current_page

    @ignore_current_page.setter
    def ignore_current_page(self, value: bool) -> None:
        self.quirks.ignore_current_page = value

    @property
    def count_override(self) -> int | None:
        return self.quirks.count_override

    @count_override.setter
    def count_override(self, value: int | None) -> None:
        self.quirks.count_override = value

    # -- the Responder protocol used by the HTTP server ----------------------------------------

    def respond(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> Planned:
        # Decoded before taking the lock: it needs no shared state.
        request = ApiRequest.decode(path, headers, raw)
        fault: Fault | None = None
        number: int | None = None
        with self._lock:
            # Timed under the lock, so the times reach the counter in order.
            # Per key: the token of a Bearer header, else the header itself (or None).
            token = bearer_token(request.authorization)
            key = request.authorization if token is None else token
            self._rates.record(key, self._monotonic(), path)
            self._request_count += 1
            now = self._clock()
            if path not in self._api.paths:
                reply = self._api.not_found()
            elif method != "POST":
                reply = http_error(405).with_header("Allow", "POST")
            else:
                self._api_request_count += 1
                number = self._api_request_count
                for callback in list(self._callbacks):
                    callback(number, path, request.body)
                fault = self._faults.take(number, path, request.body)
                if fault is None:
                    reply = self._api.handle(request, now)
                else:
                    own = fault.own_reply(self._api.messages)
                    reply = own if own is not None else self._api.handle(request, now)
                    reply = fault.finish(reply)
            self._requests.append(
                RequestRecord(
                    path=path,
                    method=method,
                    body=request.body,
                    status=reply.status,
                    time=now,
                    has_authorization=request.authorization is not None,
                    number=number,
                    code=reply.code,
                )
            )
        if fault is None:
            return Planned(reply, self.latency)
        return Planned(reply, self.latency + fault.delay, fault.trickle)

    def pace(self, seconds: float) -> None:
        self._sleep(seconds)
