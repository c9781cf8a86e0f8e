"""Bounded run metadata: prune old passes that recorded nothing, and thin old progress samples.

What is removed (rules in ``jobsync.domain.retention``), for times before ``now - keep``:

- **passes** (``sync_runs``) that recorded nothing: no transition, no progress sample, no
  notification points at them. Each is first added to its source's row of the day in
  ``sync_run_days`` (passes, failures, retries, pages, seconds), in the transaction that
  deletes it: a pass is counted in one table or the other, never both, never neither.
- **progress samples** (``import_job_progress``) but the first and last of each stay of a job
  in one state.

What is never removed: jobs and transitions; a running pass; a source's latest successful
pass and everything after it (``jobsync status`` shows it; a failing streak still going on is
keyed by its first failed pass, ``jobsync.service.notify``); the runs ``sync_sources`` points
at; the run a running pass was based on (its fence, ``jobsync.domain.fencing``).

Work goes in batches: each batch is one short write transaction that first takes its source's
write lock (``Backend.lock_source``), the one a pass takes, so a batch and a pass of the same
source queue for a moment and never interleave; passes of other sources and readers go on.
A prune that is interrupted (killed, or its connection lost) loses at most its open batch,
which the database rolls back whole; the next prune carries on from there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import groupby
from operator import attrgetter
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, exists, func, or_, select

from jobsync.domain.retention import day_totals, samples_to_thin
from jobsync.storage.backends import backend_for
from jobsync.storage.boundary import boundary
from jobsync.storage.schema import (
    import_job_progress,
    import_job_transitions,
    notifications,
    sync_run_days,
    sync_runs,
    sync_sources,
)

__all__ = ["DEFAULT_BATCH_SIZE", "PruneResult", "prune"]

log = logging.getLogger(__name__)

# Runs (or jobs' samples) per transaction: a batch holds the source's write lock for a few
# milliseconds, never long enough to delay a pass noticeably.
DEFAULT_BATCH_SIZE = 500
# Ids per DELETE ... IN (...): within the 999 parameters of old SQLite builds.
_IDS_PER_STATEMENT = 500


@dataclass(frozen=True)
class PruneResult:
    """What a prune removed (or, in a dry run, would remove)."""

    cutoff: datetime
    runs: int = 0
    samples: int = 0
    days: int = 0  # (source, day) rows of sync_run_days added to
    batches: int = 0

    def __add__(self, other: PruneResult) -> PruneResult:
        return PruneResult(
            self.cutoff,
            self.runs + other.runs,
            self.samples + other.samples,
            self.days + other.days,
            self.batches + other.batches,
        )


@boundary
def prune(
    engine: Engine,
    keep: timedelta,
    *,
    now: datetime,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
    stop: Callable[[], bool] | None = None,
) -> PruneResult:
    """Prune what is older than ``now - keep`` (see the module docstring), source by source.

    ``dry_run`` does every batch's work and rolls it back: the counts say what a real prune
    would remove. ``stop`` is asked between batches; when it says so, the prune ends there
    (what it committed stays, and the next prune goes on).
    """
    if keep <= timedelta(0) or batch_size < 1:
        raise ValueError("keep and batch_size must be positive")
    cutoff = now - keep
    work = _Work(cutoff, batch_size, dry_run, stop or (lambda: False))
    result = PruneResult(cutoff)
    for cluster_id in _sources(engine):
        # Samples first: a pass whose only samples are thinned away has recorded nothing.
        result += _thin_samples(engine, cluster_id, work)
        result += _prune_runs(engine, cluster_id, work)
    if not dry_run and (result.runs or result.samples) and not work.stop():
        # After the batches, outside them: their space, for the passes to come.
        backend_for(engine).reclaim(
            engine, [sync_runs.name, import_job_progress.name, sync_run_days.name]
        )
    return result


@dataclass(frozen=True)
class _Work:
    cutoff: datetime
    batch_size: int
    dry_run: bool
    stop: Callable[[], bool]


def _sources(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(sync_runs.c.cluster_id).distinct()).scalars())


@contextmanager
def _batch(engine: Engine, cluster_id: str, dry_run: bool) -> Iterator[Connection]:
    """One batch: a transaction holding the source's write lock, committed (rolled back in a
    dry run) when the block ends, rolled back whole if it raises."""
    with engine.connect() as conn, conn.begin() as transaction:
        backend_for(conn).lock_source(conn, cluster_id)
        yield conn
        if dry_run:
            transaction.rollback()


# -- passes ------------------------------------------------------------------------------------


def _kept_runs(conn: Connection, cluster_id: str) -> tuple[int, set[int]]:
    """The floor (no run at or above it is pruned: the latest successful pass and what came
    after it; 0 when the source never succeeded) and the other runs that must stay.

    Read once per source: later passes only raise the floor and only point at newer runs.
    """
    r = sync_runs.c
    floor = conn.execute(
        select(func.max(r.id)).where(r.cluster_id == cluster_id, r.status == "succeeded")
    ).scalar()
    kept: set[int] = set()
    marks = conn.execute(
        select(sync_sources.c.last_run_id, sync_sources.c.last_complete_run_id).where(
            sync_sources.c.cluster_id == cluster_id
        )
    ).first()
    if marks is not None:
        kept.update(run_id for run_id in marks if run_id is not None)
    bases = select(r.base_run_id).where(
        r.cluster_id == cluster_id, r.status == "running", r.base_run_id.is_not(None)
    )
    kept.update(conn.execute(bases).scalars())
    return int(floor or 0), kept


def _prune_runs(engine: Engine, cluster_id: str, work: _Work) -> PruneResult:
    r = sync_runs.c
    cutoff = work.cutoff
    result = PruneResult(cutoff)
    floor: int | None = None
    kept: set[int] = set()
    after: tuple[datetime, int] | None = None
    while not work.stop():
        with _batch(engine, cluster_id, work.dry_run) as conn:
            if floor is None:
                floor, kept = _kept_runs(conn, cluster_id)
            query = (
                select(r.id, r.started_at, r.finished_at, r.status, r.pages, r.retries)
                .where(
                    r.cluster_id == cluster_id,
                    r.started_at < cutoff,
                    r.id < floor,
                    r.status != "running",
                    ~exists().where(import_job_transitions.c.sync_run_id == r.id),
                    ~exists().where(import_job_progress.c.sync_run_id == r.id),
                    ~exists().where(notifications.c.sync_run_id == r.id),
                )
                .order_by(r.started_at, r.id)
                .limit(work.batch_size)
            )
            if kept:
                query = query.where(r.id.not_in(sorted(kept)))
            if after is not None:
                # Where the previous batch ended: runs passed over are not read again.
                query = query.where(
                    or_(r.started_at > after[0], and_(r.started_at == after[0], r.id > after[1]))
                )
            runs = conn.execute(query).all()
            if not runs:
                return result
            after = (runs[-1].started_at, runs[-1].id)
            days = _roll_up(conn, cluster_id, runs)
            _delete_ids(conn, sync_runs.c.id, [run.id for run in runs])
        result += PruneResult(cutoff, runs=len(runs), days=days, batches=1)
    return result


def _roll_up(conn: Connection, cluster_id: str, runs: Sequence[Any]) -> int:
    """Add the runs to their days' rows of ``sync_run_days``; return how many rows."""
    rows = [
        {
            "cluster_id": cluster_id,
            "day": day,
            "passes": totals.passes,
            "failures": totals.failures,
            "retries": totals.retries,
            "pages": totals.pages,
            "seconds": totals.seconds,
        }
        for day, totals in sorted(day_totals(runs).items())
    ]
    d = sync_run_days.c
    stmt = backend_for(conn).dialect_insert(sync_run_days)
    added = ("passes", "failures", "retries", "pages", "seconds")
    stmt = stmt.on_conflict_do_update(
        index_elements=[d.cluster_id, d.day],
        set_={name: d[name] + stmt.excluded[name] for name in added},
    )
    conn.execute(stmt, rows)
    return len(rows)


def _delete_ids(conn: Connection, column: Any, ids: Sequence[int]) -> None:
    for start in range(0, len(ids), _IDS_PER_STATEMENT):
        chunk = ids[start : start + _IDS_PER_STATEMENT]
        conn.execute(delete(column.table).where(column.in_(chunk)))


# -- progress samples --------------------------------------------------------------------------


def _thin_samples(engine: Engine, cluster_id: str, work: _Work) -> PruneResult:
    p = import_job_progress.c
    cutoff = work.cutoff
    result = PruneResult(cutoff)
    # Jobs with more than two old samples in some state: a superset of those with anything
    # to thin (two stays in one state may hold three samples between them).
    with engine.connect() as conn:
        jobs = list(
            conn.execute(
                select(p.job_id)
                .where(p.cluster_id == cluster_id, p.sampled_at < cutoff)
                .group_by(p.job_id, p.state)
                .having(func.count() > 2)
            ).scalars()
        )
    jobs = sorted(set(jobs))
    # Samples, not jobs, bound a batch: a job with thousands of samples is a batch of its own.
    per_batch = max(1, work.batch_size // 20)
    for start in range(0, len(jobs), per_batch):
        if work.stop():
            break
        chunk = jobs[start : start + per_batch]
        with _batch(engine, cluster_id, work.dry_run) as conn:
            samples = conn.execute(
                select(p.id, p.job_id, p.state)
                .where(p.cluster_id == cluster_id, p.job_id.in_(chunk), p.sampled_at < cutoff)
                .order_by(p.job_id, p.sampled_at, p.id)
            ).all()
            doomed: list[int] = []
            for _job, rows in groupby(samples, key=attrgetter("job_id")):
                doomed += samples_to_thin([(s.id, s.state) for s in rows])
            _delete_ids(conn, p.id, doomed)
        result += PruneResult(cutoff, samples=len(doomed), batches=1)
    return result
