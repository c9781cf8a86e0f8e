"""``jobsync db``: create, migrate and inspect the database schema."""

from __future__ import annotations

import click

from jobsync.cli.common import JobsyncGroup, config_option, db_option, open_db, settings_from


@click.group(cls=JobsyncGroup)
def db() -> None:
    """Create, migrate and inspect the database schema."""


@db.command("upgrade")
@db_option
@config_option
def db_upgrade(database_url: str | None, config_file: str | None) -> None:
    """Create the schema or migrate it to the latest revision.

    Example: jobsync db upgrade --db postgresql://jobsync@db/jobsync
    """
    from jobsync.storage.migrate import upgrade

    settings = settings_from(database_url=database_url, config_file=config_file)
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
    from jobsync.storage.migrate import current_revision, head_revision, is_known_revision
    from jobsync.storage.store import missing_sqlite_file

    settings = settings_from(database_url=database_url, config_file=config_file)
    current = None
    if not missing_sqlite_file(settings.database_url):
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


def _keep_window(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """``--keep``: a window longer than zero (``30d``, ``12h``, ``2w``), else a usage error."""
    from jobsync.config import parse_window

    if value is None:
        return None
    try:
        return parse_window(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@db.command("prune")
@click.option(
    "--keep",
    metavar="DURATION",
    callback=_keep_window,
    help="Keep this much history, e.g. 30d, 12h or 2w [default: the config file's retention, 90d].",
)
@click.option("--dry-run", is_flag=True, help="Count what would be removed, and remove nothing.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help="Passes per transaction [default: 500]: smaller batches hold each source's write lock "
    "for less time.",
)
@db_option
@config_option
def db_prune(
    keep: float | None,
    dry_run: bool,
    batch_size: int | None,
    database_url: str | None,
    config_file: str | None,
) -> None:
    """Remove old passes that recorded nothing (rolled up per source and day first) and thin
    old progress samples; jobs and transitions are kept.

    Example: jobsync db prune --keep 30d
    """
    from jobsync.service.retention import prune_database
    from jobsync.storage.boundary import storage_errors
    from jobsync.storage.migrate import require_current_schema

    settings = settings_from(database_url=database_url, config_file=config_file)
    window = keep if keep is not None else settings.retention
    if window is None:
        click.echo("retention is never: nothing pruned")
        return
    open_db(settings, readonly=True).dispose()  # refuses a SQLite file that is not there
    engine = open_db(settings)  # a dry run writes too, and rolls every batch back
    try:
        with storage_errors(settings.database_url):
            require_current_schema(engine, needs="db prune needs")
        result = prune_database(engine, window, dry_run=dry_run, batch_size=batch_size)
    finally:
        engine.dispose()
    verb = "would remove" if dry_run else "removed"
    click.echo(
        f"{verb} {result.runs} pass(es) started before "
        f"{result.cutoff.isoformat(timespec='seconds')} (rolled up into {result.days} "
        f"source-day row(s) of sync_run_days) and {result.samples} progress sample(s)"
    )


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

    from jobsync.reporting.datasette import datasette_database_name, datasette_metadata

    settings = settings_from(database_url=database_url, config_file=config_file)
    document = datasette_metadata(datasette_database_name(settings.database_url))
    with click.open_file(output, "w", encoding="utf-8") as out:
        out.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
