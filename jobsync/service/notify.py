"""Notifications: events decided with the passes, delivered through Apprise after they commit.

When an event is decided, and in which transaction:

- a job that failed, a job stuck in its state, and a source's recovery: inside the pass's own
  write transaction (:meth:`Notifier.pass_hook`, which ``apply_pass`` calls before it commits).
  They commit with the jobs, history and run record that show them, or not at all: a pass
  killed before its commit decided nothing, and the next pass sees the same changes and
  decides them then.
- a source failing N passes in a row: in a transaction of its own, right after the failed
  pass's run is recorded (:meth:`Notifier.after_failure`). A failed pass has no write
  transaction (it writes nothing but its ``sync_runs`` row). The streak is read back from
  ``sync_runs`` and keyed by its first failed pass, so if the process dies in between, the
  next pass's decision finds the same streak, under the same key: late by a pass, never lost.

Delivery (:meth:`Notifier.deliver`) comes after every source's pass has committed, still under
the sync lock, so two processes never deliver at once. Each due event gets one more attempt
counted *before* it is sent (a crash while sending still uses an attempt, so a message that
crashes jobsync is not retried forever), and is marked delivered to a target right after that
target accepted it. A failed delivery stays due and is retried on the next pass, at most
``MAX_ATTEMPTS`` times in all; ``jobsync status`` shows what is pending or given up.

This is at-least-once delivery: a crash after a target accepted a message and before the mark
is written sends that message once more on the next pass. The message carries each event's
key (``Event: job_failed:...``) so that a receiver can recognise the repeat. The other order,
marking before sending, would lose the event instead.

Several targets are tracked apart (``notifications.delivered_to`` holds their fingerprints): a
target that failed is retried without sending the others the message again. A source with more
than ``digest_after`` events due at once gets one digest message instead of one per event.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Engine

from jobsync.config import NotifySettings, NotifyTarget
from jobsync.domain.clock import Clock, utcnow
from jobsync.domain.history import PassPlan
from jobsync.domain.notifications import (
    MAX_ATTEMPTS,
    Event,
    Message,
    digest,
    failed_jobs,
    message,
    streak_events,
    stuck_job,
    trial_message,
)
from jobsync.errors import ConfigError, LockedError, StorageError
from jobsync.observability.logs import fields
from jobsync.observability.redact import redact
from jobsync.storage.boundary import storage_errors
from jobsync.storage.locking import source_locks
from jobsync.storage.notifications import (
    Due,
    count_attempt,
    failed_streak,
    first_pass,
    load_due,
    record_delivery,
    record_events,
    record_failure,
    record_streak,
    stuck_jobs,
)

__all__ = ["MAX_ATTEMPTS", "SEND_TIMEOUT", "Delivery", "Notifier", "TargetResult"]

log = logging.getLogger(__name__)

# The lock one process delivers under: a name no source can have (a NUL never reaches the API
# or the database).
NOTIFY_LOCK = "\x00jobsync:notify"

# Seconds one message may take to one target, connection and retries included.
SEND_TIMEOUT = 15.0


@dataclass(frozen=True)
class TargetResult:
    """How one message went to one target: ``error`` is None when it was accepted."""

    origin: str
    service: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Delivery:
    """What one delivery round did: messages accepted and refused, events now fully sent."""

    sent: int = 0
    failed: int = 0
    events_sent: int = 0


class _Target:
    """One Apprise URL, ready to send; its fingerprint names it in the database."""

    def __init__(self, target: NotifyTarget, timeout: float) -> None:
        import apprise

        url = target.url.reveal()
        self.origin = target.origin
        self.fingerprint = hashlib.blake2b(
            url.encode("utf-8"), digest_size=8, person=b"jobsync-notify"
        ).hexdigest()
        self._timeout = timeout
        self._apprise = apprise.Apprise(asset=apprise.AppriseAsset(storage_mode="memory"))
        if not self._apprise.add(url):
            raise ConfigError(
                f"notification target {target.origin}: Apprise cannot use this URL (an unknown "
                "scheme, or a part missing): see https://github.com/caronc/apprise/wiki"
            )
        self.service = str(self._apprise[0].service_name)

    def send(self, msg: Message) -> str | None:
        """Send ``msg``; None when the target accepted it, else why not (redacted)."""
        try:
            result: Any = self._apprise.notify(
                body=msg.body,
                title=msg.title,
                notify_type=msg.level,
                body_format="text",
                timeout=self._timeout,
            )
        except Exception as exc:  # a plugin's bug must not stop a pass
            return redact(f"{type(exc).__name__}: {exc}")
        if result:
            return None
        said = [entry.message for entry in result.logs() if entry.message]
        return redact("; ".join(dict.fromkeys(said)) or "the target did not accept the message")


class Notifier:
    """Decides notification events and delivers them (see the module docstring).

    Raises ConfigError when there is no target or Apprise cannot use one.
    """

    def __init__(
        self, settings: NotifySettings, *, timeout: float = SEND_TIMEOUT, clock: Clock = utcnow
    ) -> None:
        if not settings.targets:
            raise ConfigError(
                "no notification targets: give --notify URL, or urls_env or urls_file in the "
                "[notify] table of the config file"
            )
        self.settings = settings
        self._clock = clock
        self._targets = [_Target(target, timeout) for target in settings.targets]

    # -- deciding ---------------------------------------------------------------------------

    def pass_hook(self, source: str) -> Callable[[Connection, PassPlan], None]:
        """What ``apply_pass`` calls inside the pass's write transaction, after the writes."""

        def decide(conn: Connection, plan: PassPlan) -> None:
            self._decide_pass(conn, source, plan)

        return decide

    def _decide_pass(self, conn: Connection, source: str, plan: PassPlan) -> None:
        events: list[Event] = []
        # A source's first pass lists its backlog: jobs that failed before anyone watched.
        if not first_pass(conn, source, plan.run_id):
            events += failed_jobs(plan, source)
        if self.settings.stuck_after is not None:
            # The pass listed these jobs still in their state when it began, at the latest.
            seen = plan.seen_started_at
            cutoff = seen - timedelta(seconds=self.settings.stuck_after)
            events += [
                stuck_job(
                    source,
                    row.job_id,
                    collection=row.collection_name,
                    state=row.state,
                    raw_state=row.raw_state,
                    state_since=row.state_since,
                    progress=row.progress,
                    seen_at=seen,
                )
                for row in stuck_jobs(conn, source, cutoff)
            ]
        # This pass succeeds: it ends the streak of failed passes before it, if there is one.
        ended = failed_streak(conn, source, before_run=plan.run_id, recovered_at=plan.seen_at)
        events += streak_events(source, ended, self.settings.failing_passes)
        added = record_events(conn, events, created_at=plan.seen_at, run_id=plan.run_id)
        if added:
            log.debug("%s: %d notification(s) due", source, added)

    def after_failure(self, engine: Engine, source: str) -> None:
        """Decide ``source_failing`` after a failed pass was recorded. Never raises for the
        database: the next pass decides again."""
        try:
            record_streak(engine, source, self.settings.failing_passes, self._clock())
        except StorageError as exc:
            log.warning(
                "%s: could not decide notifications after a failed pass: %s",
                source,
                exc,
                extra=fields(event="notify_error", source=source),
            )

    # -- delivering -------------------------------------------------------------------------

    def deliver_alone(self, engine: Engine, cancel: threading.Event | None = None) -> None:
        """``deliver``, unless another process is delivering right now (it sends what is due),
        or the database is being upgraded or pruned (the next run delivers)."""
        try:
            with source_locks(engine, [NOTIFY_LOCK]) as locks:
                if locks.held:
                    self.deliver(engine, cancel)
        except LockedError:
            pass
        except StorageError as exc:
            log.warning("could not deliver notifications: %s", exc)

    def deliver(self, engine: Engine, cancel: threading.Event | None = None) -> Delivery:
        """Send what is due to every target that does not have it yet; mark what arrived.

        A target that fails is not tried again in the same round: a target that is down costs
        one timeout per pass, not one per message. ``cancel`` stops the round between two
        messages. Database errors are logged, not raised: what was not marked is sent again
        next time.
        """
        try:
            with storage_errors(engine):
                return self._deliver(engine, cancel)
        except StorageError as exc:
            log.warning(
                "could not deliver notifications: %s", exc, extra=fields(event="notify_error")
            )
            return Delivery()

    def _deliver(self, engine: Engine, cancel: threading.Event | None) -> Delivery:
        with engine.begin() as conn:
            due = load_due(conn, MAX_ATTEMPTS)
            count_attempt(conn, [d.id for d in due])
        if not due:
            return Delivery()
        everyone = frozenset(t.fingerprint for t in self._targets)
        have = {d.id: set(d.delivered_to) for d in due}
        sent = failed = 0
        for target in self._targets:
            batches = self._batches([d for d in due if target.fingerprint not in d.delivered_to])
            for number, batch in enumerate(batches):
                if cancel is not None and cancel.is_set():
                    return Delivery(sent, failed, sum(everyone <= have[d.id] for d in due))
                events = [d.event for d in batch]
                msg = message(events[0]) if len(events) == 1 else digest(events[0].source, events)
                error = target.send(msg)
                if error is None:
                    sent += 1
                    for d in batch:
                        have[d.id].add(target.fingerprint)
                    with engine.begin() as conn:
                        record_delivery(
                            conn,
                            [
                                (
                                    d.id,
                                    frozenset(have[d.id]),
                                    self._clock() if everyone <= have[d.id] else None,
                                )
                                for d in batch
                            ],
                        )
                    log.info(
                        "notified %s: %s",
                        target.origin,
                        msg.title,
                        extra=fields(event="notified", target=target.origin, events=len(batch)),
                    )
                    continue
                failed += 1
                untried = [d for later in batches[number + 1 :] for d in later]
                with engine.begin() as conn:
                    record_failure(conn, [d.id for d in batch], f"{target.origin}: {error}")
                    record_failure(
                        conn,
                        [d.id for d in untried],
                        f"{target.origin}: not tried after a failure: {error}",
                    )
                self._log_failure(target.origin, [*batch, *untried], error)
                break  # the next target
        return Delivery(sent, failed, sum(everyone <= have[d.id] for d in due))

    def _batches(self, due: Sequence[Due]) -> list[list[Due]]:
        """Per source, in order: one batch per event, or one digest when there are many."""
        by_source: dict[str, list[Due]] = {}
        for d in due:
            by_source.setdefault(d.event.source, []).append(d)
        batches: list[list[Due]] = []
        for group in by_source.values():
            if len(group) > self.settings.digest_after:
                batches.append(group)
            else:
                batches += [[d] for d in group]
        return batches

    def _log_failure(self, origin: str, batch: Sequence[Due], error: str) -> None:
        attempt = max(d.attempts for d in batch) + 1
        then = (
            "giving up"
            if attempt >= MAX_ATTEMPTS
            else f"will retry on the next pass (attempt {attempt} of {MAX_ATTEMPTS})"
        )
        log.warning(
            "could not notify %s of %d event(s): %s; %s",
            origin,
            len(batch),
            error,
            then,
            extra=fields(event="notify_failed", target=origin, events=len(batch), error=error),
        )

    # -- trying the targets -----------------------------------------------------------------

    def send_trial(self) -> list[TargetResult]:
        """Send one test message to every target (``jobsync notify test``)."""
        return [
            TargetResult(t.origin, t.service, t.send(trial_message(t.origin)))
            for t in self._targets
        ]
