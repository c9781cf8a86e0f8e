"""Which stored jobs a snapshot may change, from one streamed read of all of them.

A re-sync lists nearly every job exactly as it is stored. Reading every stored job in full and
planning each would cost more than the fetch, so ``scan`` streams five columns and a *quiet*
flag per stored job, and triage compares them with the snapshot in place. Only the jobs it picks
are read in full and planned (``history.plan_pass``).

Two ways to pair a stored row with its listed record, with the same result:

- ``triage_in_order``: rows sorted by job id in code-point order (SQLite's ``BINARY``
  collation, which its primary-key index already keeps), walked beside the snapshot's records
  sorted the same way. Used on SQLite.
- ``triage``: rows in any order, each looked up in the snapshot. Used on PostgreSQL, whose
  index keeps the database's collation: asking for code-point order there (``COLLATE "C"``)
  makes the server sort every row first, which costs what the walk saves.

The walk is preferred where the order comes free: a million-entry dict is read at random,
missing the CPU's caches on every row, while the walk reads both sides in order. Sorting the
records is linear when the API lists jobs in id order, in either direction (the Milvus family
hands out ids that grow with time).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from itertools import islice
from operator import attrgetter
from typing import Any, NamedTuple

from jobsync.domain.records import JobRecord

__all__ = ["Triage", "triage", "triage_in_order"]

_job_id = attrgetter("job_id")


class Triage(NamedTuple):
    """What the streamed read found."""

    # Stored jobs that need full rows: changed, not quiet, detailed, or no longer listed.
    load: list[str]
    # Listed jobs the database does not hold (unless vanished): new, or reappearing.
    unknown: list[str]


def triage(
    rows: Iterable[tuple[Any, ...]], jobs: Mapping[str, JobRecord], detailed: Container[str]
) -> Triage:
    """Compare every stored, non-vanished job with the snapshot, rows in any order.

    ``rows`` are ``(job_id, raw_state, collection_name, progress, reason, quiet)``, streamed
    from the database; *quiet* means listed by the latest pass with nothing pending (not
    missed, not vanished). Listing a quiet job again with the same state spelling and
    collection, and progress and reason equal or left out (the list leaving a field out keeps
    the stored value), changes nothing: on a re-sync that is nearly every job, and they cost
    one comparison each instead of a row object. Jobs with details are always loaded, since
    their details may change them.
    """
    load: list[str] = []
    want = load.append
    get = jobs.get
    # The listed ids met among the rows (the records' own strings): a list, which costs a
    # quarter of what a set of every listed id would, at the pass's peak memory.
    met: list[str] = []
    meet = met.append
    for job_id, raw_state, collection_name, progress, reason, quiet in rows:
        record = get(job_id)
        if record is None:
            want(job_id)  # no longer listed
            continue
        meet(record.job_id)
        # Spelled out in both functions rather than called: this is the innermost loop of a
        # re-sync, run once per stored job.
        if not (
            quiet
            and record.raw_state == raw_state
            and record.collection_name == collection_name
            and (record.progress is None or record.progress == progress)
            and (record.reason is None or record.reason == reason)
            and job_id not in detailed
        ):
            want(job_id)
    return Triage(load, _unmet(jobs, met))


def _unmet(jobs: Mapping[str, JobRecord], met: list[str]) -> list[str]:
    """The listed ids not in ``met`` (some of them, each once).

    A re-sync that lists no new job met them all, and is done. Otherwise both sides are
    sorted and walked: sorting ids that come nearly in order, as an API lists them and an
    index returns them, is about linear.
    """
    if len(met) == len(jobs):
        return []
    if not met:
        return list(jobs)  # nothing stored (a first sync): no sorting
    met.sort()
    unmet: list[str] = []
    missing = unmet.append
    i, n = 0, len(met)
    for job_id in sorted(jobs):
        if i < n and met[i] == job_id:
            i += 1
        else:
            missing(job_id)
    return unmet


def triage_in_order(
    rows: Iterable[tuple[Any, ...]], jobs: Mapping[str, JobRecord], detailed: Container[str]
) -> Triage:
    """``triage`` for rows sorted by job id in code-point order (SQLite's ``BINARY``).

    Rows out of that order would pair wrongly: a stored job would look unlisted and a listed
    one new, and writing the "new" one would then fail the pass on the primary key, leaving
    the stored history as it was.
    """
    load: list[str] = []
    want = load.append
    unknown: list[str] = []
    missing = unknown.append
    # Sorted on the first row, so that a first sync into an empty database never sorts.
    records: list[JobRecord] | None = None
    i = n = 0
    for job_id, raw_state, collection_name, progress, reason, quiet in rows:
        if records is None:
            records = sorted(jobs.values(), key=_job_id)
            n = len(records)
        while i < n and records[i].job_id < job_id:
            missing(records[i].job_id)  # listed, and not among the stored rows
            i += 1
        if i == n or records[i].job_id != job_id:
            want(job_id)  # no longer listed
            continue
        record = records[i]
        i += 1
        if not (
            quiet
            and record.raw_state == raw_state
            and record.collection_name == collection_name
            and (record.progress is None or record.progress == progress)
            and (record.reason is None or record.reason == reason)
            and job_id not in detailed
        ):
            want(job_id)
    if records is None:
        return Triage(load, list(jobs))
    unknown.extend(map(_job_id, islice(records, i, None)))
    return Triage(load, unknown)
