"""The ``jobsync`` command line: parse, make one library call, print.

The ``cli*`` modules are the only code that reads the environment (through click's
``envvar=``) and configures logging; ``cli_common.JobsyncGroup`` is the one place where
jobsync's errors become ``Error: ...`` lines and exit codes. ``report`` lives in ``cli_report``,
``simulate`` and ``demo`` in ``cli_demo``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from jobsync import __version__
from jobsync.cli_common import (
    ExitError,
    F,
    JobsyncGroup,
    cluster_option,
    config_option,
    configure_logging,
    db_option,
    format_option,
    open_db,
    parse_duration,
    read_db,
    settings_from,
)
from jobsync.cli_demo import demo, simulate
from jobsync.cli_report import report
from jobsync.config import Settings, split_ids
from jobsync.errors import ConfigError
from jobsync.logs import LOG_FORMATS
from jobsync.output import escape_control, render
from jobsync.redact import redact

log = logging.getLogger("jobsync")


@click.group(cls=JobsyncGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="jobsync")
@click.option("--debug", is_flag=True, help="Log every request and show tracebacks.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Keep a durable, queryable history of Zilliz Cloud and Milvus import jobs."""
    ctx.obj = {"debug": debug}
    configure_logging(debug, quiet=True)


@cli.group(cls=JobsyncGroup)
def db() -> None:
    """Create, migrate and inspect the database schema."""


@db.command("upgrade")
@db_option
@config_option
def db_upgrade(database_url: str | None, config_file: str | None) -> None:
    """Create the schema or migrate it to the latest revision.

    Example: jobsync db upgrade --db postgresql://jobsync@db/jobsync
    """
    from jobsync.migrate import upgrade
    from jobsync.store import storage_errors

    settings = settings_from(database_url=database_url, config_file=config_file)
    with storage_errors(settings.database_url):
        before, after = upgrade(open_db(settings))
    if before == after:
        click.echo(f"schema already at revision {after}")
    else:
        click.echo(f"schema upgraded from {before or 'empty'} to {after}")


@db.command("current")
@db_option
@config_option
def db_current(database_url: str | None, config_file: str | None) -> None:
    """Print the schema revision of the database and whether it is the latest.

    Example: jobsync db current --db sqlite:///jobsync.db
    """
    from jobsync.migrate import current_revision, head_revision, is_known_revision
    from jobsync.store import missing_sqlite_file, storage_errors

    settings = settings_from(database_url=database_url, config_file=config_file)
    current = None
    if not missing_sqlite_file(settings.database_url):
        with storage_errors(settings.database_url):
            current = current_revision(open_db(settings, readonly=True))
    head = head_revision()
    if current is None:
        click.echo(f"no schema (latest is {head}): run `jobsync db upgrade`")
    elif current == head:
        click.echo(f"{current} (head)")
    elif not is_known_revision(current):
        click.echo(
            f"{current} (unknown to this version of jobsync, whose latest is {head}: "
            "the database was written by a newer jobsync; upgrade jobsync)"
        )
    else:
        click.echo(f"{current} (latest is {head}: run `jobsync db upgrade`)")


@db.command("datasette-metadata")
@db_option
@config_option
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    help="Write the JSON to this file [default: stdout].",
)
def db_datasette_metadata(database_url: str | None, config_file: str | None, output: str) -> None:
    """Write a Datasette metadata.json describing every table, view and column of the SQLite file.

    Example: jobsync db datasette-metadata -o metadata.json && datasette jobsync.db -m metadata.json
    """
    import json

    from jobsync.datasette import datasette_database_name, datasette_metadata

    settings = settings_from(database_url=database_url, config_file=config_file)
    document = datasette_metadata(datasette_database_name(settings.database_url))
    with click.open_file(output, "w", encoding="utf-8") as out:
        out.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def source_options(f: F) -> F:
    """Where to sync from and to: the options ``sync`` and ``daemon`` share."""
    for option in reversed(
        (
            db_option,
            config_option,
            cluster_option,
            click.option(
                "--base-url",
                envvar="JOBSYNC_BASE_URL",
                show_envvar=True,
                help="API root [default: https://api.cloud.zilliz.com].",
            ),
            click.option(
                "--api-key-file",
                envvar="JOBSYNC_API_KEY_FILE",
                show_envvar=True,
                type=click.Path(dir_okay=False),
                help="File holding the API key (mode 600; a UTF-8 BOM and trailing newline "
                "are ignored). Or set JOBSYNC_API_KEY.",
            ),
            click.option(
                "--page-size",
                envvar="JOBSYNC_PAGE_SIZE",
                show_envvar=True,
                type=click.IntRange(1, 100),
                help="Jobs per page, 1 to 100 [default: 100].",
            ),
            click.option(
                "--details/--no-details",
                default=None,
                envvar="JOBSYNC_DETAILS",
                show_envvar=True,
                help="Fetch progress details of open and finishing jobs [default: on].",
            ),
            click.option(
                "--details-max-per-pass",
                envvar="JOBSYNC_DETAILS_MAX_PER_PASS",
                show_envvar=True,
                type=click.IntRange(1, 10_000),
                help="Ask about at most this many jobs per source per pass [default: 200].",
            ),
            click.option(
                "--details-max-per-run",
                envvar="JOBSYNC_DETAILS_MAX_PER_RUN",
                show_envvar=True,
                type=click.IntRange(1, 100_000),
                help="Ask about at most this many jobs in one run, shared evenly by the "
                "sources (at least one each) [default: 400].",
            ),
            click.option(
                "--details-concurrency",
                envvar="JOBSYNC_DETAILS_CONCURRENCY",
                show_envvar=True,
                type=click.IntRange(1, 16),
                help="Progress requests in flight at once per source [default: 4].",
            ),
        )
    ):
        f = option(f)
    return f


def _syncsettings_from(values: dict[str, Any]) -> Settings:
    """Settings for a command that syncs: at least one source, and a key for each that needs one."""
    settings = settings_from(need_keys=True, **values)
    if not settings.sources:
        raise ConfigError(
            "nothing to sync: give --cluster-id, set JOBSYNC_CLUSTER_ID, or list sources in "
            "a config file (--config)"
        )
    for source in settings.sources:
        if source.kind == "zilliz" and source.api_key is None:
            raise ConfigError(
                f"source {source.name!r} has no API key: set JOBSYNC_API_KEY or use --api-key-file"
            )
    return settings


@cli.command()
@source_options
def sync(**values: Any) -> None:
    """Sync every configured source once, then exit (for cron).

    Exit status: 0 all synced, 1 a source failed, 2 usage or config error, 75 locked.

    Example: JOBSYNC_API_KEY=... jobsync sync --cluster-id in01-0123456789abcdef
    """
    from jobsync.migrate import ensure_schema
    from jobsync.store import storage_errors
    from jobsync.sync import sync_all

    settings = _syncsettings_from(values)
    engine = open_db(settings)
    with storage_errors(settings.database_url):
        ensure_schema(engine)
        results = sync_all(engine, settings)
    failed = [r for r in results if not r.ok]
    for result in results:
        if result.ok:
            click.echo(escape_control(result.summary()))
        else:
            click.echo(f"Error: {escape_control(redact(result.summary()))}", err=True)
    if failed:
        sys.exit(1)


@cli.command()
@source_options
@click.option(
    "--every",
    metavar="DURATION",
    callback=parse_duration,
    help="Run a pass this often: 30s, 5m, 1h (0.5s works).",
)
@click.option(
    "--cron", "cron_expr", metavar="EXPR", help="Run passes on a crontab schedule in UTC."
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help="Serve /metrics and /healthz on this port (0: any free port) [default: off].",
)
@click.option(
    "--metrics-host", default="127.0.0.1", show_default=True, help="Address for --metrics-port."
)
@click.option(
    "--unhealthy-after",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="/healthz says 503 after this many intervals without a successful pass.",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="text",
    show_default=True,
    envvar="JOBSYNC_LOG_FORMAT",
    show_envvar=True,
    help="json: one JSON object per line, for log shippers.",
)
@click.pass_context
def daemon(
    ctx: click.Context,
    /,
    every: float | None,
    cron_expr: str | None,
    metrics_port: int | None,
    metrics_host: str,
    unhealthy_after: int,
    log_format: str,
    **values: Any,
) -> None:
    """Sync on a schedule until SIGTERM or SIGINT, logging one line per pass per source.

    Exit status: 0 when stopped by a signal, 1 failure at start-up, 2 usage or config error.

    Example: JOBSYNC_API_KEY=... jobsync daemon --every 60s --cluster-id in01-0123456789abcdef
    """
    if (every is None) == (cron_expr is None):
        raise click.UsageError("give exactly one of --every and --cron")
    # Before the import: importing Alembic and APScheduler logs, in the chosen format too.
    configure_logging(bool(ctx.obj and ctx.obj.get("debug")), log_format=log_format)
    from jobsync import daemon as d
    from jobsync.memory import keep_large_blocks_unmapped

    keep_large_blocks_unmapped()  # one process runs every pass: see jobsync.memory

    settings = _syncsettings_from(values)
    schedule = d.every(every) if every is not None else d.cron(str(cron_expr))
    options = d.DaemonOptions(
        metrics_host=metrics_host, metrics_port=metrics_port, unhealthy_after=unhealthy_after
    )
    d.run_daemon(open_db(settings), settings, schedule, options)


@cli.command()
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
    from jobsync.status import source_status

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


@cli.command()
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
    from jobsync.queries import list_jobs

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


@cli.command()
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
    from jobsync.queries import job_history

    settings = settings_from(database_url=database_url, config_file=config_file)
    rows = read_db(
        settings, lambda engine: job_history(engine, job_id, cluster_ids=split_ids(cluster_ids))
    )
    if not rows:
        _fail(f"no job {job_id!r} in {redact(settings.database_url)}", 1)
    click.echo(render(rows, fmt))


def _fail(message: str, code: int) -> NoReturn:
    raise ExitError(message, code)


def main() -> None:
    cli(prog_name="jobsync")


cli.add_command(report)
cli.add_command(simulate)
cli.add_command(demo)
