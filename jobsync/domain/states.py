"""Canonical job states, from every state name the Zilliz and Milvus APIs are known to send.

Matching is case-sensitive on purpose: the APIs send fixed spellings, and a string we have not
seen becomes ``Unknown`` (with the raw string kept) rather than being guessed at.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CANONICAL_STATES", "TERMINAL_STATES", "canonical_state", "is_terminal"]

PENDING: Final = "Pending"
IMPORTING: Final = "Importing"
COMPLETED: Final = "Completed"
FAILED: Final = "Failed"
UNKNOWN: Final = "Unknown"

CANONICAL_STATES: Final = (PENDING, IMPORTING, COMPLETED, FAILED, UNKNOWN)
TERMINAL_STATES: Final = frozenset({COMPLETED, FAILED})

_VARIANTS: Final[dict[str, str]] = {
    "Pending": PENDING,
    "ImportPending": PENDING,
    "Importing": IMPORTING,
    "InProgress": IMPORTING,
    "ImportRunning": IMPORTING,
    "ImportStarted": IMPORTING,
    "ImportPersisted": IMPORTING,
    "PreImporting": IMPORTING,
    "IndexBuilding": IMPORTING,
    "Sorting": IMPORTING,
    "Stats": IMPORTING,
    "Uncommitted": IMPORTING,
    "Committing": IMPORTING,
    "Retry": IMPORTING,
    "Completed": COMPLETED,
    "ImportCompleted": COMPLETED,
    "Failed": FAILED,
    "ImportFailed": FAILED,
    "ImportFailedAndCleaned": FAILED,
}


def canonical_state(raw: str | None) -> str:
    """Map a raw API state to one of CANONICAL_STATES (``Unknown`` when not recognised)."""
    if raw is None:
        return UNKNOWN
    return _VARIANTS.get(raw, UNKNOWN)


def is_terminal(raw: str | None) -> bool:
    """Whether a raw API state means the job has finished (``Completed`` or ``Failed``)."""
    return canonical_state(raw) in TERMINAL_STATES
