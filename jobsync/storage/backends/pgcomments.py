"""PostgreSQL's ``COMMENT ON``: where Superset, Metabase and Grafana read descriptions.

Written after every migration run (``jobsync.storage.migrate.upgrade``) from the data dictionary,
so a change of wording needs no revision, and a view a revision drops and recreates gets its
comments back. Only comments that differ from the catalog's are written: an upgrade with
nothing to do changes nothing, and takes no lock on the tables. Only objects that exist are
described: a database held at an older revision has fewer columns than the dictionary. Only
the owner may comment, so objects of another owner are left as they are rather than failing an
upgrade that has nothing else to do.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Connection, text

from jobsync.storage.dictionary import Comments

__all__ = ["write_comments"]

# The tables and views of the connection's schema that its role owns, and their comments now.
_RELATIONS = text(
    """
    SELECT c.relname, obj_description(c.oid, 'pg_class')
    FROM pg_class c
    WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p', 'v')
      AND pg_has_role(c.relowner, 'USAGE')
    """
)
_COLUMNS = text(
    """
    SELECT c.relname, a.attname, col_description(c.oid, a.attnum)
    FROM pg_class c
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p', 'v')
      AND pg_has_role(c.relowner, 'USAGE')
    """
)
_VERBATIM = {"no_parameters": True}


def write_comments(conn: Connection, relations: Mapping[str, Comments]) -> int:
    """Comment on the tables, views and columns that exist; return how many comments changed."""
    from psycopg import sql

    driver = conn.connection.driver_connection

    def comment_on(target: sql.Composable, comment: str) -> str:
        # COMMENT ON takes no parameters: psycopg quotes the text as a literal.
        return sql.SQL("COMMENT ON {} IS {}").format(target, sql.Literal(comment)).as_string(driver)

    have = {name: comment for name, comment in conn.execute(_RELATIONS)}
    have_columns = {(table, column): comment for table, column, comment in conn.execute(_COLUMNS)}
    statements = []
    for name, wanted in relations.items():
        if name not in have:
            continue
        if have[name] != wanted.comment:
            keyword = sql.SQL("VIEW" if wanted.kind == "view" else "TABLE")
            target = sql.SQL("{} {}").format(keyword, sql.Identifier(name))
            statements.append(comment_on(target, wanted.comment))
        for column, comment in wanted.columns.items():
            if (name, column) in have_columns and have_columns[name, column] != comment:
                target = sql.SQL("COLUMN {}").format(sql.Identifier(name, column))
                statements.append(comment_on(target, comment))
    for statement in statements:
        # Verbatim: a '%' in a description is no placeholder.
        conn.exec_driver_sql(statement, execution_options=_VERBATIM)
    return len(statements)
