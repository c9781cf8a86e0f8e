"""Turning the ``data`` of a list response into job records, tolerating every known variant.

Variants (see the API reference): records under ``data.records``, ``data.tasks`` or a bare
list; ids under ``jobId``, ``jobID`` or ``taskID``; ``count`` as a number, a string, or absent.
A record we cannot identify is skipped and counted, never guessed at.

Text policy, the same on SQLite and PostgreSQL: NUL characters and lone UTF-16 surrogates
(which PostgreSQL and both drivers reject) are replaced with U+FFFD; everything else is kept
exactly as sent, whatever its length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jobsync.errors import ProtocolError

__all__ = ["JobRecord", "ListPage", "Snapshot", "clean_text", "parse_list_data"]

_ID_KEYS = ("jobId", "jobID", "taskID")
REPLACEMENT = "\ufffd"


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One job as one list page showed it, stamped with when that page arrived."""

    job_id: str
    collection_name: str | None
    raw_state: str | None
    progress: int | None
    reason: str | None
    observed_at: datetime


@dataclass(frozen=True, slots=True)
class ListPage:
    records: list[JobRecord]
    invalid: int
    count: int | None
    size: int


@dataclass
class Snapshot:
    """What one pass saw of one source."""

    source_key: str
    started_at: datetime
    finished_at: datetime
    jobs: dict[str, JobRecord] = field(default_factory=dict)
    pages: int = 0
    records: int = 0
    invalid: int = 0
    duplicates: int = 0
    reported_count: int | None = None
    complete: bool = False
    walks: int = 0

    @property
    def distinct_jobs(self) -> int:
        return len(self.jobs)


def parse_list_data(data: Any, observed_at: datetime) -> ListPage:
    """Parse one page. Raises ProtocolError only when the page as a whole is unusable."""
    count: int | None = None
    if isinstance(data, list):
        items = data
    elif isinstance(data, dict):
        items = _items(data)
        count = _count(data.get("count"))
    elif data is None:
        items = []
    else:
        raise ProtocolError(f"list response 'data' is a {type(data).__name__}, not an object")
    records: list[JobRecord] = []
    invalid = 0
    for item in items:
        record = _record(item, observed_at)
        if record is None:
            invalid += 1
        else:
            records.append(record)
    return ListPage(records=records, invalid=invalid, count=count, size=len(items))


def _items(data: dict[str, Any]) -> list[Any]:
    for key in ("records", "tasks"):
        if key in data:
            value = data[key]
            if value is None:
                return []
            if not isinstance(value, list):
                raise ProtocolError(f"list response 'data.{key}' is a {type(value).__name__}")
            return value
    if data.get("count") in (0, "0", None):
        return []
    raise ProtocolError("list response has neither 'data.records' nor 'data.tasks'")


def _count(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError(f"list response 'count' is not a non-negative integer: {value!r:.40}")
    return value


def _record(item: Any, observed_at: datetime) -> JobRecord | None:
    if not isinstance(item, dict):
        return None
    job_id = _job_id(item)
    if job_id is None:
        return None
    return JobRecord(
        job_id=job_id,
        collection_name=_text(item.get("collectionName")),
        raw_state=_text(item.get("state")),
        progress=_progress(item.get("progress")),
        reason=_text(item.get("reason")) or None,
        observed_at=observed_at,
    )


def _job_id(item: dict[str, Any]) -> str | None:
    for key in _ID_KEYS:
        value = item.get(key)
        if value is None:
            continue
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return str(value)
        if isinstance(value, str):
            value = clean_text(value.strip())
            return value or None
        return None
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return clean_text(value)
    if value is None or isinstance(value, dict | list):
        return None
    return clean_text(str(value))


def _progress(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and 0 <= value <= 100:
        return value
    return None


def clean_text(value: str) -> str:
    """Apply the text policy: NUL and lone surrogates become U+FFFD."""
    if "\x00" in value:
        value = value.replace("\x00", REPLACEMENT)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value
