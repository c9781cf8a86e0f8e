"""``jobsync status``, ``jobsync jobs`` and ``jobsync history``: read what passes stored."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn

import click

from jobsync.cli.common import (
    ExitError,
    cluster_option,
    config_option,
    db_option,
    format_option,
    parse_duration,
    read_db,
    settings_from,
)
from jobsync.config import split_ids
from jobsync.observability.redact import redact
from jobsync.reporting.output import render


@click.command()
@db_option
@config_option
@click.option(
    "--overdue-after",
    metavar="DURATION",
    callback=parse_duration,
    default="15m",
    show_default=True,
    help="A source is overdue when its last successful pass is older than this.",
)
@format_option
def status(
    database_url: str | None, config_file: str | None, overdue_after: float, fmt: str
) -> None:
    """Show each source's last pass, its outcome and age; exit 1 if any source is overdue.

    Example: jobsync status --overdue-after 15m
    """
    from jobsync.reporting.status import source_status

    settings = settings_from(database_url=database_url, config_file=config_file)
    configured = [s.key for s in settings.sources]
    rows = read_db(
        settings,
        lambda engine: source_status(engine, overdue_after=overdue_after, sources=configured),
    )
    if not rows:
        _fail(f"no sync passes recorded in {redact(settings.database_url)} yet", 1)
    click.echo(render(rows, fmt))
    if any(row["overdue"] for row in rows):
        sys.exit(1)


@click.command()
@db_option
@config_option
@cluster_option
@click.option("--state", "states", multiple=True, help="Only jobs in this state (repeatable).")
@click.option("--collection", "collections", multiple=True, help="Only this collection.")
@click.option("--limit", type=click.IntRange(min=1), help="Show at most this many jobs.")
@format_option
def jobs(
    database_url: str | None,
    config_file: str | None,
    cluster_ids: Sequence[str],
    states: Sequence[str],
    collections: Sequence[str],
    limit: int | None,
    fmt: str,
) -> None:
    """List current jobs, newest first.

    Example: jobsync jobs --state Failed --format csv
    """
    from jobsync.reporting.queries import list_jobs

    settings = settings_from(database_url=database_url, config_file=config_file)
    rows = read_db(
        settings,
        lambda engine: list_jobs(
            engine,
            cluster_ids=split_ids(cluster_ids),
            states=states,
            collections=collections,
            limit=limit,
        ),
    )
    click.echo(render(rows, fmt))


@click.command()
@click.argument("job_id")
@db_option
@config_option
@cluster_option
@format_option
def history(
    job_id: str,
    database_url: str | None,
    config_file: str | None,
    cluster_ids: Sequence[str],
    fmt: str,
) -> None:
    """Show a job's transitions; each change happened in (window_start, observed_at].

    Example: jobsync history 448761313698322011
    """
    from jobsync.reporting.queries import job_history

    settings = settings_from(database_url=database_url, config_file=config_file)
    rows = read_db(
        settings, lambda engine: job_history(engine, job_id, cluster_ids=split_ids(cluster_ids))
    )
    if not rows:
        _fail(f"no job {job_id!r} in {redact(settings.database_url)}", 1)
    click.echo(render(rows, fmt))


def _fail(message: str, code: int) -> NoReturn:
    raise ExitError(message, code)
