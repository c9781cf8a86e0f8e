"""``jobsync report``: answers for people from the reporting views.

Each command parses its options, makes one call into :mod:`jobsync.reporting.report` (or
:mod:`jobsync.reporting.report_html`) and prints. "Now" comes from :data:`clock`, which tests
replace to pin the period and the time jobs have spent in their state.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from jobsync.cli.common import (
    F,
    JobsyncGroup,
    cluster_option,
    config_option,
    db_option,
    format_option,
    parse_duration,
    read_db,
    settings_from,
)
from jobsync.config import split_ids
from jobsync.domain.clock import utcnow
from jobsync.errors import ConfigError
from jobsync.reporting.output import render

T = TypeVar("T")

#: Where every report command reads "now" from.
clock: Callable[[], datetime] = utcnow

STUCK_EXIT = 3


def _read(database_url: str | None, config_file: str | None, query: Callable[[Any], T]) -> T:
    """Open the database read-only, check its schema, run one report."""
    settings = settings_from(database_url=database_url, config_file=config_file)
    return read_db(settings, query, needs="reports need")


def _report(
    query: Callable[..., list[dict[str, Any]]],
    columns: Sequence[str],
    filters: Mapping[str, Any],
    **values: Any,
) -> list[dict[str, Any]]:
    """Run one report over the jobs that ``filters`` (the options of :func:`_filters`) select,
    print it in their format, and return its rows."""
    from jobsync.reporting.report_text import for_people, people_columns

    rows = _read(
        filters["database_url"],
        filters["config_file"],
        lambda engine: query(
            engine,
            now=clock(),
            cluster_ids=split_ids(filters["cluster_ids"]),
            collections=filters["collections"],
            **values,
        ),
    )
    fmt = filters["fmt"]
    if fmt == "table":
        click.echo(render(for_people(rows), fmt, people_columns(columns)))
    else:
        click.echo(render(rows, fmt, columns))
    return rows


def _filters(f: F) -> F:
    """--db, --config, --cluster-id, --collection, --format: what every report takes."""
    f = format_option(f)
    f = _collection_option(f)
    f = cluster_option(f)
    f = config_option(f)
    return db_option(f)


def _collection_option(f: F) -> F:
    return click.option(
        "--collection", "collections", multiple=True, help="Only this collection (repeatable)."
    )(f)


def _duration_option(name: str, default: str, help: str) -> Callable[[F], F]:
    return click.option(
        name,
        metavar="DURATION",
        callback=parse_duration,
        default=default,
        show_default=True,
        help=help,
    )


_since_option = _duration_option(
    "--since", "7d", "The period: from this long before now (30m, 12h, 7d, 1d12h)."
)
_older_than_option = _duration_option(
    "--older-than", "2h", "A job is stuck when it has been in its state longer than this."
)


def _limit_option(help: str, default: int | None = None) -> Callable[[F], F]:
    """``--limit``: how many rows a report shows at most (a default, if any, in ``--help``)."""
    return click.option(
        "--limit", type=click.IntRange(min=1), default=default, show_default=True, help=help
    )


def _days_option(f: F) -> F:
    return click.option(
        "--days",
        type=click.IntRange(1, 3660),
        default=14,
        show_default=True,
        help="UTC days to show, today included.",
    )(f)


@click.group(cls=JobsyncGroup)
def report() -> None:
    """Summaries from the history: durations, failures, trends, stuck jobs, an HTML report."""


@report.command("summary")
@_filters
@_since_option
def summary_command(since: float, **filters: Any) -> None:
    """Per cluster and collection: jobs of the period by state, failure rate, p50/p90 duration.

    Example: jobsync report summary --since 7d
    """
    from jobsync.reporting import report as r

    _report(r.summary, r.SUMMARY_COLUMNS, filters, since=since)


@report.command("durations")
@_filters
@_since_option
@_limit_option("Show at most this many jobs.")
def durations_command(since: float, limit: int | None, **filters: Any) -> None:
    """Jobs finished in the period, newest first, with min, estimated and max duration.

    Example: jobsync report durations --collection products --since 1d --limit 20
    """
    from jobsync.reporting import report as r

    _report(r.durations, r.DURATIONS_COLUMNS, filters, since=since, limit=limit)


@report.command("failures")
@_filters
@_since_option
@_limit_option("Show this many reasons.", default=10)
def failures_command(since: float, limit: int, **filters: Any) -> None:
    """Top failure reasons of the period, with ids, numbers, paths and quotes ignored.

    Example: jobsync report failures --since 30d --limit 5
    """
    from jobsync.reporting import report as r

    _report(r.failures, r.FAILURES_COLUMNS, filters, since=since, limit=limit)


@report.command("trend")
@_filters
@_days_option
def trend_command(days: int, **filters: Any) -> None:
    """Per UTC day: jobs first seen, completed, failed, failure rate, p50/p90 duration.

    Example: jobsync report trend --days 14
    """
    from jobsync.reporting import report as r

    _report(r.trend, r.TREND_COLUMNS, filters, days=days)


@report.command("stuck")
@_filters
@_older_than_option
def stuck_command(older_than: float, **filters: Any) -> None:
    """Active jobs in their state longer than --older-than; exit status 3 if there are any.

    Example: jobsync report stuck --older-than 2h || echo "imports are stuck"
    """
    from jobsync.reporting import report as r

    if _report(r.stuck, r.STUCK_COLUMNS, filters, older_than=older_than):
        sys.exit(STUCK_EXIT)


@report.command("html")
@db_option
@config_option
@cluster_option
@_collection_option
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, allow_dash=True),
    default="report.html",
    show_default=True,
    help="File to write ('-': standard output).",
)
@_since_option
@_days_option
@_older_than_option
def html_command(
    database_url: str | None,
    config_file: str | None,
    cluster_ids: Sequence[str],
    collections: Sequence[str],
    output: str,
    since: float,
    days: int,
    older_than: float,
) -> None:
    """Write one self-contained HTML file (no network needed) with charts and tables.

    Example: jobsync report html -o report.html --since 7d --days 14
    """
    from jobsync.reporting.report_html import Options, build_html

    options = Options(
        since=since,
        days=days,
        older_than=older_than,
        now=clock(),
        cluster_ids=tuple(split_ids(cluster_ids)),
        collections=tuple(collections),
    )
    html = _read(database_url, config_file, lambda engine: build_html(engine, options))
    if output == "-":
        click.echo(html, nl=False)
        return
    try:
        Path(output).write_text(html, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {output}: {exc.strerror or exc}") from None
    click.echo(f"wrote {output} ({len(html.encode('utf-8')):,} bytes)")
