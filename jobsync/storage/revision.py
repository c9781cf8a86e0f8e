"""The newest schema revision this jobsync knows, in a module of its own that imports nothing:
a sync whose schema is current never imports Alembic (with Mako and Pygments, a noticeable part
of start-up), and ``jobsync.storage.early`` reads it before SQLAlchemy is loaded.

tests/storage/test_storage.py checks it against the revisions on disk: a new revision bumps it.
"""

__all__ = ["HEAD_REVISION"]

HEAD_REVISION = "0012"
