"""The public API is small and pinned (httpx's test_exported_members habit)."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

import jobsync


def test_public_names_are_pinned():
    assert jobsync.__all__ == sorted(
        [
            "ApiError",
            "ApiStatusError",
            "AuthError",
            "Cancelled",
            "ConfigError",
            "HttpSettings",
            "JobsyncError",
            "LockedError",
            "PassCounts",
            "PassResult",
            "ProtocolError",
            "SchemaError",
            "Secret",
            "Settings",
            "Source",
            "StorageError",
            "TransportError",
            "__version__",
            "ensure_schema",
            "open_engine",
            "sync_all",
            "sync_source",
            "upgrade",
        ]
    )
    for name in jobsync.__all__:
        assert getattr(jobsync, name) is not None


def test_the_version_is_the_one_in_the_package_metadata_and_names_the_client():
    from jobsync.api.client import ApiClient

    assert jobsync.__version__ == version("jobsync")
    with ApiClient("http://127.0.0.1:9", None) as client:
        assert client._session.headers["User-Agent"] == f"jobsync/{jobsync.__version__}"


def test_importing_the_simulator_or_the_package_does_not_load_sqlalchemy():
    code = (
        "import sys, jobsync, jobsync.simulator;"
        "print('sqlalchemy' in sys.modules, 'alembic' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
