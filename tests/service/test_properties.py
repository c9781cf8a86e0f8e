"""A Hypothesis state machine over simulator mutations and sync passes, on SQLite and PostgreSQL.

The machine mutates a simulated job list (jobs progress, are forced into any state string,
including legacy spellings and unknown ones, are created, age out, drop from the list and come
back) and runs passes that succeed, fail on a page (503 until the retries are spent), die inside
the write transaction or just after its commit, read jobs that change state between pages, or
read a list that moves under them (jobs arriving at its head, or leaving it mid-walk), lose
their lock to a pass that overtakes them (and must then write nothing), or run with a clock an
hour or a day behind (and must refuse to write). It keeps a model of the last committed
observations and checks, after every step:

- ``import_jobs`` (state, raw_state, vanished or not) equals the model;
- every pass wrote exactly the transitions the model expects, and each job's history is a
  consistent chain (no two consecutive transitions to the same state);
- a snapshot called complete lists every job that was listed from its start to its end;
- every window ``(window_start, observed_at]`` contains the true moment of its change, taken
  from the simulator's ``change_log`` and from when the test removed or re-listed a job;
- the vanish rule: a job is vanished iff at least two complete snapshots were committed since
  the last committed snapshot that listed it;
- failed and killed passes leave no history, and only killed passes leave 'running' rows,
  which the next pass marks 'abandoned';
- the jobs' first_seen_at, state_since, finished_at, last_seen_at and vanished_at agree with
  their history and with the runs that observed them.

Each example has one or two clusters; with two, every pass syncs both concurrently (as
``sync_all`` does), and each is checked on its own. PostgreSQL and SQLite each get one migrated
database per test, emptied for every example.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, select, text

import jobsync.service.sync
from jobsync.config import HttpSettings, Source
from jobsync.domain.states import TERMINAL_STATES, canonical_state
from jobsync.errors import ClockError, SupersededError
from jobsync.service.sync import PassResult, sync_all, sync_source
from jobsync.simulator import LIST_PATH, Fault, Reply, Simulator
from jobsync.storage import bulk
from jobsync.storage.locking import SyncLock
from jobsync.storage.schema import import_job_transitions, import_jobs, metadata, sync_runs
from tests.conftest import API_KEY, CLUSTER, settings_for

MAX_RETRIES = 2
NO_SLEEP: Callable[[float], None] = lambda _s: None  # noqa: E731

FAST = settings(
    max_examples=14,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
THOROUGH = settings(FAST, max_examples=120, stateful_step_count=50)

KNOWN_STATES = (
    "Pending",
    "Importing",
    "Completed",
    "Failed",
    "ImportPending",
    "InProgress",
    "ImportRunning",
    "ImportStarted",
    "PreImporting",
    "ImportCompleted",
    "ImportFailed",
    "ImportFailedAndCleaned",
)
ODD_STATES = ("Unknown", "pending", "COMPLETED", "Importing ", "", "Paused", "完了", "Failed\x00")
raw_states = st.one_of(
    st.sampled_from(KNOWN_STATES + ODD_STATES),
    # Lone surrogates are left to tests/storage/test_storage.py: JSON would pair up two of them.
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=8),
)
picks = st.lists(st.integers(0, 10**6), min_size=1, max_size=3)

Key = tuple[str, str, str | None, str | None, str | None, str | None]


class Killed(BaseException):
    """What a SIGKILL would do to the pass: nothing after this point runs."""


# -- the model ----------------------------------------------------------------------------------


@dataclass
class ModelJob:
    state: str
    raw: str | None
    vanished: bool = False
    missed: int = 0  # consecutive complete snapshots that did not list the job


@dataclass
class Model:
    """The last committed observations, updated only when a pass commits."""

    jobs: dict[str, ModelJob] = field(default_factory=dict)

    def proven(self, listed: Iterable[str]) -> bool:
        """Whether a walk that listed ``listed`` (in list order) may be called complete as far
        as the jobs stored say: no job new, vanished or missed by a complete snapshot is listed
        below a job listed before (jobsync.domain.completeness.arrived_below_the_head)."""
        below = False
        for job_id in listed:
            job = self.jobs.get(job_id)
            if job is not None and not job.vanished and not job.missed:
                below = True
            elif below:
                return False
        return True

    def commit(
        self, listed: dict[str, str], complete: bool, order: Iterable[str] | None = None
    ) -> tuple[Counter[Key], bool]:
        """Apply one pass that listed ``listed`` (job_id -> raw state), called complete by its
        walk or not, whose last walk saw ``order`` (default: ``listed``, in list order); return
        the transitions (job_id, kind, from, to, raw_from, raw_to) it must have written, and
        whether it was complete. Mirrors history.py."""
        complete = complete and self.proven(listed if order is None else order)
        expected: Counter[Key] = Counter()
        for job_id, sent in listed.items():
            raw = _as_stored(sent)
            state = canonical_state(raw)
            job = self.jobs.get(job_id)
            if job is None:
                expected[(job_id, "first_seen", None, state, None, raw)] += 1
                self.jobs[job_id] = ModelJob(state, raw)
                continue
            if job.vanished:
                expected[(job_id, "reappeared", job.state, state, job.raw, raw)] += 1
            elif job.state != state:
                expected[(job_id, "change", job.state, state, job.raw, raw)] += 1
            job.state, job.raw, job.vanished, job.missed = state, raw, False, 0
        for job_id, job in self.jobs.items():
            if job_id in listed or job.vanished or not complete:
                continue  # an incomplete snapshot never counts as a miss
            job.missed += 1
            if job.missed >= 2:
                job.vanished = True
                expected[(job_id, "vanished", job.state, None, job.raw, None)] += 1
        return expected, complete


@dataclass(frozen=True)
class Row:
    id: int
    job_id: str
    kind: str
    from_state: str | None
    to_state: str | None
    raw_from_state: str | None
    raw_to_state: str | None
    window_start: datetime | None
    observed_at: datetime
    sync_run_id: int

    @property
    def key(self) -> Key:
        return (
            self.job_id,
            self.kind,
            self.from_state,
            self.to_state,
            self.raw_from_state,
            self.raw_to_state,
        )


def _as_stored(raw: str) -> str:
    """The text policy (jobsync/domain/records.py): NUL, which PostgreSQL cannot store, becomes U+FFFD."""
    return raw.replace("\x00", "\ufffd")


def _canonical_or_none(raw: str | None) -> str | None:
    return None if raw is None else canonical_state(raw)


def _latest(moments: list[datetime], until: datetime) -> datetime:
    earlier = [m for m in moments if m <= until]
    assert earlier, f"no true moment at or before {until}"
    return max(earlier)


# -- the machine --------------------------------------------------------------------------------

OTHER_CLUSTER = "in02-fedcba9876543210"
clusters = st.integers(0, 1)  # an index, taken modulo the number of clusters


class SyncMachine(RuleBasedStateMachine):
    """One or two clusters, each a source of every pass; two are synced concurrently."""

    def __init__(self, engine: Engine, db_url: str) -> None:
        super().__init__()
        self.engine = engine
        self.db_url = db_url
        _reset(engine)
        self.sim: Simulator | None = None
        self.clusters: tuple[str, ...] = ()
        self.page_size = 0
        self.models: dict[str, Model] = {}
        # Committed passes per cluster: (run id, jobs listed, complete).
        self.snapshots: dict[str, list[tuple[int, frozenset[str], bool]]] = defaultdict(list)
        self.hidden: dict[str, str] = {}  # job_id -> its cluster, while hide_jobs keeps it off
        self.appeared: dict[str, list[datetime]] = defaultdict(list)  # created or re-listed
        self.disappeared: dict[str, list[datetime]] = defaultdict(list)  # removed or hidden
        self.stale_runs: set[int] = set()  # left 'running' by a killed pass
        self.before_pass: dict[str, set[str]] = {}  # the listed jobs when the last pass began

    # -- setup --------------------------------------------------------------------------------

    @initialize(
        jobs=st.integers(0, 25),
        seed=st.integers(0, 2**16),
        page_size=st.integers(2, 6),
        two=st.booleans(),
    )
    def start(self, jobs: int, seed: int, page_size: int, two: bool) -> None:
        self.clusters = (CLUSTER, OTHER_CLUSTER) if two else (CLUSTER,)
        self.sim = Simulator(cluster_ids=self.clusters, jobs=jobs, api_key=API_KEY, seed=seed)
        self.sim.start()
        self.page_size = page_size
        for cluster in self.clusters:
            self.models[cluster] = Model()
            for job in self.sim.jobs(cluster):
                self.appeared[job.job_id].append(job.created_at)
        http = HttpSettings(
            connect_timeout=2,
            read_timeout=5,
            request_deadline=10,
            max_retries=MAX_RETRIES,
            backoff_factor=0.0,
            backoff_jitter=0.0,
            # The rate limiter waits in real time, not through the injected sleep.
            requests_per_second=1e6,
        )
        self.settings = settings_for(self.sim, self.db_url, page_size=page_size, http=http)
        assert [s.key for s in self.settings.sources] == list(self.clusters)

    def teardown(self) -> None:
        if self.sim is not None:
            self.sim.stop()

    @property
    def s(self) -> Simulator:
        assert self.sim is not None
        return self.sim

    def _cluster(self, index: int) -> str:
        return self.clusters[index % len(self.clusters)]

    # -- mutations of the job lists ------------------------------------------------------------

    @rule(fraction=st.floats(0.0, 1.0))
    def advance(self, fraction: float) -> None:
        self.s.advance(fraction=fraction)

    @rule(cluster=clusters, pick=st.integers(0, 10**6), state=raw_states)
    def set_state(self, cluster: int, pick: int, state: str) -> None:
        jobs = self.s.jobs(self._cluster(cluster))
        if jobs:
            self.s.set_state(self._cluster(cluster), jobs[pick % len(jobs)].job_id, state)

    @rule(cluster=clusters, n=st.integers(1, 4))
    def add_jobs(self, cluster: int, n: int) -> None:
        for job in self.s.add_jobs(n, self._cluster(cluster)):
            self.appeared[job.job_id].append(job.created_at)

    @rule(cluster=clusters, picks=picks)
    def remove_jobs(self, cluster: int, picks: list[int]) -> None:
        """Jobs age out of the list for good."""
        name = self._cluster(cluster)
        ids = self._pick(name, picks)
        with self.s._lock:  # the moment they go, as the simulator's own clock would say
            gone = datetime.now(UTC)
            self.s.remove_jobs(name, ids)
        for job_id in ids:
            self.disappeared[job_id].append(gone)

    @rule(cluster=clusters, picks=picks)
    def hide_jobs(self, cluster: int, picks: list[int]) -> None:
        """Jobs drop from the list for a while."""
        name = self._cluster(cluster)
        ids = self._pick(name, picks)
        gone = self.s.hide_jobs(name, ids)
        for job_id in ids:
            self.hidden[job_id] = name
            self.disappeared[job_id].append(gone)

    @precondition(lambda self: bool(self.hidden))
    @rule(pick=st.integers(0, 10**6), everything=st.booleans())
    def relist_jobs(self, pick: int, everything: bool) -> None:
        ids = sorted(self.hidden)
        ids = ids if everything else [ids[pick % len(ids)]]
        back = self.s.relist_jobs(ids)
        for job_id in ids:
            del self.hidden[job_id]
            self.appeared[job_id].append(back)

    def _pick(self, cluster: str, picks: list[int]) -> list[str]:
        jobs = [j.job_id for j in self.s.jobs(cluster)]
        return sorted({jobs[p % len(jobs)] for p in picks}) if jobs else []

    # -- passes ---------------------------------------------------------------------------------

    @rule()
    def sync(self) -> None:
        listed = self._listed()
        for result in self._pass():
            assert result.ok, result.error
            self._committed(result.source, result.run_id, listed[result.source], complete=True)

    @rule(k=st.integers(1, 12))
    def sync_with_a_page_failing(self, k: int) -> None:
        """Page k gets 503, as many times as there are tries: a source whose page k meets them
        all fails; with one source, a pass that reads page k does. (By page, not by request
        number: pages are read concurrently, so request numbers do not follow pages.)"""
        listed = self._listed()
        fault = self.s.add_fault(Fault(status=503, page=k, times=MAX_RETRIES + 1, path=LIST_PATH))
        try:
            results = self._pass()
        finally:
            self.s.clear_faults()
        if len(results) == 1:
            event(f"the failing page was {'' if fault.fired else 'not '}reached")
            assert fault.fired in (0, MAX_RETRIES + 1)
            assert results[0].ok == (not fault.fired)
        for result in results:
            if result.ok:
                self._committed(result.source, result.run_id, listed[result.source], complete=True)
            else:
                assert "503" in str(result.error)
                assert self._runs()[result.run_id] == "failed"

    @rule(where=st.sampled_from(["insert_new_jobs", "update_jobs", "insert_transitions", "commit"]))
    def sync_killed(self, where: str) -> None:
        """Every source's pass dies inside its write transaction after ``where`` ran (nothing
        is committed), or just after its commit; nothing records the death: a run that did not
        commit stays 'running' until the next pass marks it 'abandoned'."""
        listed = self._listed()
        module, name = (jobsync.service.sync, "apply_pass") if where == "commit" else (bulk, where)
        real = getattr(module, name)

        def dying(*args: Any, **kwargs: Any) -> Any:
            real(*args, **kwargs)
            raise Killed(where)

        before = max(self._runs(), default=0)
        with (
            patch.object(module, name, dying),
            patch.object(jobsync.service.sync, "fail_run", lambda *_a, **_k: None),
            pytest.raises(Killed),
        ):
            self._pass()
        with self.engine.connect() as conn:
            new = conn.execute(
                select(sync_runs.c.id, sync_runs.c.cluster_id, sync_runs.c.status).where(
                    sync_runs.c.id > before
                )
            ).all()
        assert sorted(cluster for _id, cluster, _status in new) == sorted(self.clusters)
        for run_id, cluster, status in new:
            if where == "commit":
                assert status == "succeeded"
                self._committed(cluster, run_id, listed[cluster], complete=True)
            else:
                assert status == "running"
                self.stale_runs.add(run_id)

    @rule(
        at=st.lists(st.integers(2, 12), min_size=1, max_size=3, unique=True),
        fraction=st.floats(0.1, 1.0),
    )
    def sync_while_jobs_progress(self, at: list[int], fraction: float) -> None:
        """Jobs change state while their pages are read (before request ``at``): the lists keep
        their members and order, so the snapshots are complete, and each job is stored as the
        last page that showed it said. What the pages said is taken from the replies."""
        shown: dict[str, str] = {}

        def advance(number: int, path: str, _body: dict[str, Any] | None) -> None:
            if path == LIST_PATH and number in at:
                self.s.advance(fraction=fraction)

        def capture(reply: Reply) -> Reply:
            for record in json.loads(reply.body)["data"]["records"]:
                shown[record["jobId"]] = record["state"]
            return reply

        unregister = self.s.on_request(advance)
        self.s.add_fault(Fault(status=200, path=LIST_PATH, transform=capture))
        try:
            results = self._pass()
        finally:
            unregister()
            self.s.clear_faults()
        listed = self._listed()
        assert set(shown) == {job_id for jobs in listed.values() for job_id in jobs}
        for result in results:
            assert result.ok, result.error
            seen = {job_id: shown[job_id] for job_id in listed[result.source]}
            self._committed(result.source, result.run_id, seen, complete=True)

    @rule()
    def sync_while_the_list_moves(self) -> None:
        """A job is created whenever page 1 is read again (to prove the walk complete): an
        arrival at the head, which only pushes the others down. The proof accounts for it, so
        every snapshot is complete after one walk, the arrival included."""
        added: Counter[str] = Counter()
        first_read: set[str] = set()

        def create(number: int, path: str, body: dict[str, Any] | None) -> None:
            body = body or {}
            cluster = body.get("clusterId")
            if path != LIST_PATH or body.get("currentPage") != 1:
                return
            if cluster not in first_read:
                first_read.add(cluster)  # the first page of the walk
                return
            for job in self.s.add_jobs(1, cluster):
                added[cluster] += 1
                self.appeared[job.job_id].append(job.created_at)

        before = {cluster: len(jobs) for cluster, jobs in self._listed().items()}
        unregister = self.s.on_request(create)
        try:
            results = self._pass()
        finally:
            unregister()
        listed = self._listed()  # every job was read: each was added before a page 1 reply
        for result in results:
            event(
                f"a moving list was read in {'one page' if before[result.source] < self.page_size else 'pages'}"
            )
            assert result.ok, result.error
            # Complete after one walk, unless a job came back below others (relisted).
            assert result.complete == self.models[result.source].proven(listed[result.source])
            assert added[result.source] == (0 if before[result.source] < self.page_size else 1)
            self._committed(result.source, result.run_id, listed[result.source], complete=True)

    @rule(pick=st.integers(0, 10**6))
    def sync_while_a_job_leaves_mid_walk(self, pick: int) -> None:
        """When page 2 is asked for, a job of page 1 leaves the list: the job that was first on
        page 2 moves up to page 1, and the walk misses it. The count shows the loss; the list
        is walked again, and the snapshot keeps what every walk saw (the job that left
        included, as it was listed when page 1 was read)."""
        gone: dict[str, tuple[str, str]] = {}  # cluster -> (job id, state when it left)

        def remove(number: int, path: str, body: dict[str, Any] | None) -> None:
            body = body or {}
            cluster = body.get("clusterId")
            if path != LIST_PATH or body.get("currentPage") != 2 or cluster in gone:
                return
            head = self.s.jobs(cluster)[: self.page_size]
            job = head[pick % len(head)]
            with self.s._lock:
                moment = datetime.now(UTC)
                self.s.remove_jobs(cluster, [job.job_id])
            gone[cluster] = (job.job_id, job.state)
            self.disappeared[job.job_id].append(moment)

        unregister = self.s.on_request(remove)
        try:
            results = self._pass()
        finally:
            unregister()
        listed = self._listed()
        for result in results:
            assert result.ok, result.error
            seen = dict(listed[result.source])
            if result.source in gone:
                event("a job left the list mid-walk")
                job_id, state = gone[result.source]
                seen[job_id] = state
            # The second walk met a quiet list: complete, unless a job came back below others
            # in it (the list as it is now, without the job that left).
            order = listed[result.source]
            assert result.complete == self.models[result.source].proven(order)
            self._committed(result.source, result.run_id, seen, complete=True, order=order)

    @rule()
    def sync_overtaken_by_another_pass(self) -> None:
        """Each source's pass A loses its lock while it fetches, and pass B of the same source
        (after every job moved on) writes first: A must stand down, writing nothing."""
        results = []
        for source in self.settings.sources:
            b_listed: dict[str, str] = {}

            def overtake(source: Source = source, b_listed: dict[str, str] = b_listed) -> None:
                self.s.advance(fraction=1.0)
                self.before_pass[source.key] = set(self._listed()[source.key])
                b_listed.update(self._listed()[source.key])
                b = sync_source(self.engine, source, self.settings, sleep=NO_SLEEP)
                assert b.ok, b.error
                results.append((b, dict(b_listed)))

            a = sync_source(
                self.engine, source, self.settings, sleep=NO_SLEEP, lock=SyncLock(overtake)
            )
            assert isinstance(a.error, SupersededError), a.error
            assert self._runs()[a.run_id] == "failed"
        for b, listed in results:
            self._committed(b.source, b.run_id, listed, complete=True)

    @precondition(lambda self: all(self.snapshots[c] for c in self.clusters))
    @rule(hours=st.sampled_from([1, 24]))
    def sync_with_the_clock_an_hour_behind(self, hours: int) -> None:
        """A clock stepped back (beyond the tolerance) makes every pass refuse to write."""
        before = len(self._transitions())
        results = sync_all(
            self.engine,
            self.settings,
            sleep=NO_SLEEP,
            clock=lambda: datetime.now(UTC) - timedelta(hours=hours),
        )
        runs = self._runs()
        self.stale_runs.clear()  # the pass marked them abandoned first
        for result in results:
            assert isinstance(result.error, ClockError), result.error
            assert "earlier than this source's last observation" in str(result.error)
            assert runs[result.run_id] == "failed"
        assert len(self._transitions()) == before

    def _listed(self) -> dict[str, dict[str, str]]:
        return {c: {job.job_id: job.state for job in self.s.jobs(c)} for c in self.clusters}

    def _pass(self) -> list[PassResult]:
        self.s.reset_counters()  # request numbers (and Fault.on_requests) count from this pass
        self.before_pass = {c: set(jobs) for c, jobs in self._listed().items()}
        try:
            results = sync_all(self.engine, self.settings, sleep=NO_SLEEP)
        finally:
            # Whatever became of this pass, it first marked what killed passes left running.
            runs = self._runs()
            assert {runs[r] for r in self.stale_runs} <= {"abandoned"}
            self.stale_runs.clear()
        assert [r.source for r in results] == list(self.clusters)
        return results

    def _committed(
        self,
        cluster: str,
        run_id: int,
        listed: dict[str, str],
        *,
        complete: bool,
        order: Iterable[str] | None = None,
    ) -> None:
        expected, complete = self.models[cluster].commit(listed, complete, order)
        self.snapshots[cluster].append((run_id, frozenset(listed), complete))
        written = Counter(t.key for t in self._transitions() if t.sync_run_id == run_id)
        assert written == expected
        if complete:
            # A snapshot called complete lists every job listed from its start to its end.
            throughout = self.before_pass.get(cluster, set()) & set(self._listed()[cluster])
            assert throughout <= set(listed), throughout - set(listed)
        for kind in sorted({key[1] for key in written}):
            event(f"a pass wrote {kind}")
        with self.engine.connect() as conn:
            run = conn.execute(select(sync_runs).where(sync_runs.c.id == run_id)).one()
        kinds = Counter(key[1] for key in expected.elements())
        assert (run.cluster_id, run.status, run.complete, run.distinct_jobs) == (
            cluster,
            "succeeded",
            complete,
            len(listed),
        )
        assert (run.new_jobs, run.changed_jobs, run.vanished_jobs) == (
            kinds["first_seen"],
            kinds["change"],
            kinds["vanished"],
        )

    # -- reading the database -------------------------------------------------------------------

    def _runs(self) -> dict[int, str]:
        with self.engine.connect() as conn:
            return {int(r[0]): r[1] for r in conn.execute(text("SELECT id, status FROM sync_runs"))}

    def _transitions(self, cluster: str | None = None) -> list[Row]:
        t = import_job_transitions.c
        query = select(
            t.id,
            t.job_id,
            t.kind,
            t.from_state,
            t.to_state,
            t.raw_from_state,
            t.raw_to_state,
            t.window_start,
            t.observed_at,
            t.sync_run_id,
        )
        if cluster is not None:
            query = query.where(t.cluster_id == cluster)
        with self.engine.connect() as conn:
            return [Row(*r) for r in conn.execute(query.order_by(t.id))]

    def _jobs(self, cluster: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(import_jobs).where(import_jobs.c.cluster_id == cluster))
            return {r.job_id: r for r in rows}

    # -- invariants -----------------------------------------------------------------------------

    @invariant()
    def jobs_are_the_last_committed_observations(self) -> None:
        for cluster, model in self.models.items():
            stored = {
                k: (r.state, r.raw_state, r.vanished_at is not None)
                for k, r in self._jobs(cluster).items()
            }
            assert stored == {k: (j.state, j.raw, j.vanished) for k, j in model.jobs.items()}

    @invariant()
    def job_timestamps_agree_with_the_history_and_the_runs(self) -> None:
        with self.engine.connect() as conn:
            ended = dict(
                conn.execute(select(sync_runs.c.id, sync_runs.c.snapshot_finished_at)).all()
            )
        for cluster in self.clusters:
            history: dict[str, list[Row]] = defaultdict(list)
            for t in self._transitions(cluster):
                history[t.job_id].append(t)
            snapshots = self.snapshots[cluster]
            for job_id, job in self._jobs(cluster).items():
                rows = [t for t in history[job_id] if t.kind != "vanished"]
                # Each of these is "when a sync first listed the job ..." in the contract.
                assert job.first_seen_at == rows[0].observed_at
                moved = [t for t in rows if t.kind == "first_seen" or t.from_state != t.to_state]
                assert job.state_since == moved[-1].observed_at
                finishing = [t.observed_at for t in rows if t.to_state in TERMINAL_STATES]
                assert job.finished_at == (finishing[0] if finishing else None)
                # "the last sync whose snapshot listed the job (exact)".
                last = max(i for i, (_r, listed, _c) in enumerate(snapshots) if job_id in listed)
                assert job.last_seen_at == ended[snapshots[last][0]], job_id
                if job.vanished_at is not None:
                    judged = [t for t in history[job_id] if t.kind == "vanished"][-1]
                    assert job.vanished_at == ended[judged.sync_run_id]

    @invariant()
    def vanished_iff_two_complete_snapshots_missed_it_since_it_was_last_listed(self) -> None:
        for cluster, model in self.models.items():
            snapshots = self.snapshots[cluster]
            for job_id, job in model.jobs.items():
                last = max(i for i, (_r, listed, _c) in enumerate(snapshots) if job_id in listed)
                misses = sum(1 for _r, _listed, complete in snapshots[last + 1 :] if complete)
                assert job.vanished == (misses >= 2), job_id

    @invariant()
    def history_is_a_consistent_chain_per_job(self) -> None:
        for cluster, model in self.models.items():
            by_job: dict[str, list[Row]] = defaultdict(list)
            for t in self._transitions(cluster):
                by_job[t.job_id].append(t)
            assert set(by_job) == set(model.jobs)
            for job_id, rows in by_job.items():
                _assert_chain(job_id, rows, model.jobs[job_id])

    @invariant()
    def windows_contain_the_true_moments(self) -> None:
        log = defaultdict(list)
        for change in self.s.change_log:
            if _canonical_or_none(change.from_state) != canonical_state(change.to_state):
                log[change.job_id].append(change)
        for t in self._transitions():
            if t.window_start is not None:
                assert t.window_start < t.observed_at, t
            if t.kind == "change":
                # The latest change into the new state before the observation is the one this
                # row reports. (Not simply the latest change: with two sources, a pass of the
                # other one may move the job between its page's reply and its observed_at.)
                true = [
                    c
                    for c in log[t.job_id]
                    if c.at <= t.observed_at and canonical_state(c.to_state) == t.to_state
                ]
                assert true, t
                assert t.window_start is not None
                assert t.window_start < true[-1].at <= t.observed_at, (t, true[-1])
            elif t.kind == "first_seen" and t.window_start is not None:
                listed_from = _latest(self.appeared[t.job_id], t.observed_at)
                assert t.window_start < listed_from <= t.observed_at, (t, listed_from)
            elif t.kind == "reappeared":
                back = _latest(self.appeared[t.job_id], t.observed_at)
                assert t.window_start is not None
                assert t.window_start < back <= t.observed_at, (t, back)
            elif t.kind == "vanished":
                gone = _latest(self.disappeared[t.job_id], t.observed_at)
                assert t.window_start is not None
                assert t.window_start < gone <= t.observed_at, (t, gone)

    @invariant()
    def only_succeeded_runs_have_history_and_only_killed_ones_run(self) -> None:
        runs = self._runs()
        assert {runs.get(t.sync_run_id) for t in self._transitions()} <= {"succeeded"}
        assert {r for r, status in runs.items() if status == "running"} == self.stale_runs


def _assert_chain(job_id: str, rows: list[Row], model: ModelJob) -> None:
    # No two consecutive transitions to the same state; `vanished` (to_state NULL) is left out
    # of the comparison: a job may reappear in the state it vanished in.
    for a, b in pairwise(rows):
        if "vanished" not in (a.kind, b.kind):
            assert a.to_state != b.to_state, (job_id, a, b)
    first, *rest = rows
    assert (first.kind, first.from_state) == ("first_seen", None)
    state, vanished = first.to_state, False
    for t in rest:
        assert t.from_state == state, (job_id, t)
        if t.kind == "vanished":
            assert not vanished and t.to_state is None
            vanished = True
        elif t.kind == "reappeared":
            assert vanished
            vanished, state = False, t.to_state
        else:
            assert t.kind == "change" and not vanished and t.to_state != state
            state = t.to_state
    assert (state, vanished) == (model.state, model.vanished)


def _reset(engine: Engine) -> None:
    """A fresh start per example, cheaper than a new database."""
    # Children before parents, for SQLite's DELETEs; every table, so none is left behind.
    tables = [t.name for t in reversed(metadata.sorted_tables)]
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY"))
        else:
            for table in tables:
                conn.execute(text(f"DELETE FROM {table}"))


def test_sync_state_machine(engine: Engine, db_url: str) -> None:
    run_state_machine_as_test(lambda: SyncMachine(engine, db_url), settings=FAST)


@pytest.mark.slow
def test_sync_state_machine_thorough(engine: Engine, db_url: str) -> None:
    run_state_machine_as_test(lambda: SyncMachine(engine, db_url), settings=THOROUGH)
