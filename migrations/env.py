"""Alembic environment for jobsync.

`jobsync db upgrade` passes an open connection in ``config.attributes["connection"]`` (see
``jobsync/storage/migrate.py``), so the password never goes through ConfigParser and the app's
logging is left alone. Developers running ``alembic`` directly get the URL from ``-x url=...`` or
alembic.ini.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from jobsync.storage.schema import metadata

config = context.config


def run_with(connection: object) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,  # SQLite can only ALTER by copying the table
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_with(connection)
        return
    if config.config_file_name is not None and not config.attributes.get("no_logging"):
        from logging.config import fileConfig

        fileConfig(config.config_file_name)
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    from jobsync.storage.store import normalise_url

    engine = create_engine(normalise_url(url))
    with engine.connect() as conn:
        run_with(conn)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
main()
