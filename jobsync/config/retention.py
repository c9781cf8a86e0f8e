"""How long run metadata is kept: ``retention`` in the config file, ``--keep`` of ``db prune``."""

from __future__ import annotations

from jobsync.config.checks import duration_seconds
from jobsync.config.settings import DEFAULT_RETENTION
from jobsync.errors import ConfigError

__all__ = ["DEFAULT_RETENTION", "parse_retention", "parse_window"]


def parse_window(value: str) -> float:
    """``30d``, ``12h``, ``2w``, ``1d12h`` -> seconds, longer than zero; ValueError (saying
    what is wrong) for anything else, a negative or zero window included."""
    seconds = duration_seconds(value)
    if seconds is None:
        raise ValueError(f"{value!r:.40} is not a duration: write e.g. 30d, 12h or 2w")
    if seconds <= 0:
        raise ValueError(f"{value!r:.40} must be longer than zero")
    return seconds


def parse_retention(value: object, where: str) -> float | None:
    """The config file's ``retention``: seconds, or None for ``0``/``"never"`` (keep
    everything). ConfigError naming ``where`` for anything else."""
    if value == 0 and not isinstance(value, bool):
        return None
    if isinstance(value, str):
        if value.strip().lower() in ("never", "0"):
            return None
        try:
            return parse_window(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: field 'retention': {exc} (or \"never\")") from None
    raise ConfigError(
        f'{where}: field \'retention\' must be a duration such as "90d" (or "never"), '
        f"not {type(value).__name__}"
    )
