"""Storage keeps the database's particulars behind one seam, read from the source with ``ast``.

Which database an engine talks to is asked in one place (``jobsync.storage.backends``);
SQL naming jobsync's tables is written only inside ``jobsync.storage``; the database's errors
leave storage as StorageError, so no other layer handles SQLAlchemy's; every name another
module imports from a storage module is in that module's ``__all__``; and no storage module
grows past a size a reader can hold.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import jobsync
from jobsync.storage.schema import metadata, view_metadata

PACKAGE = Path(jobsync.__file__).resolve().parent
ROOT = PACKAGE.parent
STORAGE = PACKAGE / "storage"
LOOKUP = STORAGE / "backends" / "__init__.py"

# Asking a URL which database it names, outside storage. Each is listed until it moves onto
# storage's lookup; the test fails when one disappears, so the list never grows stale.
KNOWN_BACKEND_NAME_USES: set[str] = set()

SQL_VERB = re.compile(
    r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|ALTER|DROP|COPY|LOCK|TRUNCATE)\s",
    re.IGNORECASE,
)
TABLES = sorted({*metadata.tables, *view_metadata.tables})
TABLE_NAME = re.compile(rf"\b({'|'.join(TABLES)})\b")


def _sources(under: Path = PACKAGE) -> dict[str, str]:
    return {
        str(path.relative_to(ROOT)): path.read_text(encoding="utf-8")
        for path in sorted(under.rglob("*.py"))
    }


def _strings(tree: ast.AST):
    """Every string literal, f-strings joined with ``{}`` where a value goes."""
    inside_fstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = []
            for value in node.values:
                inside_fstrings.add(id(value))
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    parts.append(value.value)
                else:
                    parts.append("{}")
            yield "".join(parts)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in inside_fstrings
        ):
            yield node.value


def test_only_the_backend_lookup_asks_which_database_it_is():
    asking = {
        path
        for path, text in _sources().items()
        if "dialect.name" in text or "get_backend_name" in text
    }
    assert asking == {str(LOOKUP.relative_to(ROOT)), *KNOWN_BACKEND_NAME_USES}
    for path in KNOWN_BACKEND_NAME_USES:
        assert "dialect.name" not in (ROOT / path).read_text(encoding="utf-8")


def test_sql_naming_jobsyncs_tables_is_written_only_in_storage():
    """A command line shown to a user that mentions SQL (the demo's hint) is not SQL jobsync
    runs: only strings that begin with a statement count."""
    assert "import_job_records" in TABLES and "import_jobs" in TABLES
    found = {
        (path, text.strip().splitlines()[0])
        for path, source in _sources().items()
        if not path.startswith("jobsync/storage/")
        for text in _strings(ast.parse(source))
        if SQL_VERB.match(text) and TABLE_NAME.search(text)
    }
    assert found == set()


def test_the_sql_check_would_see_sql_outside_storage():
    source = 'x = text("SELECT job_id FROM import_job_records")\ny = f"DELETE FROM {t} sync_runs"'
    found = [t for t in _strings(ast.parse(source)) if SQL_VERB.match(t) and TABLE_NAME.search(t)]
    assert len(found) == 2


@pytest.mark.parametrize("part", ["service", "cli"])
def test_services_and_commands_leave_the_databases_errors_to_storage(part):
    for path, source in _sources(PACKAGE / part).items():
        tree = ast.parse(source)
        imported = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy")
            for alias in node.names
        }
        assert not imported & {"SQLAlchemyError", "DBAPIError", "OperationalError"}, path
        built = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "StorageError"
        ]
        assert built == [], path
        assert "database error" not in source, path


def _storage_imports() -> dict[str, set[str]]:
    """For each storage module, the names other modules (and tests, benchmarks, migrations)
    import from it."""
    wanted: dict[str, set[str]] = {}
    roots = [PACKAGE, ROOT / "tests", ROOT / "bench", ROOT / "migrations"]
    for root in roots:
        for path in root.rglob("*.py"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.ImportFrom) or node.level:
                    continue
                target = node.module or ""
                if not target.startswith("jobsync.storage") or target == module:
                    continue
                names = {alias.name for alias in node.names}
                wanted.setdefault(target, set()).update(names)
    return wanted


def test_every_name_imported_from_a_storage_module_is_in_its_all():
    import importlib
    import importlib.util
    import types

    for target, names in sorted(_storage_imports().items()):
        module = importlib.import_module(target)
        public = set(getattr(module, "__all__", ()))
        # A package's modules (``from jobsync.storage import scan``) are no names of its own.
        # (Looked up, not read off the package: a submodule is its attribute only once some
        # import has loaded it.)
        modules = {
            n
            for n in names
            if isinstance(getattr(module, n, None), types.ModuleType)
            or (hasattr(module, "__path__") and importlib.util.find_spec(f"{target}.{n}"))
        }
        missing = names - modules - public
        assert missing == set(), f"{target}.__all__ lacks {sorted(missing)}"


def test_every_storage_module_has_an_all_that_names_what_it_defines():
    import importlib

    for path in sorted(STORAGE.rglob("*.py")):
        if path.name == "__init__.py" and path.parent == STORAGE:
            continue
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        module = importlib.import_module(name.removesuffix(".__init__"))
        assert hasattr(module, "__all__"), name
        assert all(hasattr(module, n) for n in module.__all__), name


def test_no_storage_module_is_longer_than_a_reader_can_hold():
    lengths = {
        str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
        for path in STORAGE.rglob("*.py")
    }
    assert {path: n for path, n in lengths.items() if n > 400} == {}


def test_a_sqlite_process_loads_no_postgresql_code(tmp_path):
    # SQLAlchemy's PostgreSQL dialect imports every driver module it supports: a tenth of a
    # second of each SQLite command's start, for nothing.
    script = f"""
import sys
from jobsync.storage.migrate import upgrade
from jobsync.storage.store import open_engine
engine = open_engine("sqlite:///{tmp_path / "x.db"}")
upgrade(engine)
loaded = sorted(m for m in sys.modules if "postgresql" in m or "psycopg" in m)
print(",".join(loaded))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == ""
