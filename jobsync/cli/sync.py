"""``jobsync sync`` and ``jobsync daemon``: one pass now, or passes on a schedule."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import click

from jobsync.cli.common import (
    F,
    cluster_option,
    config_option,
    configure_logging,
    db_option,
    env_option,
    freeze_imports,
    notify_option,
    open_db,
    parse_duration,
    settings_from,
)
from jobsync.config import Settings
from jobsync.errors import ConfigError, LockedError
from jobsync.observability.logs import LOG_FORMATS
from jobsync.observability.redact import redact
from jobsync.observability.text import escape_control

log = logging.getLogger(__name__)


def _count_option(flag: str, most: int, help: str) -> Callable[[F], F]:
    """``--some-count``: a whole number from 1 to ``most``, also set by ``JOBSYNC_SOME_COUNT``."""
    env = flag.removeprefix("--").replace("-", "_").upper()
    return env_option(flag, env=env, type=click.IntRange(1, most), help=help)


def _positive(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """Option callback: a positive, finite number, or one ``Error:`` line and exit 2."""
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not 0 < number < float("inf"):
        raise ConfigError(
            f"--requests-per-second (or JOBSYNC_REQUESTS_PER_SECOND) must be a positive number, "
            f"not {value!r:.40}"
        )
    return number


def source_options(f: F) -> F:
    """Where to sync from and to: the options ``sync`` and ``daemon`` share."""
    for option in reversed(
        (
            db_option,
            config_option,
            cluster_option,
            notify_option,
            env_option(
                "--base-url",
                env="BASE_URL",
                help="API root [default: https://api.cloud.zilliz.com].",
            ),
            env_option(
                "--api-key-file",
                env="API_KEY_FILE",
                type=click.Path(dir_okay=False),
                help="File holding the API key (mode 600; a UTF-8 BOM and trailing newline "
                "are ignored). Or set JOBSYNC_API_KEY.",
            ),
            _count_option("--page-size", 100, "Jobs per page, 1 to 100 [default: 100]."),
            env_option(
                "--details/--no-details",
                default=None,
                env="DETAILS",
                help="Fetch progress details of open and finishing jobs [default: on].",
            ),
            _count_option(
                "--details-max-per-pass",
                10_000,
                "Ask about at most this many jobs per source per pass [default: 200].",
            ),
            _count_option(
                "--details-max-per-run",
                100_000,
                "Ask about at most this many jobs in one run, shared evenly by the sources "
                "(at least one each) [default: 400].",
            ),
            _count_option(
                "--details-concurrency",
                16,
                "Progress requests in flight at once per source [default: 4].",
            ),
            env_option(
                "--details-interval",
                env="DETAILS_INTERVAL",
                metavar="DURATION",
                callback=parse_duration,
                help="Ask about an open job whose figures did not move again only after this "
                "long: 30s, 5m, 1h [default: 5m].",
            ),
            env_option(
                "--requests-per-second",
                env="REQUESTS_PER_SECOND",
                callback=_positive,
                metavar="RATE",
                help="Requests per second per API key and endpoint, for every source "
                "[default: 20, Zilliz Cloud's limit; or the config file's].",
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


_log_format_option = env_option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="text",
    show_default=True,
    env="LOG_FORMAT",
    help="json: one JSON object per line, for log shippers.",
)


@click.command()
@source_options
@_log_format_option
@click.pass_context
def sync(ctx: click.Context, /, log_format: str, **values: Any) -> None:
    """Sync every configured source once, then exit (for cron).

    With --log-format json, each source's line is a JSON object on stderr, as the daemon
    writes it, instead of a line of text.

    Exit status: 0 all synced, 1 a source failed, 2 usage or config error, 75 locked.

    Example: JOBSYNC_API_KEY=... jobsync sync --cluster-id in01-0123456789abcdef
    """
    from jobsync.service.early import begin_walks
    from jobsync.service.memory import keep_large_blocks_unmapped

    keep_large_blocks_unmapped()  # large blocks freed before the write go back: see the module
    if log_format == "json":
        configure_logging(bool(ctx.obj and ctx.obj.get("debug")), log_format=log_format)
    settings = _syncsettings_from(values)
    # The first list walks start now, under their sources' locks, while SQLAlchemy and the
    # database load (SQLite only; see jobsync.service.early).
    early = begin_walks(settings)
    try:
        from jobsync.service.sync import sync_all
        from jobsync.storage.migrate import ensure_schema

        freeze_imports()
        engine = open_db(settings)
        try:
            ensure_schema(engine)
            results = sync_all(engine, settings, early=early)
        finally:
            engine.dispose()
    except BaseException:
        early.close(wait=False)  # an interrupt must not wait for a walk's backoff
        raise
    early.close()
    failed = [r for r in results if not r.ok]
    for result in results:
        if log_format == "json":
            from jobsync.service.passlog import log_pass

            log_pass(log, result)
        elif result.ok:
            click.echo(escape_control(result.summary()))
        else:
            click.echo(f"Error: {escape_control(redact(result.summary()))}", err=True)
    if failed:
        # 75 only when every pass that did not write was superseded by another process's.
        superseded = all(isinstance(r.error, LockedError) for r in failed)
        sys.exit(LockedError.exit_code if superseded else 1)


@click.command()
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
@_log_format_option
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

    --every/--cron is the schedule of the sources without 'every' or 'cron' of their own in
    the config file. Several daemons may share a PostgreSQL database (each source is synced
    once per period); on SQLite a second one is refused.

    Exit status: 0 when stopped by a signal, 1 failure at start-up, 2 usage or config error,
    75 another daemon runs on the same SQLite file.

    Example: JOBSYNC_API_KEY=... jobsync daemon --every 60s --cluster-id in01-0123456789abcdef
    """
    if every is not None and cron_expr is not None:
        raise click.UsageError("give exactly one of --every and --cron")
    # Before the import: importing Alembic and APScheduler logs, in the chosen format too.
    configure_logging(bool(ctx.obj and ctx.obj.get("debug")), log_format=log_format)
    from jobsync.service import daemon as d
    from jobsync.service.memory import keep_large_blocks_unmapped

    keep_large_blocks_unmapped()  # one process runs every pass: see jobsync.service.memory

    settings = _syncsettings_from(values)
    schedule = (
        d.every(every)
        if every is not None
        else d.cron(cron_expr)
        if cron_expr is not None
        else None
    )
    if schedule is None and any(s.every is None and s.cron is None for s in settings.sources):
        raise click.UsageError(
            "give exactly one of --every and --cron (sources with 'every' or 'cron' of their "
            "own in the config file need neither)"
        )
    options = d.DaemonOptions(
        metrics_host=metrics_host, metrics_port=metrics_port, unhealthy_after=unhealthy_after
    )
    d.run_daemon(open_db(settings), settings, schedule, options)
