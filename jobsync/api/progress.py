"""The progress endpoint's names and requests.

Servers name the endpoint differently: ``/describe`` (what the SDKs call), ``/getProgress``
(Zilliz Cloud only) and ``/get_progress`` (every Milvus). On HTTP 404 the next name is tried; the
one that answered is remembered per source for the life of the process (``PathMemory``). The
requests themselves go out from ``jobsync.api.details``.
"""

from __future__ import annotations

import threading
from typing import Any

from jobsync.config import Source

__all__ = [
    "KNOWN_PATHS",
    "MILVUS_PROGRESS_PATHS",
    "PROGRESS_PATHS",
    "PathMemory",
    "progress_request",
]

_JOBS = "/v2/vectordb/jobs/import"
PROGRESS_PATHS = (f"{_JOBS}/describe", f"{_JOBS}/getProgress", f"{_JOBS}/get_progress")
# Self-hosted Milvus never had getProgress.
MILVUS_PROGRESS_PATHS = (PROGRESS_PATHS[0], PROGRESS_PATHS[2])


def progress_request(source: Source, job_id: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Body and extra headers of a progress request about ``job_id`` on ``source``."""
    body = {**source.list_body(), "jobId": job_id}
    # Milvus takes the database from a header; newer servers read the body's dbName too.
    headers = {"DB-Name": source.db_name} if source.kind == "milvus" and source.db_name else {}
    return body, headers


class PathMemory:
    """Which progress path answered, per API root and source, for the life of the process.

    A source that has not asked yet starts with the path another source of the same API root
    found: the server is the same.
    """

    def __init__(self) -> None:
        self._paths: dict[tuple[str, str], str] = {}
        self._roots: dict[str, str] = {}
        self._lock = threading.Lock()

    def known(self, source: Source) -> str | None:
        """The path that answered for ``source`` (or its API root), if one did."""
        with self._lock:
            return self._paths.get((source.base_url, source.key)) or self._roots.get(
                source.base_url
            )

    def order(self, source: Source) -> tuple[str, ...]:
        """The paths to try for ``source``, the one that answered last time first."""
        paths = MILVUS_PROGRESS_PATHS if source.kind == "milvus" else PROGRESS_PATHS
        known = self.known(source)
        if known is None or known not in paths:
            return paths
        return (known, *(p for p in paths if p != known))

    def remember(self, source: Source, path: str) -> None:
        with self._lock:
            self._paths[(source.base_url, source.key)] = path
            self._roots[source.base_url] = path

    def forget(self) -> None:
        """Forget every path: another server may answer at the same address now (tests)."""
        with self._lock:
            self._paths.clear()
            self._roots.clear()


KNOWN_PATHS = PathMemory()
