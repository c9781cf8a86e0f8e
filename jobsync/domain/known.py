"""What a pass keeps of the stored open jobs while it reads the list, in bounded memory.

Choosing progress requests beside the list (``jobsync.service.details``) compares every listed
job with its stored state and progress, so the open jobs a source holds are read before the
first page and kept until the last. A source can hold hundreds of thousands of them, and the
pass holds its whole snapshot at the same time: a dict of one object per job would cost about
as much memory as the snapshot itself. ``OpenJobs`` keeps 18 bytes per job instead, and
``LeastRecentlyAsked`` keeps only the jobs a pass could ask about before the list shows them.
"""

from __future__ import annotations

import heapq
from array import array
from bisect import bisect_left
from collections.abc import Iterable
from datetime import datetime
from typing import Generic, TypeVar

__all__ = ["LeastRecentlyAsked", "OpenJobs"]

# Stands for a progress the API left out (a stored progress is a small integer).
_NO_PROGRESS = -(2**63)
# The heap key of a job never asked about: before every time.
_NEVER = float("inf")

T = TypeVar("T")


class OpenJobs:
    """The listed state and progress of stored open jobs, by job id.

    Three arrays: the 64-bit hashes of the job ids, sorted, and beside them an index into the
    few raw states the jobs are in and their progress. A lookup is a binary search. Two job ids
    whose hashes collide (about once in 10^7 passes at a million open jobs) share one entry: the
    other may be asked about when it need not be, or not this pass. That is the whole cost, since
    only the choice of progress requests reads this; the pass itself compares the jobs it writes
    with the database.
    """

    __slots__ = ("_hashes", "_progress", "_raw_states", "_state_index")

    def __init__(self, jobs: Iterable[tuple[str, str | None, int | None]] = ()) -> None:
        """``jobs``: (job id, raw state, progress) of each stored open job."""
        hashes = array("q")
        states = array("H")
        progress = array("q")
        index: dict[str | None, int] = {}
        for job_id, raw_state, value in jobs:
            position = index.get(raw_state)
            if position is None:
                position = index[raw_state] = len(index)
            hashes.append(hash(job_id))
            states.append(position)
            progress.append(_NO_PROGRESS if value is None else value)
        order = sorted(range(len(hashes)), key=hashes.__getitem__)
        self._hashes = array("q", map(hashes.__getitem__, order))
        self._state_index = array("H", map(states.__getitem__, order))
        self._progress = array("q", map(progress.__getitem__, order))
        self._raw_states: tuple[str | None, ...] = tuple(index)

    def get(self, job_id: str) -> tuple[str | None, int | None] | None:
        """(raw state, progress) of a stored open job; None for any other job."""
        hashes = self._hashes
        key = hash(job_id)
        i = bisect_left(hashes, key)
        if i == len(hashes) or hashes[i] != key:
            return None
        value = self._progress[i]
        return self._raw_states[self._state_index[i]], None if value == _NO_PROGRESS else value

    def __len__(self) -> int:
        return len(self._hashes)

    def __repr__(self) -> str:
        return f"OpenJobs({len(self)} jobs)"


class LeastRecentlyAsked(Generic[T]):
    """Keeps, of the jobs added, the ``limit`` asked about longest ago (all when None), never
    holding more than that many."""

    def __init__(self, limit: int | None) -> None:
        self._limit = limit
        # (how long ago, -seq, job), "how long ago" being minus the time asked (infinite for
        # never): the root is the most recently asked of those kept, the first to go. Sequence
        # numbers are unique, so the jobs themselves are never compared.
        self._kept: list[tuple[float, int, T]] = []
        self._seq = 0

    def add(self, job: T, asked: datetime | None) -> None:
        key = _NEVER if asked is None else -asked.timestamp()
        seq = self._seq
        self._seq = seq + 1
        kept = self._kept
        if self._limit is None or len(kept) < self._limit:
            heapq.heappush(kept, (key, -seq, job))
        elif kept and key > kept[0][0]:
            # Asked longer ago than the most recent kept (a tie goes to the one added first).
            heapq.heapreplace(kept, (key, -seq, job))

    def best(self) -> list[T]:
        """Never asked first, then the longest ago; ties in the order added."""
        return [job for _, _, job in sorted(self._kept, reverse=True)]
