"""A new SQLite database is created from one script (``backends/sqlite_schema.py``) rather than
by running every revision: the script must make exactly what the revisions make."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from jobsync.storage.backends.sqlite_schema import REVISION
from jobsync.storage.migrate import current_revision, head_revision, upgrade
from jobsync.storage.schema_script import render_sqlite_schema, schema_statements
from jobsync.storage.store import open_engine

MODULE = Path(__file__).resolve().parents[2] / "jobsync/storage/backends/sqlite_schema.py"


def test_the_script_is_what_the_revisions_make_now(tmp_path):
    fresh = render_sqlite_schema(tmp_path / "scratch.db")
    assert fresh == MODULE.read_text(encoding="utf-8"), (
        "jobsync/storage/backends/sqlite_schema.py is out of date: "
        "run python scripts/sqlite_schema.py"
    )
    assert head_revision() == REVISION


def test_a_new_database_made_from_the_script_equals_one_made_by_the_revisions(tmp_path):
    engine = open_engine(f"sqlite:///{tmp_path / 'new.db'}")
    assert upgrade(engine) == (None, head_revision())
    with engine.connect() as conn:
        made = schema_statements(conn)
    engine.dispose()

    # The same revisions, run one by one: to the one before the head, then the head.
    stepwise = open_engine(f"sqlite:///{tmp_path / 'stepwise.db'}")
    upgrade(stepwise, "0008")
    upgrade(stepwise)
    with stepwise.connect() as conn:
        migrated = schema_statements(conn)
    assert current_revision(stepwise) == head_revision()
    stepwise.dispose()

    assert made == migrated


_CREATE = """
import json, sys
from jobsync.storage.migrate import current_revision, ensure_schema
from jobsync.storage.store import open_engine
engine = open_engine(sys.argv[1])
ensure_schema(engine)
print(json.dumps({"revision": current_revision(engine), "alembic": "alembic" in sys.modules}))
"""


def test_a_first_sync_creates_its_schema_without_loading_alembic(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", _CREATE, f"sqlite:///{tmp_path / 'jobsync.db'}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(done.stdout) == {"revision": head_revision(), "alembic": False}
