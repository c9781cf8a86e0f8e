"""What pruning keeps and how it counts what it removes: pure rules, no database.

- A pass older than the retention window that recorded nothing is folded into its source's
  row of the UTC day it started (:func:`day_totals`) and then deleted.
- Progress samples older than the window keep the first and last sample of each stay of a job
  in one state (:func:`samples_to_thin`): how a job entered and left each state survives.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

__all__ = ["DayTotals", "day_totals", "samples_to_thin"]


@dataclass
class DayTotals:
    """One source's pruned passes of one UTC day, summed."""

    passes: int = 0
    failures: int = 0
    retries: int = 0
    pages: int = 0
    seconds: float = 0.0


def day_totals(runs: Iterable[Any]) -> dict[date, DayTotals]:
    """Sum runs (with ``started_at``, ``finished_at``, ``status``, ``pages``, ``retries``) by
    the UTC day each started. A pass that did not succeed counts as a failure; one without
    a finish time adds no seconds."""
    days: dict[date, DayTotals] = defaultdict(DayTotals)
    for run in runs:
        started: datetime = run.started_at
        totals = days[started.date()]
        totals.passes += 1
        totals.failures += run.status != "succeeded"
        totals.retries += run.retries or 0
        totals.pages += run.pages or 0
        if run.finished_at is not None:
            totals.seconds += max(0.0, (run.finished_at - started).total_seconds())
    return dict(days)


def samples_to_thin(samples: Sequence[tuple[int, str]]) -> list[int]:
    """The ids of samples to delete among one job's ``(id, state)`` samples in time order:
    all but the first and last of each run of consecutive samples in one state."""
    doomed: list[int] = []
    start = 0
    for end in range(1, len(samples) + 1):
        if end == len(samples) or samples[end][1] != samples[start][1]:
            doomed.extend(sample_id for sample_id, _ in samples[start + 1 : end - 1])
            start = end
    return doomed
