"""The parts of docs/schema.md that are generated from the data dictionary.

The page is written by hand around marked blocks; each block is generated:

    <!-- generated: sync_runs -->
    ...the relation's description and a table of its columns, types and meanings...
    <!-- end generated -->

``<!-- generated: examples -->`` holds the example queries (``jobsync.storage.examples``).
``python scripts/schema_doc.py`` rewrites the blocks; tests/reporting/test_schema_docs.py keeps
the committed page equal to what this module generates.
"""

from __future__ import annotations

import re

from sqlalchemy import Table

from jobsync.storage.dictionary import RELATIONS, Relation, sqlalchemy_tables, type_name
from jobsync.storage.examples import EXAMPLES

__all__ = ["EXAMPLES_BLOCK", "block_names", "generated", "regenerate"]

EXAMPLES_BLOCK = "examples"
_BLOCK = re.compile(r"<!-- generated: (\S+) -->\n.*?<!-- end generated -->", re.S)


def _relation(name: str, relation: Relation, table: Table | None) -> str:
    if table is None:
        raise ValueError(f"{name}: described in the data dictionary but not declared in SQLAlchemy")
    lines = [relation.description, "", "| column | type | meaning |", "|---|---|---|"]
    for column, field in relation.columns.items():
        if column not in table.c:
            raise ValueError(f"{name}.{column}: described but not declared in SQLAlchemy")
        kind = type_name(table.c[column].type)
        if field.unit:
            kind = f"{kind}, {field.unit}"
        lines.append(f"| `{column}` | {kind} | {field.description} |")
    return "\n".join(lines)


def _examples() -> str:
    parts = []
    for example in EXAMPLES:
        parts += [f"### {example.title}", example.description]
        if example.postgresql is None:
            parts.append(f"```sql\n{example.sqlite}```")
        else:
            parts += ["*SQLite*", f"```sql sqlite\n{example.sqlite}```"]
            parts += ["*PostgreSQL*", f"```sql postgresql\n{example.postgresql}```"]
    return "\n\n".join(parts)


def generated(name: str) -> str:
    """The text of the block ``name``: a table or view of the dictionary, or ``examples``."""
    if name == EXAMPLES_BLOCK:
        return _examples()
    if name not in RELATIONS:
        raise ValueError(
            f"docs/schema.md has a generated block for {name!r}, which the data "
            "dictionary does not describe"
        )
    return _relation(name, RELATIONS[name], sqlalchemy_tables().get(name))


def block_names(page: str) -> list[str]:
    """The names of the generated blocks on the page, in order."""
    return [match[1] for match in _BLOCK.finditer(page)]


def regenerate(page: str) -> str:
    """The page with every generated block written afresh."""
    return _BLOCK.sub(
        lambda match: (
            f"<!-- generated: {match[1]} -->\n\n{generated(match[1])}\n\n<!-- end generated -->"
        ),
        page,
    )
