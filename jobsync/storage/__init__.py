"""The database side: engine, schema, migrations, locks, and writing and reading a pass."""
