"""The Zilliz Cloud v2 import-job API, as its public documentation describes it.

Faithful to: `POST /v2/vectordb/jobs/import/list` with `clusterId` (or `projectId` + `regionId`),
`pageSize` 1..100 (default 10) and 1-based `currentPage` (default 1); the success envelope
`{"code": 0, "data": {"count", "currentPage", "pageSize", "records"}}` with `count` the total over
all pages and an empty `records` past the last page; records carrying only `collectionName`,
`jobId`, `state`; errors as HTTP 200 with a non-zero `code` (80001 bad or missing key, 96008,
96009, 96018, 96025, 96036, 96026); the progress endpoint under all three names; unknown body
fields ignored. Messages never echo the key or the request body.

Choices where the documentation is silent (written down here so tests can rely on them):
- Order is newest first by creation, stable between requests.
- A cluster id is valid if it is configured or matches `in<2 digits>-<16+ hex digits>`; a valid
  but unconfigured id is 96018, anything else 96036. `projectId` + `regionId` name the cluster
  `"<projectId>/<regionId>"`, which must be configured (else 96018).
- `dbName` and `collectionName` are ignored by the list (the documentation lists no filter for the
  Zilliz v2 list; pymilvus sends both, usually empty).
- A body that is not a JSON object gets code 1801 (Milvus's "can only accept json format
  request", which the Zilliz vectordb endpoints inherit); an empty body counts as `{}`.
- `pageSize`/`currentPage` must be JSON integers (`null` means the default); strings, floats and
  booleans are 96008/96009. `jobId` must be a string, else 96026.
- `completeTime` is set for Completed and Failed jobs (both are "done"), in UTC with a `Z`.
- The key is checked before the body is parsed, so a bad key always wins (80001).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from .faults import Quirks
from .wire import (
    DESCRIBE_PATH,
    GET_PROGRESS_PATH,
    LIST_PATH,
    PROGRESS_PATH,
    ApiRequest,
    Reply,
    bearer_matches,
    envelope,
    http_error,
    is_int,
    rfc3339,
    success,
)
from .world import Cluster, Job, World

PROGRESS_PATHS = (PROGRESS_PATH, DESCRIBE_PATH, GET_PROGRESS_PATH)

CODE_BAD_JSON = 1801
CODE_INVALID_TOKEN = 80001
CODE_PAGE_SIZE = 96008
CODE_CURRENT_PAGE = 96009
CODE_CLUSTER_NOT_FOUND = 96018
CODE_EMPTY_CLUSTER_ID = 96025
CODE_JOB_NOT_FOUND = 96026
CODE_INVALID_CLUSTER_ID = 96036

MESSAGES = {
    CODE_BAD_JSON: "can only accept json format request",
    CODE_INVALID_TOKEN: (
        "Invalid token: your token is not valid. Please double-check your request parameters "
        "and ensure a valid token is provided."
    ),
    80002: "Invalid token: the token has expired.",
    21119: "The apikey is illegal.",
    CODE_PAGE_SIZE: "The pageSize must be an integer between 1 and 100.",
    CODE_CURRENT_PAGE: "The currentPage must be an integer greater than 0.",
    96014: "You do not have permission to access this cluster.",
    CODE_CLUSTER_NOT_FOUND: "The cluster does not exist or you have no permission to access it.",
    CODE_EMPTY_CLUSTER_ID: "The clusterId can not be empty.",
    CODE_JOB_NOT_FOUND: "The import job does not exist.",
    CODE_INVALID_CLUSTER_ID: "The clusterId is invalid.",
}

_CLUSTER_ID = re.compile(r"in\d{2}-[0-9a-f]{16,}")
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100


def _error(code: int) -> Reply:
    return envelope(code, MESSAGES[code])


class ZillizApi:
    """Request -> reply for the Zilliz Cloud v2 endpoints; called under the simulator's lock."""

    paths = frozenset({LIST_PATH, *PROGRESS_PATHS})
    messages = MESSAGES

    def __init__(self, world: World, api_key: str | None, quirks: Quirks) -> None:
        self._world = world
        self._api_key = api_key
        self._quirks = quirks

    def not_found(self) -> Reply:
        return http_error(404)

    def handle(self, request: ApiRequest, now: datetime) -> Reply:
        if not bearer_matches(request.authorization, self._api_key):
            return _error(CODE_INVALID_TOKEN)
        if request.malformed:
            return _error(CODE_BAD_JSON)
        body = request.body or {}
        found = self._cluster(body, now)
        if isinstance(found, Reply):
            return found
        if request.path == LIST_PATH:
            return self._list(found, body)
        return self._progress(found, body)

    def _cluster(self, body: dict[str, Any], now: datetime) -> Cluster | Reply:
        cluster_id = body.get("clusterId")
        if cluster_id is None or cluster_id == "":
            project, region = body.get("projectId"), body.get("regionId")
            if not (isinstance(project, str) and project and isinstance(region, str) and region):
                return _error(CODE_EMPTY_CLUSTER_ID)
            cluster_id = f"{project}/{region}"
            if cluster_id not in self._world.clusters:
                return _error(CODE_CLUSTER_NOT_FOUND)
        if not isinstance(cluster_id, str):
            return _error(CODE_INVALID_CLUSTER_ID)
        if cluster_id in self._world.clusters:
            return self._world.cluster(cluster_id, now)
        if _CLUSTER_ID.fullmatch(cluster_id):
            return _error(CODE_CLUSTER_NOT_FOUND)
        return _error(CODE_INVALID_CLUSTER_ID)

    def _list(self, cluster: Cluster, body: dict[str, Any]) -> Reply:
        size = body.get("pageSize")
        page = body.get("currentPage")
        size = DEFAULT_PAGE_SIZE if size is None else size
        page = 1 if page is None else page
        if not is_int(size) or not 1 <= size <= MAX_PAGE_SIZE:
            return _error(CODE_PAGE_SIZE)
        if not is_int(page) or page < 1:
            return _error(CODE_CURRENT_PAGE)
        served = 1 if self._quirks.ignore_current_page else page
        jobs = cluster.newest_first((served - 1) * size, served * size)
        count = self._quirks.count_override
        return success(
            {
                "count": len(cluster.jobs) if count is None else count,
                "currentPage": page,
                "pageSize": size,
                "records": [
                    {"collectionName": j.collection_name, "jobId": j.job_id, "state": j.state}
                    for j in jobs
                ],
            }
        )

    def _progress(self, cluster: Cluster, body: dict[str, Any]) -> Reply:
        job_id = body.get("jobId")
        job = cluster.find(job_id) if isinstance(job_id, str) else None
        if job is None:
            return _error(CODE_JOB_NOT_FOUND)
        return success(progress_data(job))


def progress_data(job: Job) -> dict[str, Any]:
    # The job's one file (see world.py): the job and its detail row say the same of it.
    file = {
        "fileName": job.file_name,
        "fileSize": job.file_size,
        "state": job.state,
        "progress": job.progress,
        "completeTime": rfc3339(job.finished_at),
        "reason": job.reason,
    }
    return {
        "jobId": job.job_id,
        "collectionName": job.collection_name,
        **file,
        "totalRows": job.total_rows,
        "importedRows": job.imported_rows,
        "details": [{**file, "importedRows": job.imported_rows}],
    }
