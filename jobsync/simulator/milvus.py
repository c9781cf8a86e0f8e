"""Self-hosted Milvus REST v2 import-job API (docs/configuration.md, "Self-hosted Milvus").

Used when the simulator runs with `mode="milvus"`. Faithful to: `POST /v2/vectordb/jobs/import/list`
with an optional `dbName`/`collectionName` body and **no paging** (`pageSize`/`currentPage` are
ignored): every job comes back at once, in a different random order on every request, as the
server iterates a map; records carry `jobId`, `collectionName`, `state`, `progress` and `reason`
only when non-empty; an empty or non-JSON body is code 1801; with a key configured, a missing or
wrong one is **HTTP 401** with code 1800 (no key configured means auth is off); progress lives at
`/describe` and `/get_progress` (not `getProgress`) with `{"jobId"}`, unknown job code 2100;
`completeTime` is printed in the server's local offset (+08:00 here) and is "" until done and for
failed jobs; the job's `importedRows`, `totalRows` and `fileSize` (the sum over its files) come
beside it; detail rows use the detail state set (`InProgress` for an importing file); an unknown
path is gin's plain-text `404 page not found`. Finished jobs leave the list after 3 hours unless
the simulator is given another `retention`.

Choices: one database (`dbName` and the `DB-Name` header are accepted and ignored); a
`collectionName` that no job uses and that is not one of the simulator's collection names is
code 100 (collection not found), otherwise the list is filtered to it exactly; `count_override`
and `ignore_current_page` do not apply (there is no paging to break).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from .model import COMPLETED_LIKE, FAILED_LIKE, IMPORTING_LIKE, PENDING_LIKE
from .wire import (
    DESCRIBE_PATH,
    GET_PROGRESS_PATH,
    LIST_PATH,
    ApiRequest,
    Reply,
    bearer_matches,
    envelope,
    rfc3339,
    success,
)
from .world import COLLECTIONS, Cluster, Job, World

PROGRESS_PATHS = (DESCRIBE_PATH, GET_PROGRESS_PATH)
MILVUS_RETENTION = timedelta(hours=3)
SERVER_OFFSET = timedelta(hours=8)

CODE_COLLECTION_NOT_FOUND = 100
CODE_UNAUTHENTICATED = 1800
CODE_BAD_JSON = 1801
CODE_MISSING_FIELD = 1802
CODE_IMPORT_ERROR = 2100

MESSAGES = {
    CODE_COLLECTION_NOT_FOUND: "collection not found",
    CODE_UNAUTHENTICATED: "user hasn't authenticated",
    CODE_BAD_JSON: "can only accept json format request",
    CODE_MISSING_FIELD: "missing required parameters, error: Key: 'jobId' Error:required",
    CODE_IMPORT_ERROR: "import job not found",
    10001: "request timeout",
}


def _detail_state(state: str) -> str:
    if state in PENDING_LIKE:
        return "Pending"
    if state in IMPORTING_LIKE:
        return "InProgress"
    if state in COMPLETED_LIKE:
        return "Completed"
    if state in FAILED_LIKE:
        return "Failed"
    return state


class MilvusApi:
    """Request -> reply for a self-hosted Milvus; called under the simulator's lock."""

    paths = frozenset({LIST_PATH, *PROGRESS_PATHS})
    messages = MESSAGES

    def __init__(self, world: World, api_key: str | None, order_seed: int) -> None:
        if len(world.clusters) != 1:
            raise ValueError("a Milvus server has one job list: give exactly one cluster id")
        self._world = world
        self._api_key = api_key
        # Its own random source, so the per-request shuffle never perturbs advance().
        self._order = random.Random(order_seed)

    def not_found(self) -> Reply:
        return Reply(404, b"404 page not found", (("Content-Type", "text/plain"),))

    def handle(self, request: ApiRequest, now: datetime) -> Reply:
        if not bearer_matches(request.authorization, self._api_key):
            return envelope(CODE_UNAUTHENTICATED, MESSAGES[CODE_UNAUTHENTICATED], 401)
        if request.body is None:
            return envelope(CODE_BAD_JSON, MESSAGES[CODE_BAD_JSON])
        cluster = self._world.cluster(self._world.first_cluster_id, now)
        if request.path == LIST_PATH:
            return self._list(cluster, request.body)
        return self._describe(cluster, request.body)

    def _list(self, cluster: Cluster, body: dict[str, Any]) -> Reply:
        name = body.get("collectionName") or ""
        if not isinstance(name, str):
            return envelope(CODE_BAD_JSON, MESSAGES[CODE_BAD_JSON])
        jobs = (
            [j for j in cluster.jobs if j.collection_name == name] if name else list(cluster.jobs)
        )
        if name and not jobs and name not in COLLECTIONS:
            return envelope(CODE_COLLECTION_NOT_FOUND, MESSAGES[CODE_COLLECTION_NOT_FOUND])
        self._order.shuffle(jobs)
        return success({"records": [_record(j) for j in jobs]})

    def _describe(self, cluster: Cluster, body: dict[str, Any]) -> Reply:
        job_id = body.get("jobId")
        if not isinstance(job_id, str) or not job_id:
            return envelope(CODE_MISSING_FIELD, MESSAGES[CODE_MISSING_FIELD])
        job = cluster.find(job_id)
        if job is None:
            return envelope(CODE_IMPORT_ERROR, MESSAGES[CODE_IMPORT_ERROR])
        return success(_describe_data(job))


def _record(job: Job) -> dict[str, Any]:
    record: dict[str, Any] = {
        "jobId": job.job_id,
        "collectionName": job.collection_name,
        "state": job.state,
        "progress": job.progress,
    }
    if job.reason:
        record["reason"] = job.reason
    return record


def _describe_data(job: Job) -> dict[str, Any]:
    complete = rfc3339(job.finished_at if job.state in COMPLETED_LIKE else None, SERVER_OFFSET)
    return {
        "jobId": job.job_id,
        "collectionName": job.collection_name,
        "completeTime": complete,
        "state": job.state,
        "progress": job.progress,
        "importedRows": job.imported_rows,
        "totalRows": job.total_rows,
        "fileSize": job.file_size,
        "reason": job.reason,
        "details": [
            {
                "fileName": job.file_name,
                "fileSize": job.file_size,
                "state": _detail_state(job.state),
                "progress": job.progress,
                "completeTime": complete,
                "reason": job.reason,
                "importedRows": job.imported_rows,
                "totalRows": job.total_rows,
            }
        ],
    }
