"""The data dictionary: what every table, view and column means, in one place.

The text is in ``jobsync.storage.descriptions``; everything that describes the schema to people
and tools is generated from it:

- PostgreSQL's ``COMMENT ON`` for every table, view and column, written at the end of every
  ``jobsync db upgrade`` (``comments``; the backend writes only those that differ), so Superset,
  Metabase and Grafana show them without a migration per change of wording; the SQLAlchemy
  tables carry the same comments (``annotate``), so autogenerate expects them;
- the Datasette metadata (``jobsync.reporting.datasette``), with units and facets, and the
  example queries of ``jobsync.storage.examples`` as saved queries;
- the column tables of docs/schema.md (``jobsync.reporting.schema_doc``; a test keeps the
  committed page equal to what it generates).

Tools that show plain text get the descriptions without Markdown's backticks. Column types are
not written in the dictionary but read from the SQLAlchemy tables of ``schema`` and ``views``,
the same objects the code reads with. Tests check by reflection that every table, view and
column of a migrated database is described, on both backends.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    TypeDecorator,
)
from sqlalchemy.types import TypeEngine

from jobsync.storage.descriptions import RELATIONS, UNITS, Field, Relation

__all__ = [
    "RELATIONS",
    "UNITS",
    "Comments",
    "Field",
    "Relation",
    "annotate",
    "comments",
    "plain",
    "sqlalchemy_tables",
    "type_name",
]


def plain(text: str) -> str:
    """A description for tools that show plain text, where Markdown's backticks are noise."""
    return text.replace("`", "")


class Comments(NamedTuple):
    """What ``COMMENT ON`` gives one table or view and its columns (plain text)."""

    kind: str
    comment: str
    columns: dict[str, str]


def _column_comment(field: Field) -> str:
    text = plain(field.description)
    return f"{text} (unit: {field.unit})" if field.unit else text


def comments() -> dict[str, Comments]:
    """The comments of every table and view, by name: units ride along in the text, since a
    comment is all that BI tools read."""
    return {
        name: Comments(
            relation.kind,
            plain(relation.description),
            {column: _column_comment(field) for column, field in relation.columns.items()},
        )
        for name, relation in RELATIONS.items()
    }


def annotate(tables: Iterable[Table]) -> None:
    """Give SQLAlchemy's tables the comments ``upgrade`` writes (``Table.comment``,
    ``Column.comment``): what Alembic's autogenerate compares with the database is then what
    the database has, and ``metadata.create_all`` writes them too."""
    described = comments()
    for table in tables:
        if table.name in described:
            table.comment = described[table.name].comment
            for column in table.columns:
                column.comment = described[table.name].columns.get(column.name)


# Alembic's own table, which jobsync's SQLAlchemy metadata does not declare.
_ALEMBIC_VERSION = Table("alembic_version", MetaData(), Column("version_num", String(32)))


def sqlalchemy_tables() -> dict[str, Table]:
    """The SQLAlchemy table of every table and view jobsync creates, by name."""
    # Imported here: schema imports this module (annotate). The views' tables join
    # view_metadata when their module is imported.
    import jobsync.storage.views  # noqa: F401
    from jobsync.storage.schema import metadata, view_metadata

    return {
        **metadata.tables,
        **view_metadata.tables,
        _ALEMBIC_VERSION.name: _ALEMBIC_VERSION,
    }


def type_name(sql_type: TypeEngine[object]) -> str:
    """The kind of value a column holds, as people name it (the same on both backends)."""
    if isinstance(sql_type, TypeDecorator):
        sql_type = sql_type.impl_instance
    # Every time jobsync stores is UTC (UTCDateTime).
    for kind, name in (
        (DateTime, "timestamp (UTC)"),
        (Date, "date"),
        (Boolean, "boolean"),
        (Integer, "integer"),
        (Float, "number"),
        (Numeric, "number"),
        (String, "text"),
    ):
        if isinstance(sql_type, kind):
            return name
    return type(sql_type).__name__.lower()
