"""The data dictionary's text for the reporting views, the facts behind them, and what the
descriptions of tables (``jobsync.storage.descriptions``) share with them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

__all__ = [
    "CLUSTER",
    "DAILY_COLUMNS",
    "FACTS",
    "FROM_STATE",
    "JOB",
    "JOB_COLUMNS",
    "JOB_FACETS",
    "JOB_FIGURES",
    "KIND",
    "SOURCE",
    "STATE",
    "TO_STATE",
    "TRANSITION_COUNT_COLUMNS",
    "UNITS",
    "VIEWS",
    "Field",
    "Relation",
    "relation",
]

# The units columns are measured in, and the Pint symbol Datasette formats them with.
UNITS = {"seconds": "s", "microseconds": "us", "bytes": "B", "percent": "percent"}


class Field(NamedTuple):
    """A column: what it means, and the unit of its numbers (a key of ``UNITS``) if any."""

    description: str
    unit: str | None = None


class Relation(NamedTuple):
    """A table or view: ``kind`` (``table`` or ``view``), what it holds, its columns in order,
    the columns worth counting by (Datasette's facets) and the one to sort by, newest first."""

    kind: str
    description: str
    columns: dict[str, Field]
    facets: tuple[str, ...] = ()
    sort_desc: str | None = None


def relation(
    kind: str,
    description: str,
    columns: Mapping[str, str | Field],
    facets: tuple[str, ...] = (),
    sort_desc: str | None = None,
) -> Relation:
    fields = {
        name: field if isinstance(field, Field) else Field(field) for name, field in columns.items()
    }
    return Relation(kind, description, fields, facets, sort_desc)


CLUSTER = "the cluster id, or the source `name` for self-hosted Milvus"
SOURCE = "the source: its cluster id, or its `name` for self-hosted Milvus"
JOB = "the job id as the API gives it (text)"
STATE = "canonical state: `Pending`, `Importing`, `Completed`, `Failed` or `Unknown`"
COLLECTION = "the job's collection, as the latest pass listed it"
DAY = "the UTC date, `YYYY-MM-DD`"
KIND = "`first_seen`, `change`, `vanished` or `reappeared`"
FROM_STATE = "canonical state before; NULL for `first_seen`"
TO_STATE = "canonical state after; NULL for `vanished`"

JOB_FIGURES: dict[str, str | Field] = {
    "total_rows": "rows to import, from the progress endpoint; NULL until fetched",
    "imported_rows": "rows imported so far, from the progress endpoint; NULL until fetched",
    "file_size": Field(
        "bytes of the files to import, from the progress endpoint; NULL until fetched", "bytes"
    ),
    "complete_time": "the API's own `completeTime`, in UTC: the exact finish moment; "
    "NULL when the API did not give one",
    "details_at": "when the progress endpoint last answered for the job; NULL if never",
}

JOB_COLUMNS: dict[str, str | Field] = {
    "cluster_id": CLUSTER,
    "job_id": JOB,
    "collection_name": "the job's collection",
    "state": STATE,
    "raw_state": "the state string the API sent",
    "progress": Field("percent done when the API gives it, else NULL", "percent"),
    "reason": "why the job failed, when the API says, else NULL",
    "first_seen_at": "when a sync first listed the job",
    "state_since": "when a sync first listed the job in its current state",
    "last_seen_at": "the end of the last pass whose snapshot listed the job",
    "finished_at": "when a sync first listed the job as `Completed` or `Failed`, else NULL",
    "vanished_at": "when the job was judged gone from the API's list, else NULL",
}
ACTIVE_JOB_COLUMNS = ("cluster_id", "job_id", "collection_name", "state", "raw_state", "progress")
JOB_FACETS = ("cluster_id", "collection_name", "state")


_BACKLOG = (
    "1/true when the job's start was not observed: it was listed by its source's first "
    "complete pass or before, or first seen already `Completed` or `Failed`; such jobs are "
    "counted apart and left out of duration statistics"
)
_ESTIMATE = (
    "the midpoint of [`min_seconds`, `max_seconds`]: for an ordinary job the finish window's "
    "midpoint minus the creation window's; for a job created and finished between two passes, "
    "half that window. NULL while unfinished or when the start is unknown"
)
# The facts revision 0009 keeps on each job's row (jobsync.domain.facts).
FACTS: dict[str, str | Field] = {
    "backlog": _BACKLOG,
    "created_window_start": "the job was created after this (its `first_seen` window start); "
    "NULL when unknown, never invented",
    "final_state": "`Completed` or `Failed`, as first seen finished; NULL while unfinished",
    "finished_window_start": "the job finished after this: the window start of its first "
    "transition into a finished state",
    "min_seconds": Field(
        "shortest possible duration: finish lower bound - `first_seen_at`; never below 0; "
        "NULL while unfinished",
        "seconds",
    ),
    "max_seconds": Field(
        "longest possible duration: finish upper bound - `created_window_start`; NULL while "
        "unfinished or when the start is unknown",
        "seconds",
    ),
    "estimated_seconds": Field(_ESTIMATE, "seconds"),
    "state_since_us": Field(
        "`state_since` as integer microseconds since 1970-01-01 UTC", "microseconds"
    ),
    "last_seen_us": Field(
        "`last_seen_at` as integer microseconds since 1970-01-01 UTC", "microseconds"
    ),
}

_PERCENTILE = (
    "nearest-rank {0} of `estimated_seconds` of the jobs finished that day whose start was "
    "observed (not `backlog`); NULL if none"
)
DAILY_COLUMNS: dict[str, str | Field] = {
    "day": "the UTC date (`date` on PostgreSQL, `YYYY-MM-DD` on SQLite)",
    "cluster_id": CLUSTER,
    "collection_name": COLLECTION,
    "jobs_first_seen": "jobs first seen that day: `new_jobs` + `backlog_jobs`",
    "completed": "jobs a pass first saw finished, as `Completed`, that day (backlog included)",
    "failed": "jobs a pass first saw finished, as `Failed`, that day (backlog included)",
    "failure_rate": "`failed / (completed + failed)`, from 0 to 1; NULL when none finished",
    "p50_seconds": Field(_PERCENTILE.format("median"), "seconds"),
    "p90_seconds": Field(_PERCENTILE.format("90th percentile"), "seconds"),
    "new_jobs": "of `jobs_first_seen`, jobs whose start was observed",
    "backlog_jobs": "of `jobs_first_seen`, jobs that came with the backlog",
    "backlog_completed": "of `completed`, jobs that came with the backlog",
    "backlog_failed": "of `failed`, jobs that came with the backlog",
    "duration_jobs": "how many estimates the percentiles rest on",
    "p95_seconds": Field(_PERCENTILE.format("95th percentile"), "seconds"),
}
TRANSITION_COUNT_COLUMNS: dict[str, str | Field] = {
    "day": "the UTC date (`date` on PostgreSQL, `YYYY-MM-DD` on SQLite)",
    "cluster_id": CLUSTER,
    "kind": KIND,
    "from_state": FROM_STATE,
    "to_state": TO_STATE,
    "transitions": "how many were observed that day",
}

VIEWS = {
    "import_jobs": relation(
        "view",
        "One row per job ever seen, with its current state and an exact `last_seen_at`.",
        {**JOB_COLUMNS, **JOB_FIGURES},
        facets=JOB_FACETS,
    ),
    "job_state_intervals": relation(
        "view",
        "One row per job per entry into a state; a job that returns to a state gets another row.",
        {
            "entered_at": "when a sync first saw the job in the state: the end of the window "
            "in which it entered it",
            "cluster_id": CLUSTER,
            "job_id": JOB,
            "collection_name": COLLECTION,
            "state": STATE,
            "entered_window_start": "start of the window in which the job entered the state; "
            "NULL when unknown",
            "left_window_start": "start of the window in which it left the state; NULL while open",
            "left_at": "end of that window; NULL while open",
            "min_seconds": Field(
                "time known to have been spent in the state: `left_window_start - "
                "entered_at`, or `last_seen_at - entered_at` while open; never below 0",
                "seconds",
            ),
            "max_seconds": Field(
                "longest it can have been in the state: `left_at - entered_window_start`; "
                "NULL while open or when the entry window start is unknown",
                "seconds",
            ),
            "is_open": "1 while the job is still in the state (also after it vanished), else 0",
        },
        facets=("state", "is_open"),
    ),
    "job_durations": relation(
        "view",
        "One row per job: how long it took from creation to `Completed` or `Failed`, as bounds "
        "and an estimate (the rule: docs/sql-and-bi.md). Filter on `finished_at` for recent "
        "finishes, and on `backlog` to leave out jobs whose start was not observed.",
        {
            "created_at": "the job was created by this: when a sync first listed it",
            "cluster_id": CLUSTER,
            "job_id": JOB,
            "collection_name": COLLECTION,
            "final_state": FACTS["final_state"],
            "created_window_start": FACTS["created_window_start"],
            "finished_window_start": FACTS["finished_window_start"],
            "finished_at": "and by this: when a sync first saw it finished",
            "complete_time": "the API's `completeTime` of a finished job when known; inside the "
            "finish window it is the finish moment for all three figures",
            "min_seconds": Field(
                "shortest possible duration: finish lower bound - `created_at`; never below 0; "
                "NULL while unfinished",
                "seconds",
            ),
            "max_seconds": FACTS["max_seconds"],
            "estimated_seconds": FACTS["estimated_seconds"],
            "is_finished": "1 when the job has finished (`Completed` or `Failed`), else 0",
            "backlog": FACTS["backlog"],
        },
        facets=("cluster_id", "collection_name", "final_state", "backlog"),
        sort_desc="finished_at",
    ),
    "daily_job_stats": relation(
        "view",
        "Per UTC day, cluster and collection: jobs first seen and finished, with the backlog "
        "apart, failure rate, and duration percentiles of the jobs whose start was observed.",
        DAILY_COLUMNS,
        facets=("cluster_id", "collection_name"),
        sort_desc="day",
    ),
    "transition_counts": relation(
        "view",
        "Per UTC day, cluster, kind and pair of states: how many transitions were observed.",
        TRANSITION_COUNT_COLUMNS,
        facets=("cluster_id", "kind", "to_state"),
        sort_desc="day",
    ),
    "active_jobs": relation(
        "view",
        "Jobs neither finished nor vanished, with how long they have been in their state.",
        {
            "state_since": JOB_COLUMNS["state_since"],
            **{c: JOB_COLUMNS[c] for c in ACTIVE_JOB_COLUMNS},
            "imported_rows": JOB_FIGURES["imported_rows"],
            "total_rows": JOB_FIGURES["total_rows"],
            "last_seen_at": JOB_COLUMNS["last_seen_at"],
            "seconds_in_state": Field(
                "`last_seen_at - state_since`: known at the last sync; add the time since "
                "`last_seen_at` for now",
                "seconds",
            ),
        },
        facets=JOB_FACETS,
        sort_desc="seconds_in_state",
    ),
}
