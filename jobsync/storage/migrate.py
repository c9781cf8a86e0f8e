"""Schema migrations, run from code with Alembic.

The Alembic ``Config`` is built here rather than read from alembic.ini, so the application's
logging is left alone and the database password never passes through ConfigParser. The
revisions live in the repository's top-level ``migrations/`` folder; the wheel carries a copy
inside the package (``jobsync/migrations``), which is where an installed jobsync finds them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

if TYPE_CHECKING:
    from alembic.config import Config

from jobsync.errors import SchemaError
from jobsync.observability.redact import redact
from jobsync.storage.backends import backend_for
from jobsync.storage.boundary import boundary
from jobsync.storage.dictionary import comments
from jobsync.storage.locking import maintenance_lock
from jobsync.storage.revision import HEAD_REVISION

__all__ = [
    "HEAD_REVISION",
    "UPGRADE_WAIT",
    "alembic_config",
    "current_revision",
    "ensure_schema",
    "head_revision",
    "is_known_revision",
    "migrations_dir",
    "require_current_schema",
    "upgrade",
]


def migrations_dir() -> Path:
    """Where the revisions are: inside the installed package, else the source checkout."""
    package_dir = Path(__file__).resolve().parents[1]  # jobsync/, above storage/
    for candidate in (package_dir / "migrations", package_dir.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise SchemaError("jobsync's migrations are missing from this installation")


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["no_logging"] = True
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The latest revision among the migration scripts on disk."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise SchemaError("jobsync's migrations have no head revision")
    return head


def is_known_revision(revision: str) -> bool:
    """Whether this jobsync has a migration script for ``revision`` (a newer one may not)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    return revision in {rev.revision for rev in script.walk_revisions()}


def _newer_than_this_jobsync(revision: str) -> SchemaError:
    return SchemaError(
        f"the database schema is at revision {revision}, which this version of jobsync "
        "does not know (it was written by a newer jobsync): upgrade jobsync"
    )


@boundary
def current_revision(engine: Engine) -> str | None:
    """The database's revision, or None for a database jobsync has never touched."""
    with engine.connect() as conn:
        return _revision(conn)


def _revision(conn: Connection) -> str | None:
    # What Alembic's MigrationContext.get_current_revision reads, without importing Alembic.
    if not inspect(conn).has_table("alembic_version"):
        return None
    rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    if len(rows) > 1:
        raise SchemaError(f"the database has {len(rows)} schema revisions, expected one")
    return rows[0] if rows else None


# How long ``upgrade`` waits for passes in flight to end before it gives up (LockedError).
UPGRADE_WAIT = 60.0


@boundary
def upgrade(
    engine: Engine, revision: str = "head", *, wait: float = UPGRADE_WAIT
) -> tuple[str | None, str]:
    """Migrate to ``revision`` (default: the latest); return the revisions before and after.

    Then describe the schema where the database keeps descriptions for tools (PostgreSQL's
    ``COMMENT ON``), from ``jobsync.storage.dictionary``, changing only what differs.

    Concurrent upgrades queue on a lock; the later ones find nothing to do. Migrating an
    existing schema also holds the database-wide lock exclusive (``maintenance_lock``): it
    waits up to ``wait`` seconds for passes in flight, and no pass starts until it is done.
    Creating the schema in an empty database needs no such lock: no pass can run there yet.
    """
    current = current_revision(engine)
    if current is None or (revision == "head" and current == HEAD_REVISION):
        return _upgrade(engine, revision)
    with maintenance_lock(engine, wait=wait):
        return _upgrade(engine, revision)


def _upgrade(engine: Engine, revision: str, *, adopt: bool = True) -> tuple[str | None, str]:
    """Migrate under the migrations' lock. ``adopt=False`` refuses tables of jobsync's found
    without a revision (read under the lock, where no other process is creating them)."""
    with engine.begin() as conn:
        backend = backend_for(conn)
        backend.lock_migrations(conn)
        before = _revision(conn)
        if before is None and not adopt:
            tables = set(inspect(conn).get_table_names())
            if tables & {"import_job_records", "import_job_transitions", "sync_runs"}:
                raise SchemaError(
                    "the database has jobsync tables but no schema revision; "
                    "run `jobsync db upgrade` to check and adopt it"
                )
        to_head = revision in ("head", HEAD_REVISION)
        if to_head and before == HEAD_REVISION:
            pass  # nothing to run (another process may just have created the schema)
        elif to_head and before is None and backend.create_head_schema(conn) is not None:
            # An empty database gets what the revisions would make from one script, where the
            # backend keeps one (SQLite: backends/sqlite_schema.py, which a test keeps equal
            # to the revisions' result), without importing Alembic and running every revision.
            pass
        else:
            _run_revisions(conn, before, revision)
        after = _revision(conn)
        # After every run, not in a revision: a change of wording needs no migration, and a
        # view that a revision recreated gets its descriptions back.
        backend.describe(conn, comments())
    return before, after or head_revision()


def _run_revisions(conn: Connection, before: str | None, revision: str) -> None:
    if before is not None and not is_known_revision(before):
        # Alembic would fail with "Can't locate revision": say what that means here.
        raise _newer_than_this_jobsync(before)
    from alembic import command
    from alembic.util import CommandError

    try:
        command.upgrade(alembic_config(conn), revision)
    except CommandError as exc:
        raise SchemaError(f"cannot migrate the schema: {redact(str(exc))}") from None


@boundary
def require_current_schema(engine: Engine, needs: str = "jobsync needs") -> None:
    """For reading: refuse, in one line, a database without the schema or at another revision.

    ``needs`` says who needs the schema, for the message ("reports need 0004").
    """
    current = current_revision(engine)
    if current == HEAD_REVISION:
        return
    where = redact(engine.url.render_as_string(hide_password=True))
    if current is None:
        raise SchemaError(f"{where} has no jobsync schema yet: run `jobsync sync` first")
    _refuse_revision(current, f"{where} is at schema revision {current}, {needs}")


@boundary
def ensure_schema(engine: Engine) -> None:
    """Create the schema in an empty database; refuse one whose schema is behind or foreign."""
    current = current_revision(engine)
    if current == HEAD_REVISION:
        return
    if current is None:
        # Looked at again under the migrations' lock: another process may have created the
        # schema since (two crontab lines on a new file), and then there is nothing to do.
        _upgrade(engine, "head", adopt=False)
        return
    _refuse_revision(
        current, f"the database schema is at revision {current} but this jobsync needs"
    )


def _refuse_revision(current: str, needs: str) -> None:
    """Raise for a revision other than the head: newer than this jobsync knows, or behind."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    if current == head:
        return  # HEAD_REVISION is stale; tests/storage/test_storage.py keeps it from landing so
    if not is_known_revision(current):
        raise _newer_than_this_jobsync(current)
    raise SchemaError(f"{needs} {head}: run `jobsync db upgrade` first")
