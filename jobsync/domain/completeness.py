"""The proof that a walk over a paged list missed no job: pure rules on what was observed.

The API pages by offset over a list that changes while it is read. A walk is proven to list
every job that was listed both when it began and when it ended, after it reached the end of
the list with every record usable and as many distinct jobs as page 1's ``count`` said, when
the head of the list, read again, shows either of two things:

- the list stood still: page 1 shows the same ``count`` and the same ids; or
- only new jobs arrived, at the head: the ids the walk saw run in one order, newest first
  (:class:`IdOrder`); the head, read again down to the first job the walk saw, shows jobs the
  walk did not see only above that one, each newer than every job it saw (:class:`Head`); and
  ``count`` grew by exactly their number. Jobs arriving at the head only push the others to
  later offsets, which shows as duplicates and never skips one; a job leaving the list would
  skip one, and shows as a ``count`` short of the arrivals.

Both also rest on one assumption: jobs join the list at its head. A job joining it below the
head raises ``count`` by one, which can hide a job that left a page already read, and the job
the walk skipped for it; nothing in the walk shows it. The pass, which knows which jobs were
listed before, checks it (:func:`arrived_below_the_head`): a job new to the source, back after
a complete snapshot missed it, or back from vanished, listed below a job listed before, leaves
the snapshot unproven.

Both need ``count``: without it a job leaving the list while it is read, which skips another,
leaves no trace, so a walk over several pages of a list that reports no count is never proven
complete (:func:`counted`); one page is one answer of the server, complete by itself.

The HTTP side (reading pages, reading the head again) is ``jobsync.api.listing``.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from jobsync.domain.history import StoredJob
from jobsync.domain.records import Snapshot

__all__ = [
    "Head",
    "IdOrder",
    "arrived_below_the_head",
    "counted",
    "proven_as_stored",
    "stood_still_or_grew_at_the_head",
    "walk_adds_up",
]


class IdOrder:
    """Whether the ids of a walk run newest first (decreasing), as numbers when they all are
    digits, else as text, and the newest one seen."""

    def __init__(self) -> None:
        self.consistent = True
        self.numeric: bool | None = None
        self.newest: Any = None  # an int or a str, as ``numeric`` says
        self._last: Any = None

    def take(self, ids: Sequence[str], seen: Container[str]) -> None:
        """Take the next page's ids; ``seen``: the ids of the walk before this page."""
        if not self.consistent or not ids:
            return
        # Every id ASCII digits only: tested on them joined, and none empty.
        joined = "".join(ids)
        numeric = joined.isascii() and joined.isdigit() and all(ids)
        if self.numeric is None:
            self.numeric = numeric
        elif numeric != self.numeric:
            self.consistent = False
            return
        keys: list[Any] = list(map(int, ids)) if numeric else list(ids)
        # A page is one consistent read: in order throughout. sorted() finds an already
        # ordered run in one pass.
        if keys != sorted(keys, reverse=True):
            self.consistent = False
            return
        last = self._last
        if last is not None:
            # Jobs that arrived at the head push jobs already seen onto this page: only those
            # may sort before the end of the previous page.
            for job_id, key in zip(ids, keys, strict=True):
                if key <= last:
                    break
                if job_id not in seen:
                    self.consistent = False
                    return
        if self.newest is None:
            self.newest = keys[0]
        self._last = keys[-1] if last is None else min(last, keys[-1])

    def newer_than_all(self, job_id: str) -> bool:
        """Whether ``job_id`` sorts before every id the walk saw (an arrival at the head)."""
        if not self.consistent or self.newest is None:
            return False
        if self.numeric:
            return job_id.isascii() and job_id.isdigit() and int(job_id) > int(self.newest)
        return job_id > str(self.newest)


@dataclass
class Head:
    """The head of the list read again after a walk, down to the first job the walk saw."""

    known: Collection[str]
    order: IdOrder
    count: int | None = None
    ids: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    # A job the walk did not see, below one it did (or not newer than all it saw), or a count
    # that moved between two pages of the head.
    new_out_of_place: bool = False
    _arrived: set[str] = field(default_factory=set)

    def take(self, count: int | None, ids: Sequence[str], first: bool) -> bool:
        """Take one page of the head; True once it shows a job the walk saw.

        Call before the page's jobs join the snapshot: on a first walk ``known`` is a view of
        the snapshot's ids.
        """
        if first:
            self.count = count
        elif count != self.count:
            self.new_out_of_place = True  # it moved again while we looked: no proof
        met = False
        for job_id in ids:
            self.ids.append(job_id)
            if job_id in self._arrived:
                pass  # shown again: more arrivals pushed it down between two head pages
            elif job_id in self.known:
                met = True
            elif met or not self.order.newer_than_all(job_id):
                self.new_out_of_place = True
            else:
                self._arrived.add(job_id)
                self.new.append(job_id)
        return met


_NO_COUNT = "the list reports no count, so a walk over several pages cannot be proven complete"


def counted(first_count: int | None, pages: int) -> str | None:
    """None when a walk can be proven complete as far as ``count`` goes; else why not."""
    return _NO_COUNT if first_count is None and pages > 1 else None


def walk_adds_up(first_count: int | None, records: int) -> str | None:
    """None when a walk read as many distinct records as page 1's ``count``; else why not."""
    if first_count is not None and records != first_count:
        return f"the walk read {records} distinct records where page 1 reported {first_count}"
    return None


def stood_still_or_grew_at_the_head(
    first_count: int | None, first_ids: Sequence[str], order: IdOrder, head: Head
) -> str | None:
    """None when the head read again proves the walk complete (see the module doc)."""
    if first_count is None or head.count is None:
        return _NO_COUNT
    if head.count == first_count and head.ids[: len(first_ids)] == list(first_ids):
        return None  # the list stood still
    if not order.consistent:
        return "the list changed while it was read, and its ids run in no consistent order"
    if head.new_out_of_place:
        return "the list changed while it was read, other than by new jobs at its head"
    arrived = len(head.new)
    if head.count != first_count + arrived:
        return (
            f"the list changed while it was read: {first_count} jobs, then "
            f"{head.count}, with {arrived} new at its head"
        )
    return None


def arrived_below_the_head(
    listed: Iterable[str], arrivals: Container[str], at_head: Container[str]
) -> str | None:
    """None unless a job of ``arrivals`` (not listed before this walk) is listed below a job
    listed before; then why the walk cannot be proven complete.

    ``listed``: the snapshot's ids in the order first seen; ``at_head``: arrivals seen at the
    head when it was read again or the list walked again (first seen after jobs below them).
    """
    below = False
    for job_id in listed:
        if job_id in at_head:
            continue
        if job_id not in arrivals:
            below = True  # the first job listed before: the head ends here
        elif below:
            return (
                f"job {job_id}, not listed before, appeared below the head of the list: the "
                "list does not only grow at its head, so a job that left it while it was read "
                "could have been skipped"
            )
    return None


def proven_as_stored(
    snapshot: Snapshot, stored: Mapping[str, StoredJob], unknown: Collection[str]
) -> Snapshot:
    """The snapshot, no longer complete if a job not listed before appeared below the head of
    the list (:func:`arrived_below_the_head`): then its absences prove nothing.

    ``stored``: the stored jobs the pass loaded (every one that is vanished or was missed by a
    complete snapshot among them); ``unknown``: the listed jobs the database does not hold.
    """
    if not snapshot.complete or len(unknown) == len(snapshot.jobs):
        return snapshot  # nothing to prove, or every job new (a first sync)
    arrivals = set(unknown)
    arrivals.update(
        job_id for job_id, job in stored.items() if job.vanished or job.missed_snapshots
    )
    if not arrivals:
        return snapshot
    order = snapshot.jobs if snapshot.walk_order is None else snapshot.walk_order
    reason = arrived_below_the_head(order, arrivals, snapshot.arrived_at_head)
    if reason is None:
        return snapshot
    return replace(snapshot, complete=False, incomplete_reason=reason)
