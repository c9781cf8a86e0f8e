"""What is worth telling people, and how to say it: notification events as plain values.

Four kinds of event, each decided from what the database holds after a pass:

- ``job_failed``: a pass saw a job in ``Failed`` that it had known in another state, or saw a
  new job already failed (it started and failed between two passes). A source's first pass
  announces none: its jobs that are already failed are the backlog, not news.
- ``job_stuck``: a job listed in an open state (``Pending``, ``Importing``, ``Unknown``) for
  longer than the threshold. Once per job and stay in a state.
- ``source_failing``: the latest N passes over a source failed, in a row.
- ``source_recovered``: a pass succeeded after such a streak.

Every event has a stable key derived from what makes it that event (the job and the moment it
was seen failed, the job and the state it is stuck in since when, the first failed pass of a
streak). Deciding the same event twice, after a crash or on the next pass, gives the same key,
and the database keeps one row per key: that is what makes notifications once per event.

Rendering turns due events into messages: one per event, or one digest for a source that has
more than a few due at once. Messages carry each event's key, so a receiver can recognise the
rare message sent twice (see ``jobsync.service.notify``).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jobsync.domain.history import PassPlan, first_seen_state
from jobsync.domain.states import FAILED

__all__ = [
    "DIGEST_LINES",
    "JOB_FAILED",
    "JOB_STUCK",
    "KINDS",
    "MAX_ATTEMPTS",
    "SOURCE_FAILING",
    "SOURCE_RECOVERED",
    "Event",
    "FailedStreak",
    "Message",
    "clean",
    "digest",
    "duration",
    "event_key",
    "failed_jobs",
    "iso",
    "message",
    "streak_events",
    "stuck_job",
    "trial_message",
]

JOB_FAILED = "job_failed"
JOB_STUCK = "job_stuck"
SOURCE_FAILING = "source_failing"
SOURCE_RECOVERED = "source_recovered"
KINDS = (JOB_FAILED, JOB_STUCK, SOURCE_FAILING, SOURCE_RECOVERED)

# Delivery attempts per event: after this many failures it is given up (``jobsync status``).
MAX_ATTEMPTS = 5
# A digest lists at most this many events; the rest are counted.
DIGEST_LINES = 50
# Text from the API (reasons, names) is cut to this many characters in a message.
TEXT_LIMIT = 500


@dataclass(frozen=True)
class Event:
    """One thing to tell: its key (stable, see the module docstring), kind, source, job, facts.

    ``facts`` hold only JSON values (times as ISO 8601 text): they are stored as the payload.
    """

    key: str
    kind: str
    source: str
    job_id: str | None = None
    facts: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Message:
    """A rendered notification. ``level`` is Apprise's notify type: ``info``, ``success``,
    ``warning`` or ``failure``."""

    title: str
    body: str
    level: str


@dataclass(frozen=True)
class FailedStreak:
    """Failed passes in a row over one source, and the pass that ended them (if one did)."""

    first_run_id: int
    failures: int
    since: datetime
    last_error: str | None = None
    recovered_at: datetime | None = None


def event_key(kind: str, source: str, *parts: str) -> str:
    """``kind:`` and a hash of what identifies the event: short, whatever the job id's length."""
    text = "\x00".join((kind, source, *parts))
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()
    return f"{kind}:{digest}"


def iso(moment: datetime | None) -> str | None:
    """UTC ISO 8601 to the second, ``Z``-suffixed; None stays None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def failed_jobs(plan: PassPlan, source: str) -> list[Event]:
    """The ``job_failed`` events of a pass (not of a source's first: see the caller).

    A transition into ``Failed`` from any other state, and a new job already failed. A job
    that vanished while failed and is listed again failed is not news.
    """
    events: list[Event] = []
    rows: dict[str, Any] | None = None
    for t in plan.transitions:
        if t["to_state"] != FAILED or t["from_state"] == FAILED:
            continue
        if rows is None:
            rows = {row.job_id: row for row in plan.updates}
        row = rows.get(t["job_id"])
        events.append(
            _failed(
                source,
                t["job_id"],
                collection=row.collection_name if row is not None else None,
                from_state=t["from_state"],
                raw_state=t["raw_to_state"],
                reason=t["reason"] or (row.reason if row is not None else None),
                window_start=t["window_start"],
                observed_at=t["observed_at"],
            )
        )
    for record in plan.new:
        if first_seen_state(record.raw_state)[2]:
            events.append(
                _failed(
                    source,
                    record.job_id,
                    collection=record.collection_name,
                    from_state=None,
                    raw_state=record.raw_state,
                    reason=record.reason,
                    window_start=plan.first_seen_window,
                    observed_at=record.observed_at,
                )
            )
    return events


def _failed(
    source: str,
    job_id: str,
    *,
    collection: str | None,
    from_state: str | None,
    raw_state: str | None,
    reason: str | None,
    window_start: datetime | None,
    observed_at: datetime,
) -> Event:
    seen = iso(observed_at)
    assert seen is not None
    return Event(
        key=event_key(JOB_FAILED, source, job_id, seen),
        kind=JOB_FAILED,
        source=source,
        job_id=job_id,
        facts={
            "collection": collection,
            "from_state": from_state,
            "raw_state": raw_state,
            "reason": reason,
            "window_start": iso(window_start),
            "observed_at": seen,
        },
    )


def stuck_job(
    source: str,
    job_id: str,
    *,
    collection: str | None,
    state: str,
    raw_state: str | None,
    state_since: datetime,
    progress: int | None,
    seen_at: datetime,
) -> Event:
    """A job still listed in ``state`` at ``seen_at``, where it has been since ``state_since``."""
    since = iso(state_since)
    assert since is not None
    return Event(
        key=event_key(JOB_STUCK, source, job_id, state, since),
        kind=JOB_STUCK,
        source=source,
        job_id=job_id,
        facts={
            "collection": collection,
            "state": state,
            "raw_state": raw_state,
            "state_since": since,
            "seen_at": iso(seen_at),
            "seconds": max(0, int((seen_at - state_since).total_seconds())),
            "progress": progress,
        },
    )


def streak_events(source: str, streak: FailedStreak | None, failing_passes: int) -> list[Event]:
    """``source_failing`` for a streak of at least ``failing_passes``, and ``source_recovered``
    too once a pass ended it. Both keyed by the streak's first failed pass."""
    if streak is None or streak.failures < failing_passes:
        return []
    first = str(streak.first_run_id)

    def event(kind: str, **facts: Any) -> Event:
        return Event(
            key=event_key(kind, source, first),
            kind=kind,
            source=source,
            facts={"failures": streak.failures, "since": iso(streak.since), **facts},
        )

    events = [event(SOURCE_FAILING, last_error=streak.last_error)]
    if streak.recovered_at is not None:
        events.append(event(SOURCE_RECOVERED, recovered_at=iso(streak.recovered_at)))
    return events


# -- messages -------------------------------------------------------------------------------

_LEVELS = {
    JOB_FAILED: "failure",
    JOB_STUCK: "warning",
    SOURCE_FAILING: "failure",
    SOURCE_RECOVERED: "success",
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def clean(value: Any, limit: int = TEXT_LIMIT) -> str:
    """Text fit for a chat message: control characters escaped, cut to ``limit`` characters."""
    text = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def duration(seconds: float, *, bare_minutes: bool = True) -> str:
    """``45s``, ``12m``, ``2h05m``, ``3d04h``.

    With ``bare_minutes=False`` whole minutes keep their seconds (``12m00s``).
    """
    whole = max(0, int(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s" if secs or not bare_minutes else f"{minutes}m"
    return f"{secs}s"


def _job(event: Event) -> str:
    collection = event.facts.get("collection")
    where = f" (collection {clean(collection)})" if collection else ""
    return f"job {clean(event.job_id)}{where}"


def _summary(event: Event) -> str:
    """One line saying what happened, for a message's first line and a digest's list."""
    f = event.facts
    if event.kind == JOB_FAILED:
        reason = clean(f["reason"]) if f.get("reason") else "no reason given"
        return f"{_job(event)} failed: {reason}"
    if event.kind == JOB_STUCK:
        return (
            f"{_job(event)} has been {f['state']} for {duration(f['seconds'])} "
            f"(since {f['state_since']})"
        )
    if event.kind == SOURCE_FAILING:
        return f"the last {f['failures']} passes over {clean(event.source)} failed"
    if event.kind == SOURCE_RECOVERED:
        return f"{clean(event.source)} synced again after {f['failures']} failed passes"
    return f"{event.kind}: {clean(event.job_id or event.source)}"


def message(event: Event) -> Message:
    """The message for one event."""
    f = event.facts
    source = clean(event.source)
    summary = _summary(event)
    lines = [summary[:1].upper() + summary[1:] + "."]
    if event.kind == JOB_FAILED:
        title = f"Import job failed in {source}"
        was = f"{f['from_state']} -> Failed" if f.get("from_state") else "first seen failed"
        after = f["window_start"] or "an unknown time"
        lines.append(f"It failed after {after} and by {f['observed_at']} ({was}).")
        if f.get("raw_state") and f["raw_state"] != FAILED:
            lines.append(f"State reported by the API: {clean(f['raw_state'])}.")
    elif event.kind == JOB_STUCK:
        title = f"Import job stuck in {source}"
        raw = f" ({clean(f['raw_state'])})" if f.get("raw_state") not in (None, f["state"]) else ""
        lines.append(f"Still {f['state']}{raw} when last listed, at {f['seen_at']}.")
        if f.get("progress") is not None:
            lines.append(f"Progress: {f['progress']}%.")
    elif event.kind == SOURCE_FAILING:
        title = f"jobsync cannot sync {source}"
        lines.append(f"Failing since {f['since']}.")
        if f.get("last_error"):
            lines.append(f"Last error: {clean(f['last_error'])}")
    elif event.kind == SOURCE_RECOVERED:
        title = f"jobsync syncs {source} again"
        lines.append(
            f"It had been failing since {f['since']}; it succeeded at {f['recovered_at']}."
        )
    else:
        title = f"jobsync: {event.kind} in {source}"
    lines += [f"Source: {source}", f"Event: {event.key}"]
    return Message(title, "\n".join(lines), _LEVELS.get(event.kind, "info"))


_NOUNS = {
    JOB_FAILED: ("job failed", "jobs failed"),
    JOB_STUCK: ("job stuck", "jobs stuck"),
    SOURCE_FAILING: ("source failing", "source failing"),
    SOURCE_RECOVERED: ("source recovered", "source recovered"),
}


def digest(source: str, events: Sequence[Event]) -> Message:
    """One message listing many events of one source (at most :data:`DIGEST_LINES` of them)."""
    counts = Counter(e.kind for e in events)
    parts = []
    for kind in KINDS:
        if counts[kind]:
            one, many = _NOUNS[kind]
            parts.append(f"{counts[kind]} {one if counts[kind] == 1 else many}")
    name = clean(source)
    lines = [f"{len(events)} events in {name}: {', '.join(parts)}.", ""]
    lines += [f"- {_summary(e)} [{e.key}]" for e in events[:DIGEST_LINES]]
    if len(events) > DIGEST_LINES:
        lines.append(f"- ... and {len(events) - DIGEST_LINES} more (jobsync jobs shows them all)")
    lines += ["", f"Source: {name}"]
    levels = {_LEVELS.get(e.kind, "info") for e in events}
    level = next((lv for lv in ("failure", "warning", "success") if lv in levels), "info")
    return Message(f"{len(events)} import job events in {name}", "\n".join(lines), level)


def trial_message(origin: str) -> Message:
    """What ``jobsync notify test`` sends."""
    return Message(
        "jobsync test notification",
        f"This is a test from jobsync: notifications to this target ({origin}) arrive.",
        "info",
    )
