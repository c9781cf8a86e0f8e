"""The data dictionary's text: what every table, view and column of jobsync means.

Written once, here: ``jobsync.storage.dictionary`` derives PostgreSQL's comments, the Datasette
metadata and the tables of docs/schema.md from it. Descriptions are Markdown (backticks around
names). Each column may name its unit (a key of ``UNITS``); each table or view names the columns
worth counting by (facets) and the one to sort by, newest first. A new table, view or column
needs its description here: tests reflect a migrated database and name what is missing.
"""

from __future__ import annotations

from jobsync.storage.view_descriptions import (
    CLUSTER,
    DAILY_COLUMNS,
    FACTS,
    FROM_STATE,
    JOB,
    JOB_COLUMNS,
    JOB_FACETS,
    JOB_FIGURES,
    KIND,
    SOURCE,
    STATE,
    TO_STATE,
    TRANSITION_COUNT_COLUMNS,
    UNITS,
    VIEWS,
    Field,
    Relation,
    relation,
)

__all__ = ["RELATIONS", "UNITS", "Field", "Relation"]

_TABLES = {
    "sync_runs": relation(
        "table",
        "One row per source per pass: how the pass went and what it found.",
        {
            "id": "the run's number, increasing",
            "cluster_id": SOURCE,
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
    "sync_sources": relation(
        "table",
        "One row per source: its latest pass and its latest complete pass.",
        {
            "cluster_id": SOURCE,
            "last_run_id": "the latest pass written (`sync_runs.id`)",
            "last_snapshot_started_at": "when that pass began reading the list",
            "last_snapshot_at": "when that pass finished reading the list: the `last_seen_at` "
            "of every job it listed",
            "last_complete_run_id": "the latest pass whose snapshot was verified complete",
            "last_complete_started_at": "when that pass began reading the list",
            "last_snapshot_us": Field(
                "`last_snapshot_at` as integer microseconds since 1970-01-01 UTC", "microseconds"
            ),
        },
    ),
    "import_job_records": relation(
        "table",
        "One row per job ever seen, with what jobsync needs to plan the next pass; read "
        "`import_jobs` instead.",
        {
            **JOB_COLUMNS,
            "last_seen_at": "the end of the last pass that listed the job; while `listed`, "
            "`sync_sources.last_snapshot_at` is newer and `import_jobs` shows that",
            "last_seen_started_at": "when the last pass that listed the job began: the safe "
            "start of a change window",
            "listed": "1/true when the latest pass listed the job",
            "missed_snapshots": "consecutive complete snapshots that did not list the job",
            "missing_since": "the end of the first of those snapshots; NULL while listed",
            **JOB_FIGURES,
            **FACTS,
        },
        facets=(*JOB_FACETS, "listed"),
    ),
    "import_job_transitions": relation(
        "table",
        "Append-only history: one row per observed change. The change happened in "
        "(`window_start`, `observed_at`].",
        {
            "id": "surrogate key, increasing in the order the changes were recorded",
            "cluster_id": CLUSTER,
            "job_id": JOB,
            "kind": KIND,
            "from_state": FROM_STATE,
            "to_state": TO_STATE,
            "raw_from_state": "`from_state` as the API sent it",
            "raw_to_state": "`to_state` as the API sent it",
            "window_start": "the latest moment the job was known to be in `from_state` (for "
            "`first_seen`: known not to be listed yet); NULL when unknown",
            "observed_at": "the moment a sync first saw the new state",
            "sync_run_id": "the pass that saw it (`sync_runs.id`)",
            "reason": "the failure reason, on a transition to `Failed`",
            "window_start_us": Field(
                "`window_start` as integer microseconds since 1970-01-01 UTC", "microseconds"
            ),
            "observed_us": Field(
                "`observed_at` as integer microseconds since 1970-01-01 UTC", "microseconds"
            ),
        },
        facets=("cluster_id", "kind", "to_state"),
        sort_desc="id",
    ),
    "import_job_progress": relation(
        "table",
        "Append-only samples from the progress endpoint: one row per answer whose figures "
        "differed from the job's previous ones.",
        {
            "id": "surrogate key",
            "cluster_id": CLUSTER,
            "job_id": JOB,
            "sampled_at": "when the progress endpoint answered",
            "sync_run_id": "the pass that asked (`sync_runs.id`)",
            "state": STATE,
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
    "notifications": relation(
        "table",
        "One row per notification event (a job failed or stuck, a source failing or "
        "recovered): recorded as due by the pass that decided it, marked sent after delivery.",
        {
            "id": "surrogate key",
            "event_key": "the event's stable key, unique: `job_failed:`, `job_stuck:`, "
            "`source_failing:` or `source_recovered:` and a hash; messages carry it",
            "kind": "`job_failed`, `job_stuck`, `source_failing` or `source_recovered`",
            "cluster_id": CLUSTER,
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
    "sync_claims": relation(
        "table",
        "One row per source: the latest schedule period a daemon claimed for it, so that "
        "daemons sharing a database sync each source once per period. Overwritten every "
        "period: it never grows.",
        {
            "cluster_id": CLUSTER,
            "period_start": "when the claimed period began",
            "claimed_at": "when it was claimed",
            "host": "the host name of the daemon that claimed it",
            "pid": "that daemon's process id",
        },
    ),
    "rate_slots": relation(
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
    "sync_run_days": relation(
        "table",
        "The passes that pruning removed from `sync_runs`, per source and the UTC day they "
        "started: added to in the transaction that deletes them, so each pass is counted "
        "once, here or there.",
        {
            "cluster_id": CLUSTER,
            "day": "the UTC day the passes started",
            "passes": "passes pruned",
            "failures": "of them, passes that did not succeed (`failed` or `abandoned`)",
            "retries": "their retried requests, summed",
            "pages": "their list pages, summed",
            "seconds": Field("their time from start to finish, summed", "seconds"),
        },
        facets=("cluster_id",),
    ),
    "daily_job_counts": relation(
        "table",
        "What `daily_job_stats` shows, kept current by every pass in its own transaction: one "
        "row per UTC day, source and collection, each job counted under the collection it has "
        "now (a job the list moves to another collection takes its figures along).",
        DAILY_COLUMNS,
        facets=("cluster_id", "collection_name"),
        sort_desc="day",
    ),
    "daily_transition_counts": relation(
        "table",
        "What `transition_counts` shows, kept current by every pass in its own transaction.",
        TRANSITION_COUNT_COLUMNS,
        facets=("cluster_id", "kind", "to_state"),
        sort_desc="day",
    ),
    "alembic_version": relation(
        "table",
        "The schema revision (Alembic's); `jobsync db current` reads it.",
        {"version_num": "the revision the database is at"},
    ),
}

RELATIONS: dict[str, Relation] = {**_TABLES, **VIEWS}
