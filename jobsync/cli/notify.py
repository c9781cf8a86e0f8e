"""``jobsync notify``: check that notifications reach their targets."""

from __future__ import annotations

import sys

import click

from jobsync.cli.common import JobsyncGroup, config_option, notify_option, settings_from
from jobsync.observability.text import escape_control


@click.group(cls=JobsyncGroup)
def notify() -> None:
    """Notification targets: send a test message."""


@notify.command("test")
@config_option
@notify_option
def notify_test(config_file: str | None, notify_urls: tuple[str, ...]) -> None:
    """Send one test message to every notification target; exit 1 if one was not delivered.

    Example: JOBSYNC_NOTIFY_SLACK=slack://... jobsync notify test --config jobsync.toml
    """
    from jobsync.service.notify import Notifier

    settings = settings_from(config_file=config_file, notify_urls=notify_urls, need_notify=True)
    results = Notifier(settings.notify).send_trial()
    for result in results:
        outcome = "delivered" if result.ok else f"failed: {result.error}"
        click.echo(escape_control(f"{result.origin} ({result.service}): {outcome}"))
    if not all(result.ok for result in results):
        sys.exit(1)
