"""Public value types of the simulator and the job-state vocabulary it uses.

The snapshot types are frozen dataclasses: tests hold on to them while the world moves on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

PENDING = "Pending"
IMPORTING = "Importing"
COMPLETED = "Completed"
FAILED = "Failed"

# Forced states (set_state) may be any string; these sets only decide the derived fields
# (progress, finished_at, retention) so a job forced to a legacy name still behaves sensibly.
PENDING_LIKE = frozenset({PENDING, "ImportPending"})
IMPORTING_LIKE = frozenset({IMPORTING, "InProgress", "ImportRunning", "ImportStarted"})
COMPLETED_LIKE = frozenset({COMPLETED, "ImportCompleted"})
FAILED_LIKE = frozenset({FAILED, "ImportFailed", "ImportFailedAndCleaned"})
TERMINAL_STATES = COMPLETED_LIKE | FAILED_LIKE


@dataclass(frozen=True, slots=True)
class SimJob:
    """A copy of one simulated job as it stands when the copy is taken."""

    cluster_id: str
    job_id: str
    collection_name: str
    state: str
    progress: int
    reason: str
    created_at: datetime
    finished_at: datetime | None
    file_name: str
    file_size: int
    total_rows: int
    imported_rows: int


@dataclass(frozen=True, slots=True)
class StateChange:
    """One state change made to the world; `at` is the true moment it happened.

    `from_state` is None when the job was created (`add_jobs`).
    """

    cluster_id: str
    job_id: str
    from_state: str | None
    to_state: str
    at: datetime


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One HTTP request as the simulator saw it. The Authorization value is never stored.

    `number` is the API request number that faults count (None for 404/405 requests);
    `code` is the envelope code of the reply when it was a JSON envelope.
    """

    path: str
    method: str
    body: dict[str, Any] | None
    status: int
    time: datetime
    has_authorization: bool
    number: int | None
    code: int | None
