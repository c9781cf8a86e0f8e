"""The wheel carries the migrations: an installed (non-editable) jobsync can still migrate."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from jobsync.storage.migrate import head_revision

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_ships_migrations_and_can_migrate_outside_the_checkout(tmp_path):
    out = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(out.glob("jobsync-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "jobsync/migrations/env.py" in names
    assert "jobsync/migrations/script.py.mako" in names
    assert any(n.startswith("jobsync/migrations/versions/0001_") for n in names)

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = (
        "import jobsync, jobsync.storage.migrate as m;"
        f"assert jobsync.__file__.startswith({str(site)!r}), jobsync.__file__;"
        "print(m.migrations_dir());"
        "e = jobsync.open_engine('sqlite:///fresh.db'); print(m.upgrade(e)[1])"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {script}"],
        cwd=elsewhere,
        check=True,
        capture_output=True,
        text=True,
    )
    where, revision = done.stdout.split()
    assert where == str(site / "jobsync" / "migrations")
    assert revision == head_revision()
    assert (elsewhere / "fresh.db").exists()
