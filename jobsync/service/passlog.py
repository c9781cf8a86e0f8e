"""The daemon's log lines about passes: one per pass per source, one per overrunning pass,
and none of APScheduler's own about runs it did not start."""

from __future__ import annotations

import logging
import math
from typing import Any

from jobsync.observability.logs import fields
from jobsync.service.sync import PassResult

__all__ = ["QuietSkips", "log_overrun", "log_pass"]

# APScheduler's own lines about runs it did not start: the daemon says it once per pass instead.
_APSCHEDULER_SKIPS = ("skipped: maximum number of running instances", "was missed by")


class QuietSkips(logging.Filter):
    """Drops APScheduler's line per run skipped or missed (``log_overrun`` says it once)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not any(text in message for text in _APSCHEDULER_SKIPS)


def log_overrun(
    log: logging.Logger, source: str, interval: float, seconds: float, late: float, skipped: int
) -> None:
    """The one line for a pass that ran past its next scheduled run (not one per run
    skipped): how long it took (and waited for a worker), and how many scheduled runs it
    covered. Nothing for a pass that took less than its interval, waiting included, and
    skipped nothing."""
    if late + seconds <= interval and not skipped:
        return
    covered = max(skipped + 1, math.floor((late + seconds) / interval) + 1)
    waited = f" after waiting {late:.1f}s for a free worker" if late >= 0.1 * interval else ""
    log.warning(
        "%s: the pass took %.1fs%s, longer than its interval of %gs: it covered %d scheduled runs",
        source,
        seconds,
        waited,
        interval,
        covered,
        extra=fields(
            event="overrun",
            source=source,
            duration=round(seconds, 3),
            waited=round(late, 3),
            interval=interval,
            runs_covered=covered,
        ),
    )


def log_pass(log: logging.Logger, result: PassResult) -> None:
    """The one line per pass per source, with its counts (the library logs only at DEBUG)."""
    values: dict[str, Any] = {
        "event": "pass",
        "source": result.source,
        "run_id": result.run_id,
        "status": "succeeded" if result.ok else "failed",
        "complete": result.complete,
        "pages": result.pages,
        "jobs": result.jobs,
        "retries": result.retries,
        "duration": round(result.seconds, 3),
    }
    if result.counts is not None:
        values["counts"] = {
            "new": result.counts.new_jobs,
            "changed": result.counts.changed_jobs,
            "vanished": result.counts.vanished_jobs,
        }
    if result.error is not None:
        values["error_kind"] = type(result.error).__name__
        values["error"] = str(result.error)
    level = logging.INFO if result.ok else logging.ERROR
    log.log(level, "%s", result.summary(), extra=fields(**values))
