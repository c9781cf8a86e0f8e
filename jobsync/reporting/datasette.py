"""A Datasette ``metadata.json`` for a jobsync SQLite file, from the data dictionary.

Every table and view gets its description, its columns' descriptions and units, its facets and
its default sort from ``jobsync.storage.dictionary``; the example queries of
``jobsync.storage.examples`` become saved ("canned") queries. Datasette shows descriptions as
plain text, so they go without Markdown's backticks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobsync.errors import ConfigError
from jobsync.storage.dictionary import RELATIONS, UNITS, Relation, plain
from jobsync.storage.examples import EXAMPLES
from jobsync.storage.store import sqlite_file

__all__ = ["datasette_database_name", "datasette_metadata"]


def _table(relation: Relation) -> dict[str, Any]:
    table: dict[str, Any] = {
        "description": plain(relation.description),
        "columns": {name: plain(field.description) for name, field in relation.columns.items()},
    }
    units = {name: UNITS[field.unit] for name, field in relation.columns.items() if field.unit}
    if units:
        table["units"] = units
    if relation.facets:
        table["facets"] = list(relation.facets)
    if relation.sort_desc:
        table["sort_desc"] = relation.sort_desc
    return table


def datasette_metadata(database: str = "jobsync") -> dict[str, Any]:
    """A Datasette ``metadata.json`` document for a jobsync SQLite file named ``database``.db."""
    return {
        "title": "jobsync: history of Zilliz Cloud and Milvus import jobs",
        "description": "Every import job jobsync has seen, every state change with the window "
        "in which it happened, and reporting views. Times are UTC. The true moment of each "
        "change lies in (window_start, observed_at].",
        "databases": {
            database: {
                "tables": {name: _table(relation) for name, relation in RELATIONS.items()},
                "queries": {
                    example.name: {
                        "title": example.title,
                        "description": plain(example.description),
                        "sql": example.sqlite.strip(),
                    }
                    for example in EXAMPLES
                },
            },
        },
    }


def datasette_database_name(url: str) -> str:
    """The name Datasette gives the SQLite file of ``url``: the file name without its suffix."""
    path = sqlite_file(url)
    if path is None:
        raise ConfigError(
            "Datasette serves SQLite files: give --db sqlite:///path/to/jobsync.db "
            "(for PostgreSQL, see the docs' SQL and BI tools page)"
        )
    return Path(path).stem
