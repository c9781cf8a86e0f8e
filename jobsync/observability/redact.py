"""Keeping secrets out of text: a ``Secret`` wrapper and a scrubber for error messages.

Every ``Secret`` registers its value so that :func:`redact` can scrub it from any text that is
about to be shown, logged or stored (a server may echo a token back in an error message). The
registry only grows within a process, which is what a CLI run or a daemon wants.
"""

from __future__ import annotations

import re
import threading

__all__ = ["Secret", "error_detail", "redact", "redact_url"]

_MASK = "***"
_registry: set[str] = set()
_registry_lock = threading.Lock()

# user:password@ in URLs, and password=/token=/key= query or keyword arguments.
_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^/\s:@]*):[^/\s@]*@"
)
_KEYWORD_SECRET = re.compile(
    r"(?P<name>password|passwd|pwd|token|api[_-]?key|secret)(?P<sep>\s*[=:]\s*)(?P<value>[^&\s'\",;]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<name>Bearer\s+)\S+", re.IGNORECASE)


class Secret:
    """A string that never shows itself: ``str``, ``repr`` and formatting all give ``***``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value
        if value:
            with _registry_lock:
                _registry.add(value)

    def reveal(self) -> str:
        """The real value, for the one place that sends it (the HTTP auth hook)."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({_MASK!r})"

    def __str__(self) -> str:
        return _MASK

    def __format__(self, spec: str) -> str:
        return _MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")


def redact(text: str) -> str:
    """Remove every registered secret, URL password and ``password=`` value from ``text``."""
    with _registry_lock:
        secrets = sorted(_registry, key=len, reverse=True)
    for value in secrets:
        text = text.replace(value, _MASK)
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{_MASK}@", text)
    text = _KEYWORD_SECRET.sub(lambda m: f"{m['name']}{m['sep']}{_MASK}", text)
    return _BEARER.sub(lambda m: f"{m['name']}{_MASK}", text)


def error_detail(exc: BaseException) -> str:
    """The first line of an error's message (its driver error's, when it wraps one), redacted.

    Database errors carry SQL, parameters and sometimes the URL after the first line.
    """
    original = getattr(exc, "orig", None) or exc
    lines = str(original).strip().splitlines()
    return redact(lines[0] if lines else type(original).__name__)


def redact_url(url: str) -> str:
    """A database URL fit for messages: password and ``password=`` query values masked."""
    return redact(url)


def _reset_for_tests() -> None:
    with _registry_lock:
        _registry.clear()
