"""Rewrite jobsync/storage/backends/sqlite_schema.py: the SQLite schema the revisions make.

It runs every revision on an empty SQLite file and writes down the statements that create what
they made, in the order SQLite keeps them (a view after what it reads). A new SQLite database
is created from that script in one go (``Backend.create_head_schema``) instead of by running
the revisions; tests/storage/test_schema_script.py keeps the two equal.

python scripts/sqlite_schema.py           # rewrite the module
python scripts/sqlite_schema.py --check   # exit 1 if the module is not what it would write
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from generated import rewrite_or_check

from jobsync.storage.schema_script import render_sqlite_schema

MODULE = (
    Path(__file__).resolve().parents[1] / "jobsync" / "storage" / "backends" / "sqlite_schema.py"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check, change nothing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        fresh = render_sqlite_schema(Path(scratch) / "schema.db")
    return rewrite_or_check(
        MODULE, fresh, check=args.check, command="python scripts/sqlite_schema.py"
    )


if __name__ == "__main__":
    sys.exit(main())
