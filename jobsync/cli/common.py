"""What every ``jobsync`` command shares: options, error translation, settings, logging.

Only the CLI modules import this; it is the one place where jobsync's errors become
``Error: ...`` lines and exit codes.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from jobsync.config import CliValues, Settings, duration_seconds, resolve_settings
from jobsync.errors import JobsyncError, SchemaError
from jobsync.observability.logs import JsonFormatter, TextFormatter
from jobsync.observability.redact import redact
from jobsync.observability.text import escape_control
from jobsync.reporting.output import FORMATS

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


# New objects between two collections of the youngest generation (Python's default is 700).
GC_THRESHOLD = 50_000
# Whether the command runs in a process of its own (``own_process``).
_owns_process = False


def own_process() -> None:
    """Called by the console script: the command runs in a process of its own, which ends with
    it (not inside a test runner or a caller's program). A command allocates in bulk (a pass
    keeps a record per listed job) and makes few reference cycles: collecting after every 700
    new objects, as by default, would walk the same young objects hundreds of times in a pass
    over 100,000 jobs."""
    global _owns_process
    _owns_process = True
    gc.set_threshold(GC_THRESHOLD)


def freeze_imports() -> None:
    """In a process of its own, move what the imports made out of the garbage collector's
    reach: it lives as long as the process, and a pass over many jobs triggers full
    collections that would walk it every time (tens of thousands of SQLAlchemy objects)."""
    if _owns_process:
        gc.freeze()


class ExitError(click.ClickException):
    """A ClickException whose exit code is the JobsyncError's (click fixes it per class)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code

    @property
    def exit_code(self) -> int:  # type: ignore[override]
        return self.code

    def show(self, file: Any = None) -> None:
        click.echo(f"Error: {escape_control(self.format_message())}", err=True)


class JobsyncGroup(click.Group):
    """Turns every JobsyncError into one ``Error:`` line and its exit code (``--debug``: raise),
    and click's usage errors into one line too (click's own are three: usage, hint, error)."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise _one_line(exc) from None
        except JobsyncError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            raise ExitError(redact(str(exc)), exc.exit_code) from None


# A group called without its command shows its help (click 8.2 on): that stays as it is.
_SHOWS_HELP: Any = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _one_line(exc: click.UsageError) -> click.ClickException:
    """A usage error as one line that names where help is, exit status 2."""
    if isinstance(exc, _SHOWS_HELP):
        shown: click.ClickException = exc
        return shown
    where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
    return ExitError(f"{exc.format_message()}{where}", exc.exit_code)


def configure_logging(debug: bool, quiet: bool = False, log_format: str = "text") -> None:
    level = logging.DEBUG if debug else (logging.WARNING if quiet else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    logging.getLogger("jobsync").setLevel(level)
    # urllib3 warns about every retry; jobsync counts retries and reports them per pass, so
    # those lines are noise unless --debug asks for everything.
    logging.getLogger("urllib3").setLevel(logging.DEBUG if debug else logging.ERROR)
    # Apprise's own lines only with --debug: jobsync logs each failed notification once, with
    # what Apprise said (jobsync.service.notify).
    logging.getLogger("apprise").propagate = debug
    if log_format == "json":
        # Python's warnings go to stderr on their own; through logging they keep the format,
        # so a log shipper reading JSON lines never meets a bare line.
        logging.captureWarnings(True)


def env_option(*decls: str, env: str, **attrs: Any) -> Callable[[F], F]:
    """A click option that the variable ``JOBSYNC_<env>`` can also set, shown in ``--help``."""
    return click.option(*decls, envvar=f"JOBSYNC_{env}", show_envvar=True, **attrs)


db_option = env_option(
    "--db",
    "database_url",
    env="DATABASE_URL",
    metavar="URL",
    help="SQLAlchemy database URL [default: sqlite:///jobsync.db].",
)
config_option = env_option(
    "--config",
    "config_file",
    env="CONFIG",
    type=click.Path(dir_okay=False),
    help="TOML file with sources [default: ./jobsync.toml if present].",
)
cluster_option = env_option(
    "--cluster-id",
    "cluster_ids",
    multiple=True,
    env="CLUSTER_ID",
    help="Cluster to sync or show (repeatable; comma-separated in the variable).",
)


def format_option(f: F) -> F:
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default="table",
        show_default=True,
        help="Output format.",
    )(f)


def parse_duration(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """Option callback: ``30s``, ``5m``, ``1h``, ``1h30m``, ``0.5s``, ``2d`` -> seconds."""
    if value is None:
        return None
    seconds = duration_seconds(value)
    if seconds is None:
        raise click.BadParameter(f"{value!r} is not a duration: write e.g. 30s, 5m, 1h or 1h30m")
    if seconds <= 0:
        raise click.BadParameter(f"{value!r} must be longer than zero")
    return seconds


def settings_from(
    *, need_keys: bool = False, need_notify: bool | None = None, **values: Any
) -> Settings:
    cluster_ids: Sequence[str] = values.pop("cluster_ids", ()) or ()
    return resolve_settings(
        CliValues(cluster_ids=tuple(cluster_ids), **values),
        os.environ,
        need_keys=need_keys,
        need_notify=need_notify,
    )


notify_option = env_option(
    "--notify",
    "notify_urls",
    multiple=True,
    metavar="URL",
    env="NOTIFY_URL",
    help="Also send notifications to this Apprise URL (repeatable; space-separated in the "
    "variable). A URL on the command line can be read by other users in the process "
    "list: prefer JOBSYNC_NOTIFY_URL, or [notify] in the config file.",
)


def open_db(settings: Settings, *, readonly: bool = False) -> Any:
    """The engine for a command; a reading command refuses a SQLite file that is not there
    (connecting would leave an empty one behind, under a name that was probably a typo)."""
    from jobsync.storage.store import missing_sqlite_file, open_engine

    if readonly and missing_sqlite_file(settings.database_url):
        raise SchemaError(
            f"{redact(settings.database_url)} has no jobsync schema yet "
            "(there is no such file): run `jobsync sync` first"
        )
    return open_engine(settings.database_url, readonly=readonly)


def read_db(settings: Settings, query: Callable[[Any], T], *, needs: str = "jobsync needs") -> T:
    """Open the database read-only, refuse a missing or other schema, run one query.

    ``needs`` says who needs the schema, for the refusal ("reports need 0004").
    """
    from jobsync.storage.boundary import storage_errors
    from jobsync.storage.migrate import require_current_schema

    engine = open_db(settings, readonly=True)
    try:
        with storage_errors(settings.database_url):
            require_current_schema(engine, needs=needs)
            return query(engine)
    finally:
        engine.dispose()
