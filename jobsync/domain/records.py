"""Turning the ``data`` of a list response into job records, tolerating every known variant.

Variants that Zilliz Cloud and Milvus versions send: records under ``data.records``,
``data.tasks`` or a bare list; ids under ``jobId``, ``jobID`` or ``taskID``; ``count`` as a
number, a string, or absent. A record we cannot identify is skipped and counted, never guessed
at.

A success answer must carry a listing: no ``data``, or ``data`` without ``records``/``tasks``
(or with them null), is a protocol error, never an empty list, unless ``count`` says 0 in so
many words. Taking such an answer as "no jobs" would mark every stored job vanished.

The progress endpoint's ``data`` becomes a :class:`JobDetails` (``parse_progress_data``): every
figure is checked on its own, and one that is missing, hostile or out of range becomes None
instead of failing the whole answer. ``completeTime`` must carry ``Z`` or an offset: a timestamp
without one could be in any time zone, so it is dropped (and flagged), never guessed at.

Text policy, the same on SQLite and PostgreSQL: NUL characters and lone UTF-16 surrogates
(which PostgreSQL and both drivers reject) are replaced with U+FFFD; everything else is kept
exactly as sent, whatever its length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from sys import intern
from typing import Any, NamedTuple

from jobsync.errors import ProtocolError

__all__ = [
    "JobDetails",
    "JobRecord",
    "ListPage",
    "Snapshot",
    "clean_text",
    "parse_complete_time",
    "parse_count",
    "parse_list_data",
    "parse_progress_data",
]

_ID_KEYS = ("jobId", "jobID", "taskID")
_make_record = tuple.__new__
REPLACEMENT = "\ufffd"


class JobRecord(NamedTuple):
    """One job as one list page showed it, stamped with when that page arrived.

    A named tuple, not a frozen dataclass: a first sync makes one per listed job, and a tuple
    is built several times faster and, holding no container, is left alone by the cyclic
    garbage collector. ``_replace`` makes a changed copy.
    """

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
    # Why the snapshot could not be proven complete (None while it is, or before it is known).
    incomplete_reason: str | None = None
    # The ids of the last walk in list order, when it was not the first (``jobs`` keeps the
    # order in which the walks first saw them); and the jobs seen arriving at the head when it
    # was read again, after that walk. The pass checks its proof in that order, without those
    # (jobsync.domain.completeness.arrived_below_the_head).
    walk_order: list[str] | None = None
    arrived_at_head: set[str] = field(default_factory=set)

    @property
    def distinct_jobs(self) -> int:
        return len(self.jobs)


def parse_list_data(data: Any, observed_at: datetime) -> ListPage:
    """Parse one page. Raises ProtocolError only when the page as a whole is unusable."""
    count: int | None = None
    if isinstance(data, list):
        items = data
    elif isinstance(data, dict):
        count = _count(data.get("count"))
        items = _items(data, count)
    elif data is None:
        raise ProtocolError("a success answer without 'data': the list response has no listing")
    else:
        raise ProtocolError(f"list response 'data' is a {type(data).__name__}, not an object")
    records: list[JobRecord] = []
    invalid = 0
    for item in items:
        record = _usual_record(item, observed_at) if type(item) is dict else None
        if record is None:
            record = _record(item, observed_at)
        if record is None:
            invalid += 1
        else:
            records.append(record)
    return ListPage(records=records, invalid=invalid, count=count, size=len(items))


def _items(data: dict[str, Any], count: int | None) -> list[Any]:
    for key in ("records", "tasks"):
        value = data.get(key)
        if isinstance(value, list):
            return value
        if value is not None:
            raise ProtocolError(f"list response 'data.{key}' is a {type(value).__name__}")
    if count == 0:
        return []  # an empty list, said in so many words
    raise ProtocolError(
        "list response has no listing: 'data.records' (or 'data.tasks') is missing or null"
    )


def _count(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProtocolError(f"list response 'count' is not a non-negative integer: {value!r:.40}")
    return value


def _usual_record(item: dict[str, Any], observed_at: datetime) -> JobRecord | None:
    """The record of an item in the shape every API version sends (``jobId``, the texts as
    ASCII strings or absent, ``progress`` a whole number from 0 to 100 or absent), or None for
    ``_record`` to judge: the same record ``_record`` makes, at a fraction of its cost. A first
    sync parses every job it lists, so this is what a pass's fetch spends its time on."""
    job_id = item.get("jobId")
    collection = item.get("collectionName")
    state = item.get("state")
    progress = item.get("progress")
    reason = item.get("reason")
    if not (
        type(job_id) is str
        and (collection is None or type(collection) is str)
        and (state is None or type(state) is str)
        and (reason is None or type(reason) is str)
        and (progress is None or (type(progress) is int and 0 <= progress <= 100))
    ):
        return None
    # The text policy has nothing to replace in ASCII without NUL (isascii costs nothing).
    text = job_id + (collection or "") + (state or "") + (reason or "")
    if not text.isascii() or "\x00" in text:
        return None
    job_id = job_id.strip()
    if not job_id:
        return None
    # The tuple of six made directly: JobRecord(...) passes through a Python-level __new__.
    return _make_record(
        JobRecord,
        (
            job_id,
            None if collection is None else intern(collection),
            None if state is None else intern(state),
            progress,
            reason or None,
            observed_at,
        ),
    )


def _record(item: Any, observed_at: datetime) -> JobRecord | None:
    if not isinstance(item, dict):
        return None
    job_id = _job_id(item)
    if job_id is None:
        return None
    return JobRecord(
        job_id=job_id,
        # Shared strings: a million jobs name a handful of collections and states, and a
        # snapshot holds each name once, not once per job.
        collection_name=_shared(_text(item.get("collectionName"))),
        raw_state=_shared(_text(item.get("state"))),
        progress=_progress(item.get("progress")),
        reason=_text(item.get("reason")) or None,
        observed_at=observed_at,
    )


def _shared(value: str | None) -> str | None:
    return None if value is None else intern(value)


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


# --- the progress endpoint ---------------------------------------------------------------------

# BIGINT's range: a figure beyond it could not be stored anyway.
MAX_FIGURE = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,19}")
_RFC3339 = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ](?P<time>[0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?:\.(?P<fraction>[0-9]{1,12}))?(?P<offset>[Zz]|[+-][0-9]{2}:[0-9]{2})?"
)
# Go's zero time ("0001-01-01T00:00:00Z") and its like mean "not set", not a moment.
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class JobDetails:
    """What the progress endpoint said about one job, stamped with when the answer arrived."""

    job_id: str
    raw_state: str | None
    progress: int | None
    reason: str | None
    total_rows: int | None
    imported_rows: int | None
    file_size: int | None
    complete_time: datetime | None
    sampled_at: datetime
    # completeTime was a timestamp without Z or an offset, and was dropped.
    ambiguous_time: bool = False


def parse_progress_data(data: Any, job_id: str, sampled_at: datetime) -> JobDetails:
    """Parse one progress answer. Raises ProtocolError only when it is unusable as a whole."""
    if not isinstance(data, dict):
        raise ProtocolError(f"progress response 'data' is a {type(data).__name__}, not an object")
    answered = _job_id(data)
    if answered is not None and answered != job_id:
        raise ProtocolError("progress response is about another job than the one asked for")
    complete_time, ambiguous = parse_complete_time(data.get("completeTime"))
    return JobDetails(
        job_id=job_id,
        raw_state=_text(data.get("state")) or None,
        progress=_progress(data.get("progress")),
        reason=_text(data.get("reason")) or None,
        total_rows=parse_count(data.get("totalRows")),
        imported_rows=parse_count(data.get("importedRows")),
        file_size=parse_count(data.get("fileSize")),
        complete_time=complete_time,
        sampled_at=sampled_at,
        ambiguous_time=ambiguous,
    )


def parse_count(value: Any) -> int | None:
    """A non-negative whole number that fits in BIGINT, given as a number or a digit string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        # Bounded before int(): a 5,000-digit string would raise, not just be too big.
        value = int(text) if _DIGITS.fullmatch(text) else None
    elif isinstance(value, float):
        value = int(value) if value.is_integer() and 0 <= value <= MAX_FIGURE else None
    if isinstance(value, int) and 0 <= value <= MAX_FIGURE:
        return value
    return None


def parse_complete_time(value: Any) -> tuple[datetime | None, bool]:
    """``completeTime`` as an aware UTC datetime, and whether it was dropped as ambiguous.

    RFC 3339 with ``Z`` or an offset (Milvus prints the server's local one, e.g. ``+08:00``);
    "" or anything unparseable is None; a timestamp without an offset is None and flagged.
    """
    if not isinstance(value, str):
        return None, False
    match = _RFC3339.fullmatch(value.strip())
    if match is None:
        return None, False
    if match["offset"] is None:
        return None, True
    # Go prints nanoseconds; Python keeps microseconds.
    fraction = (match["fraction"] or "")[:6].ljust(6, "0")
    offset = "+00:00" if match["offset"] in ("Z", "z") else match["offset"]
    try:
        moment = datetime.fromisoformat(
            f"{match['date']}T{match['time']}.{fraction}{offset}"
        ).astimezone(UTC)
    except (ValueError, OverflowError):
        return None, False
    return (moment if moment >= _EARLIEST else None), False
