"""Progress details: which jobs to ask the progress endpoint about.

The list shows a job's state and little else. The progress endpoint adds row counts, the file
size, the failure reason and the API's own ``completeTime``, one job per request, so it is asked
only where the answer can be new: about jobs listed in a non-terminal state, about jobs that
finish on this pass (stored non-terminal, listed terminal), and about jobs that started and
finished between two passes (first listed already terminal, on a source that has had a complete
pass before). Never about the already finished jobs of a source's very first pass: a first sync
of 100,000 finished jobs must not make 100,000 requests. A pass asks about at most
``details_max_per_pass`` jobs: finishing ones first, then new finished ones, then open ones,
least recently asked first, so that a long list of open jobs is covered over several passes.

The asking itself is ``jobsync.api.details``.
"""

from __future__ import annotations

import heapq

from jobsync.domain.records import DetailCandidates, Snapshot
from jobsync.domain.states import is_terminal

__all__ = ["select_jobs"]


def select_jobs(snapshot: Snapshot, candidates: DetailCandidates, limit: int) -> list[str]:
    """The jobs to ask about, most useful first, at most ``limit`` of them."""
    asked = candidates.asked

    def least_recent(job_id: str) -> tuple[float, str]:
        # Never asked (new, or stored before details existed) comes first.
        return (asked.get(job_id, float("-inf")), job_id)

    chosen = sorted(candidates.finishing, key=least_recent)[:limit]
    chosen += sorted(candidates.finished_new)[: limit - len(chosen)]
    still_open = (j for j, record in snapshot.jobs.items() if not is_terminal(record.raw_state))
    # nsmallest: a long list of open jobs is not sorted whole for the few that fit.
    chosen += heapq.nsmallest(limit - len(chosen), still_open, key=least_recent)
    return chosen
