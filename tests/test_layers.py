"""The packages show the layers, and imports flow one way.

``cli`` -> ``service`` and ``reporting`` -> ``api`` and ``storage`` -> ``domain``. ``observability``
may be imported by any layer but imports none of them; ``errors`` and ``config`` sit at the top
and import only ``observability.redact`` and each other. Read from the source with ``ast``, so
imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import jobsync

PACKAGE = Path(jobsync.__file__).resolve().parent

LAYERS = ("domain", "api", "storage", "service", "reporting", "observability", "cli", "simulator")
# _version: the one statement of the version (the wheel's metadata reads it too).
TOP_MODULES = {"__init__", "__main__", "_version", "errors"}
# Configuration enters at the edge: a small package of its own beside the face and the errors.
TOP_PACKAGES = {"config"}

# What each part may import from jobsync (itself always allowed).
ALLOWED = {
    "domain": {"errors"},
    "api": {"domain", "errors", "config", "observability", "_version"},
    "storage": {"domain", "errors", "config", "observability"},
    "service": {"api", "storage", "domain", "errors", "config", "observability"},
    "reporting": {"storage", "domain", "errors", "config", "observability", "_version"},
    "observability": {"errors"},
    "cli": {
        "jobsync",
        "_version",
        "service",
        "reporting",
        "api",
        "storage",
        "domain",
        "errors",
        "config",
        "observability",
    },
    "simulator": set(),
    "_version": set(),
    "errors": {"config", "observability.redact"},
    "config": {"errors", "observability.redact"},
    "__main__": {"cli"},
    "jobsync": {*LAYERS, "errors", "config", "_version"},  # the face imports lazily, from anywhere
}

# Imports that go against the direction, each with the reason it stays. The test fails when one
# disappears, so the list never grows stale.
KNOWN_EXCEPTIONS = {
    # The tour (jobsync demo) runs the bundled simulator in process: it is the one piece of the
    # library that plays both sides of the API. The simulator imports nothing of jobsync, so
    # this adds no cycle; moving the tour into cli would put a pass loop in a command.
    ("jobsync.service.demo", "jobsync.simulator"),
}

# Third-party and standard-library modules a layer must not import.
FORBIDDEN = {
    "domain": {
        "sqlalchemy",
        "alembic",
        "psycopg",
        "requests",
        "urllib3",
        "click",
        "apscheduler",
        "prometheus_client",
        "os",
        "socket",
        "http",
        "urllib",
        "subprocess",
        "sqlite3",
    },
    "api": {"sqlalchemy", "alembic", "psycopg", "click", "apscheduler"},
    "storage": {"requests", "urllib3", "click", "apscheduler"},
}
NOT_CLI = set(LAYERS) - {"cli"} | {"errors", "config", "jobsync"}
for part in NOT_CLI:
    FORBIDDEN.setdefault(part, set()).add("click")


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(relative.parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _part(module: str) -> str:
    """The layer (or top module) a jobsync module belongs to."""
    return "jobsync" if module == "jobsync" else module.split(".")[1]


def _imports(module: str, path: Path) -> set[str]:
    """Every module ``module`` imports, jobsync's resolved to the deepest module that exists."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                names.add(candidate if candidate in MODULES else base)
    return names


def _jobsync_target(name: str) -> str | None:
    """The jobsync module an import names (``jobsync.x.y`` -> the longest existing prefix)."""
    if name != "jobsync" and not name.startswith("jobsync."):
        return None
    parts = name.split(".")
    while parts and ".".join(parts) not in MODULES:
        parts.pop()
    return ".".join(parts)


def _allowed(source: str, target: str) -> bool:
    src, dst = _part(source), _part(target)
    if src == dst:
        return True
    allowed = ALLOWED[src]
    return dst in allowed or target.removeprefix("jobsync.") in allowed


def _violations() -> set[tuple[str, str]]:
    found = set()
    for module, path in MODULES.items():
        for name in _imports(module, path):
            target = _jobsync_target(name)
            if target is None or target == module:
                continue
            if not _allowed(module, target):
                found.add((module, target))
    return found


def test_only_the_face_errors_version_and_config_sit_directly_in_the_package():
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top == TOP_MODULES
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert packages == set(LAYERS) | TOP_PACKAGES


def test_every_module_belongs_to_a_known_part():
    for module in MODULES:
        assert _part(module) in ALLOWED, module


def test_imports_flow_one_way_apart_from_the_known_exceptions():
    assert _violations() == KNOWN_EXCEPTIONS


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_layers_keep_away_from_the_libraries_of_other_layers(part):
    offending = set()
    for module, path in MODULES.items():
        if _part(module) != part:
            continue
        for name in _imports(module, path):
            if name.split(".")[0] in FORBIDDEN[part]:
                offending.add((module, name))
    assert offending == set()


ENVIRONMENT = ("environ", "environb", "getenv", "getenvb")


def _reads_environment(tree: ast.AST) -> bool:
    """``os.environ`` / ``os.getenv`` anywhere, or ``from os import environ``."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in ENVIRONMENT
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        ):
            return True
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "os"
            and any(a.name in ENVIRONMENT for a in node.names)
        ):
            return True
    return False


def test_nothing_below_the_cli_reads_the_environment():
    readers = {
        module
        for module, path in MODULES.items()
        if _reads_environment(ast.parse(path.read_text(encoding="utf-8")))
    }
    assert readers and all(_part(m) == "cli" for m in readers), readers
