"""The package's version: the wheel's metadata takes it from here (``pyproject.toml``)."""

__version__ = "0.1.0"
