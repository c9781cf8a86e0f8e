"""Retention: prune the run metadata older than the configured window (``retention``).

The daemon calls :func:`apply_retention` on a schedule of its own, beside its passes;
``jobsync db prune`` calls :func:`prune_database` once. What is kept and how it is rolled up:
``jobsync.storage.prune``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import Engine

from jobsync.config import Settings
from jobsync.domain.clock import Clock, utcnow
from jobsync.observability.logs import fields
from jobsync.storage.prune import DEFAULT_BATCH_SIZE, PruneResult, prune

__all__ = ["RETENTION_EVERY", "apply_retention", "prune_database"]

log = logging.getLogger(__name__)

# How often the daemon prunes: each time removes about this much metadata, in a few batches.
RETENTION_EVERY = 3600.0  # seconds


def prune_database(
    engine: Engine,
    keep: float,
    *,
    clock: Clock = utcnow,
    batch_size: int | None = None,
    dry_run: bool = False,
    stop: Callable[[], bool] | None = None,
) -> PruneResult:
    """Prune what is older than ``keep`` seconds; see ``jobsync.storage.prune``.

    ``batch_size`` None is the storage's default.
    """
    return prune(
        engine,
        timedelta(seconds=keep),
        now=clock(),
        batch_size=DEFAULT_BATCH_SIZE if batch_size is None else batch_size,
        dry_run=dry_run,
        stop=stop,
    )


def apply_retention(
    engine: Engine,
    settings: Settings,
    *,
    clock: Clock = utcnow,
    stop: Callable[[], bool] | None = None,
) -> PruneResult | None:
    """Prune by ``settings.retention`` (None: keep everything, do nothing) and log one line
    saying what was removed."""
    if settings.retention is None:
        return None
    result = prune_database(engine, settings.retention, clock=clock, stop=stop)
    log.info(
        "retention: removed %d pass(es) older than %s (rolled up into %d day row(s)) and "
        "thinned %d progress sample(s)",
        result.runs,
        result.cutoff.isoformat(timespec="seconds"),
        result.days,
        result.samples,
        extra=fields(
            event="pruned",
            runs=result.runs,
            samples=result.samples,
            days=result.days,
            cutoff=result.cutoff.isoformat(),
        ),
    )
    return result
