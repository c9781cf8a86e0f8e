"""The database side: engine, schema, migrations, locks, and writing and reading a pass.

What each module holds, from the top down:

- ``store``: engines, run records, and applying a pass in one transaction;
- ``samples``: progress details, chosen before a pass and written with it;
- ``migrate``: the schema's revisions, run from code with Alembic;
- ``prune``: bounded run metadata: old empty passes rolled up per day, old samples thinned;
- ``locking``: one sync at a time per database;
- ``scan`` and ``bulk``: reading a source's stored jobs and writing a pass's rows, at driver
  speed;
- ``rows``: what the rows jobsync writes hold, spelled once, by column name;
- ``schema`` and ``views``: the tables and views as SQLAlchemy Core objects;
- ``descriptions`` and ``examples``: what every table, view and column means (with units and
  facets), and the example queries; ``dictionary`` derives comments and types from them;
- ``boundary``: where the database's errors become StorageError;
- ``backends``: everything that differs between SQLite and PostgreSQL, one module each behind
  one seam (``backends.base.Backend``), and the lookup that picks one.
"""
