"""The data dictionary's text: what every table, view and column of jobsync means.

Written once, here: ``jobsync.storage.dictionary`` derives PostgreSQL's comments, the Datasette
metadata and the tables of docs/schema.md from it. Descriptions are Markdown (backticks around
names). Each column may name its unit (a key of ``UNITS``); each table or view names the columns
worth counting by (facets) and the one to sort by, newest first. A new table, view or column
needs its description here: tests reflect a migrated database and name what is missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

__all__ = ["RELATIONS", "UNITS", "Field", "Relation"]

# The units columns are measured in, and the Pint symbol Datasette formats them with.
UNITS = {"seconds": "s", "bytes": "B", "percent": "percent"}


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


def _relation(
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


_CLUSTER = "the cluster id, or the source `name` for self-hosted Milvus"
_SOURCE = "the source: its cluster id, or its `name` for self-hosted Milvus"
_JOB = "the job id as the API gives it (text)"
_STATE = "canonical state: `Pending`, `Importing`, `Completed`, `Failed` or `Unknown`"
_COLLECTION = "the job's collection, as the latest pass listed it"
_DAY = "the UTC date, `YYYY-MM-DD`"
_KIND = "`first_seen`, `change`, `vanished` or `reappeared`"
_FROM_STATE = "canonical state before; NULL for `first_seen`"
_TO_STATE = "canonical state after; NULL for `vanished`"

_JOB_FIGURES: dict[str, str | Field] = {
    "total_rows": "rows to import, from the progress endpoint; NULL until fetched",
    "imported_rows": "rows imported so far, from the progress endpoint; NULL until fetched",
    "file_size": Field(
        "bytes of the files to import, from the progress endpoint; NULL until fetched", "bytes"
    ),
    "complete_time": "the API's own `completeTime`, in UTC: the exact finish moment; "
    "NULL when the API did not give one",
    "details_at": "when the progress endpoint last answered for the job; NULL if never",
}

_JOB_COLUMNS: dict[str, str | Field] = {
    "cluster_id": _CLUSTER,
    "job_id": _JOB,
    "collection_name": "the job's collection",
    "state": _STATE,
    "raw_state": "the state string the API sent",
    "progress": Field("percent done when the API gives it, else NULL", "percent"),
    "reason": "why the job failed, when the API says, else NULL",
    "first_seen_at": "when a sync first listed the job",
    "state_since": "when a sync first listed the job in its current state",
    "last_seen_at": "the end of the last pass whose snapshot listed the job",
    "finished_at": "when a sync first listed the job as `Completed` or `Failed`, else NULL",
    "vanished_at": "when the job was judged gone from the API's list, else NULL",
}
_ACTIVE_JOB_COLUMNS = ("cluster_id", "job_id", "collection_name", "state", "raw_state", "progress")
_JOB_FACETS = ("cluster_id", "collection_name", "state")

_TABLES = {
    "sync_runs": _relation(
        "table",
        "One row per source per pass: how the pass went and what it found.",
        {
            "id": "the run's number, increasing",
            "cluster_id": _SOURCE,
            "started_at": "when the pass began",
            "finished_at": "when the pass ended; NULL while running",
            "status": "`running`, `succeeded`, `failed` or `abandoned` (its process died)",
            "complete": "1/true when the snapshot was proven complete",
            "pages": "list pages read",
            "records": "records received, duplicates included",
            "distinct_jobs": "distinct jobs in the snapshot",
            "duplicates": "records that repeated a job already seen in the same walk",
            "invalid_records": "records without a usable job id, skipped",
            "reported_count": "the total the API reported (`count`); NULL if it sent none",
            "new_jobs": "jobs seen for the first time",
            "changed_jobs": "jobs whose canonical state changed",
            "vanished_jobs": "jobs marked vanished by this pass",
            "retries": "HTTP requests retried",
            "rows_written": "database rows the pass wrote",
            "snapshot_started_at": "when reading the list began",
            "snapshot_finished_at": "when reading the list ended",
            "error": "why the pass failed (secrets redacted); NULL if it did not",
            "details_requested": "jobs the pass asked the progress endpoint about",
            "details_failed": "of those, the ones whose request failed (after its retries)",
            "base_run_id": "the source's latest written pass when this one began; the pass "
            "writes only if that is still the latest (else it fails as superseded)",
            "incomplete_reason": "why the snapshot could not be proven complete; NULL when it "
            "was, or when the pass failed",
            "host": "the host name of the process that ran the pass (NULL for passes before "
            "revision 0007)",
            "pid": "that process's id: with several daemons, which replica ran each pass",
        },
        facets=("cluster_id", "status", "complete"),
        sort_desc="id",
    ),
    "sync_sources": _relation(
        "table",
        "One row per source: its latest pass and its latest complete pass.",
        {
            "cluster_id": _SOURCE,
            "last_run_id": "the latest pass written (`sync_runs.id`)",
            "last_snapshot_started_at": "when that pass began reading the list",
            "last_snapshot_at": "when that pass finished reading the list: the `last_seen_at` "
            "of every job it listed",
            "last_complete_run_id": "the latest pass whose snapshot was verified complete",
            "last_complete_started_at": "when that pass began reading the list",
        },
    ),
    "import_job_records": _relation(
        "table",
        "One row per job ever seen, with what jobsync needs to plan the next pass; read "
        "`import_jobs` instead.",
        {
            **_JOB_COLUMNS,
            "last_seen_at": "the end of the last pass that listed the job; while `listed`, "
            "`sync_sources.last_snapshot_at` is newer and `import_jobs` shows that",
            "last_seen_started_at": "when the last pass that listed the job began: the safe "
            "start of a change window",
            "listed": "1/true when the latest pass listed the job",
            "missed_snapshots": "consecutive complete snapshots that did not list the job",
            "missing_since": "the end of the first of those snapshots; NULL while listed",
            **_JOB_FIGURES,
        },
        facets=(*_JOB_FACETS, "listed"),
    ),
    "import_job_transitions": _relation(
        "table",
        "Append-only history: one row per observed change. The change happened in "
        "(`window_start`, `observed_at`].",
        {
            "id": "surrogate key, increasing in the order the changes were recorded",
            "cluster_id": _CLUSTER,
            "job_id": _JOB,
            "kind": _KIND,
            "from_state": _FROM_STATE,
            "to_state": _TO_STATE,
            "raw_from_state": "`from_state` as the API sent it",
            "raw_to_state": "`to_state` as the API sent it",
            "window_start": "the latest moment the job was known to be in `from_state` (for "
            "`first_seen`: known not to be listed yet); NULL when unknown",
            "observed_at": "the moment a sync first saw the new state",
            "sync_run_id": "the pass that saw it (`sync_runs.id`)",
            "reason": "the failure reason, on a transition to `Failed`",
        },
        facets=("cluster_id", "kind", "to_state"),
        sort_desc="id",
    ),
    "import_job_progress": _relation(
        "table",
        "Append-only samples from the progress endpoint: one row per answer whose figures "
        "differed from the job's previous ones.",
        {
            "id": "surrogate key",
            "cluster_id": _CLUSTER,
            "job_id": _JOB,
            "sampled_at": "when the progress endpoint answered",
            "sync_run_id": "the pass that asked (`sync_runs.id`)",
            "state": _STATE,
            "raw_state": "the state string the endpoint sent",
            "progress": Field("percent done", "percent"),
            "imported_rows": "rows imported so far",
            "total_rows": "rows to import",
            "file_size": Field("bytes of the files to import", "bytes"),
            "complete_time": "the API's `completeTime`, in UTC; NULL until done",
            "reason": "why the job failed, when the endpoint says",
        },
        facets=("cluster_id", "state"),
        sort_desc="id",
    ),
    "notifications": _relation(
        "table",
        "One row per notification event (a job failed or stuck, a source failing or "
        "recovered): recorded as due by the pass that decided it, marked sent after delivery.",
        {
            "id": "surrogate key",
            "event_key": "the event's stable key, unique: `job_failed:`, `job_stuck:`, "
            "`source_failing:` or `source_recovered:` and a hash; messages carry it",
            "kind": "`job_failed`, `job_stuck`, `source_failing` or `source_recovered`",
            "cluster_id": _CLUSTER,
            "job_id": "the job, for job events; NULL for source events",
            "sync_run_id": "the pass that decided it (`sync_runs.id`); NULL for `source_failing`",
            "payload": "the event's facts as JSON (reason, window, state, ...), without secrets",
            "created_at": "when the event was decided",
            "sent_at": "when every target had it; NULL while it is due",
            "attempts": "delivery attempts so far; after 5 failed ones it is given up",
            "last_error": "why the latest attempt failed, redacted; NULL if none did",
            "delivered_to": "fingerprints of the targets that have it (never their URLs)",
        },
        facets=("cluster_id", "kind"),
        sort_desc="id",
    ),
    "sync_claims": _relation(
        "table",
        "One row per source: the latest schedule period a daemon claimed for it, so that "
        "daemons sharing a database sync each source once per period. Overwritten every "
        "period: it never grows.",
        {
            "cluster_id": _CLUSTER,
            "period_start": "when the claimed period began",
            "claimed_at": "when it was claimed",
            "host": "the host name of the daemon that claimed it",
            "pid": "that daemon's process id",
        },
    ),
    "rate_slots": _relation(
        "table",
        "One row per API key and endpoint, on PostgreSQL: the next moment a request with that "
        "key may go, shared by every process using the key so that together they stay under "
        "its rate limit.",
        {
            "key_fingerprint": "a truncated SHA-256 of a fixed prefix and the key (never the "
            "key itself)",
            "endpoint": "the API path, e.g. `/v2/vectordb/jobs/import/list`",
            "next_at": "the next request slot to hand out, on the database server's clock",
            "send_at": "the earliest moment the next request may go: one interval after the "
            "latest request went",
        },
    ),
    "sync_run_days": _relation(
        "table",
        "The passes that pruning removed from `sync_runs`, per source and the UTC day they "
        "started: added to in the transaction that deletes them, so each pass is counted "
        "once, here or there.",
        {
            "cluster_id": _CLUSTER,
            "day": "the UTC day the passes started",
            "passes": "passes pruned",
            "failures": "of them, passes that did not succeed (`failed` or `abandoned`)",
            "retries": "their retried requests, summed",
            "pages": "their list pages, summed",
            "seconds": Field("their time from start to finish, summed", "seconds"),
        },
        facets=("cluster_id",),
    ),
    "alembic_version": _relation(
        "table",
        "The schema revision (Alembic's); `jobsync db current` reads it.",
        {"version_num": "the revision the database is at"},
    ),
}

_VIEWS = {
    "import_jobs": _relation(
        "view",
        "One row per job ever seen, with its current state and an exact `last_seen_at`.",
        {**_JOB_COLUMNS, **_JOB_FIGURES},
        facets=_JOB_FACETS,
    ),
    "job_state_intervals": _relation(
        "view",
        "One row per job per entry into a state; a job that returns to a state gets another row.",
        {
            "cluster_id": _CLUSTER,
            "job_id": _JOB,
            "collection_name": _COLLECTION,
            "state": _STATE,
            "entered_window_start": "start of the window in which the job entered the state; "
            "NULL when unknown",
            "entered_at": "end of that window: when a sync first saw the job in the state",
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
    "job_durations": _relation(
        "view",
        "One row per job: how long it took from creation to `Completed` or `Failed`, as bounds "
        "and an estimate.",
        {
            "cluster_id": _CLUSTER,
            "job_id": _JOB,
            "collection_name": _COLLECTION,
            "final_state": "`Completed` or `Failed`; NULL while unfinished",
            "created_window_start": "the job was created after this (its `first_seen` window "
            "start); NULL when unknown, never invented",
            "created_at": "and by this: when a sync first listed it",
            "finished_window_start": "the job finished after this (the window start of its "
            "transition into the final state)",
            "finished_at": "and by this: when a sync first saw it in the final state",
            "complete_time": "the API's `completeTime` when known; inside the finish window it "
            "is the finish moment for all three figures",
            "min_seconds": Field(
                "shortest possible duration: finish lower bound - `created_at`; never below 0; "
                "NULL while unfinished",
                "seconds",
            ),
            "max_seconds": Field(
                "longest possible duration: finish upper bound - `created_window_start`; NULL "
                "while unfinished or when the start is unknown",
                "seconds",
            ),
            "estimated_seconds": Field(
                "midpoint of the finish window - midpoint of the creation window; never below "
                "0; NULL while unfinished or when the start is unknown",
                "seconds",
            ),
            "is_finished": "1 when the job is `Completed` or `Failed`, else 0",
        },
        facets=("cluster_id", "collection_name", "final_state"),
    ),
    "daily_job_stats": _relation(
        "view",
        "Per UTC day, cluster and collection: jobs first seen, jobs finished, failure rate "
        "and duration percentiles.",
        {
            "day": _DAY,
            "cluster_id": _CLUSTER,
            "collection_name": _COLLECTION,
            "jobs_first_seen": "jobs whose `first_seen` was observed that day",
            "completed": "jobs whose transition to `Completed` was observed that day",
            "failed": "jobs whose transition to `Failed` was observed that day",
            "failure_rate": "`failed / (completed + failed)`, from 0 to 1; NULL when none finished",
            "p50_seconds": Field(
                "nearest-rank median of `estimated_seconds` of the jobs finished that day with "
                "a known estimate; NULL if none",
                "seconds",
            ),
            "p90_seconds": Field("nearest-rank 90th percentile of the same", "seconds"),
        },
        facets=("cluster_id", "collection_name"),
        sort_desc="day",
    ),
    "transition_counts": _relation(
        "view",
        "Per UTC day, cluster, kind and pair of states: how many transitions were observed.",
        {
            "day": _DAY,
            "cluster_id": _CLUSTER,
            "kind": _KIND,
            "from_state": _FROM_STATE,
            "to_state": _TO_STATE,
            "transitions": "how many were observed that day",
        },
        facets=("cluster_id", "kind", "to_state"),
        sort_desc="day",
    ),
    "active_jobs": _relation(
        "view",
        "Jobs neither finished nor vanished, with how long they have been in their state.",
        {
            **{c: _JOB_COLUMNS[c] for c in _ACTIVE_JOB_COLUMNS},
            "imported_rows": _JOB_FIGURES["imported_rows"],
            "total_rows": _JOB_FIGURES["total_rows"],
            "state_since": _JOB_COLUMNS["state_since"],
            "last_seen_at": _JOB_COLUMNS["last_seen_at"],
            "seconds_in_state": Field(
                "`last_seen_at - state_since`: known at the last sync; add the time since "
                "`last_seen_at` for now",
                "seconds",
            ),
        },
        facets=_JOB_FACETS,
        sort_desc="seconds_in_state",
    ),
}

RELATIONS: dict[str, Relation] = {**_TABLES, **_VIEWS}
