"""Keeping secrets out of text: a ``Secret`` wrapper, a scrubber for one key, and ``redact``.

A server may echo a key back in an error message, a job's reason or even a collection name,
and rarely exactly as it was sent. :func:`scrubber` builds the one matcher jobsync uses for
every variant it masks: the key in any letter case, any prefix of it of at least
``MIN_PREFIX`` characters (in any case), and the URL-encoded key and its prefixes. A key
shorter than ``MIN_PREFIX`` is masked only whole (in any case): a shorter prefix would mask
ordinary words.

Every ``Secret`` registers its value so that :func:`redact` can scrub it, with the same
variants, from any text that is about to be shown, logged or stored. The registry only grows
within a process, which is what a CLI run or a daemon wants. ``redact`` also masks credentials
that are secret by their place rather than by a registered value: the password of a URL
(``scheme://user:pw@``), ``password=`` values (URL queries, libpq connection strings), secret
query parameters of URLs (``?token=``) and a ``Bearer`` token. A word that merely follows
``token:`` in a sentence is left alone: masking it hid what an error was about while a copy of
the real key in another case went through.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable
from urllib.parse import quote

__all__ = ["MIN_PREFIX", "Scrubber", "Secret", "error_detail", "redact", "redact_url", "scrubber"]

MASK = "***"
# The shortest prefix of a key that is masked; a key shorter than this is masked only whole.
MIN_PREFIX = 8

_registry: set[str] = set()
_registry_lock = threading.Lock()
_registry_scrubber: Scrubber | None = None

_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^/\s:@]*):[^/\s@]*@"
)
# password= anywhere (a URL's query, or a libpq "host=db password=..." connection string).
_PASSWORD_VALUE = re.compile(
    r"(?P<name>\b(?:password|passwd|pwd))(?P<sep>\s*=\s*)(?P<value>[^&\s'\",;]+)", re.IGNORECASE
)
# Secret-looking parameters only inside a URL's query string, where they are credentials by
# their place; the same word in a sentence ("Invalid token: x") is not.
_QUERY_SECRET = re.compile(
    r"(?P<name>[?&](?:[\w.\-]*(?:token|secret|api[_-]?key|apikey)|key))(?P<sep>=)"
    r"(?P<value>[^&\s'\",;#]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<name>Bearer\s+)\S+", re.IGNORECASE)


class Secret:
    """A string that never shows itself: ``str``, ``repr`` and formatting all give ``***``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        global _registry_scrubber
        self._value = value
        if value:
            with _registry_lock:
                if value not in _registry:
                    _registry.add(value)
                    _registry_scrubber = None

    def reveal(self) -> str:
        """The real value, for the one place that sends it (the HTTP auth hook)."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")


class _Variant:
    """One spelling of a secret (as given, or URL-encoded) and the shortest part of it masked."""

    __slots__ = ("folded", "least", "text")

    def __init__(self, text: str, least: int) -> None:
        self.text = text
        self.folded = text.lower()
        self.least = least


class Scrubber:
    """Replaces secrets and their variants (see the module docstring) with ``***``.

    Build one with :func:`scrubber`. ``scrub(text)`` masks; ``suspects(raw)`` is the cheap test
    on an undecoded UTF-8 JSON body that says whether scrubbing its strings can change anything
    (False means it certainly cannot).
    """

    __slots__ = ("_all_ascii", "_heads", "_needles", "_pattern", "_variants")

    def __init__(self, secrets: Iterable[str]) -> None:
        variants: dict[str, _Variant] = {}
        for secret in secrets:
            if not secret:
                continue
            least = MIN_PREFIX if len(secret) >= MIN_PREFIX else None
            for form in dict.fromkeys((secret, quote(secret, safe=""), quote(secret))):
                # A short key's encoded form is masked whole too, never by a prefix.
                variant = _Variant(form, least or len(form))
                old = variants.get(variant.folded)
                if old is None or variant.least < old.least:
                    variants[variant.folded] = variant
        self._variants = tuple(variants.values())
        self._all_ascii = all(v.text.isascii() for v in self._variants)
        heads = sorted({v.folded[: v.least] for v in self._variants}, key=len, reverse=True)
        self._heads = tuple(heads)
        self._pattern = (
            re.compile("|".join(re.escape(h) for h in heads), re.IGNORECASE) if heads else None
        )
        # What a head looks like in JSON bytes: as is, and with the escapes JSON may use
        # without \u (\" and \\ always, \/ optionally); any \u escape is suspect on its own.
        needles: set[bytes] = set()
        for head in heads:
            for form in (head, json.dumps(head)[1:-1], head.replace("/", "\\/")):
                needles.add(form.lower().encode("utf-8", "surrogatepass"))
        self._needles = tuple(needles)

    def __bool__(self) -> bool:
        return bool(self._variants)

    def suspects(self, raw: bytes) -> bool:
        """Whether ``raw`` (a JSON body) may hold a variant of a secret once decoded."""
        if not self._variants:
            return False
        if not self._all_ascii:
            return True  # bytes.lower() folds ASCII letters only
        # One byte is found by memchr; most bodies have no backslash at all.
        if b"\\" in raw and b"\\u" in raw:
            return True
        lowered = raw.lower()
        return any(needle in lowered for needle in self._needles)

    def scrub(self, text: str) -> str:
        """``text`` with every variant of every secret replaced by ``***``."""
        if self._pattern is None or not text:
            return text
        spans = self._spans(text)
        if not spans:
            return text
        out: list[str] = []
        end = 0
        for start, stop in spans:
            out.append(text[end:start])
            out.append(MASK)
            end = stop
        out.append(text[end:])
        return "".join(out)

    __call__ = scrub

    def _spans(self, text: str) -> list[tuple[int, int]]:
        """The merged (start, stop) ranges of ``text`` that hold a variant, in order."""
        found: list[tuple[int, int]] = []
        if self._all_ascii and text.isascii():
            # lower() keeps ASCII text's length, so positions in it are positions in text.
            folded = text.lower()
            for head in self._heads:
                at = folded.find(head)
                while at != -1:
                    found.append((at, at + self._longest(folded, at)))
                    at = folded.find(head, at + 1)
        else:
            assert self._pattern is not None
            match = self._pattern.search(text)
            while match is not None:
                at = match.start()
                found.append((at, at + max(self._longest(text, at), match.end() - at)))
                match = self._pattern.search(text, at + 1)
        if not found:
            return []
        found.sort()
        merged = [found[0]]
        for start, stop in found[1:]:
            if start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
            else:
                merged.append((start, stop))
        return merged

    def _longest(self, text: str, at: int) -> int:
        """The length of the longest variant (or long enough prefix of one) at ``text[at:]``."""
        best = 0
        for variant in self._variants:
            length = 0
            for want, got in zip(variant.folded, text[at : at + len(variant.folded)], strict=False):
                if want != got and want != got.lower():
                    break
                length += 1
            if length >= variant.least:
                best = max(best, length)
        return best


def scrubber(*secrets: str) -> Scrubber:
    """The scrubber for ``secrets`` (usually one API key): see :class:`Scrubber`."""
    return Scrubber(secrets)


def _registered() -> Scrubber:
    global _registry_scrubber
    with _registry_lock:
        if _registry_scrubber is None:
            _registry_scrubber = Scrubber(_registry)
        return _registry_scrubber


def redact(text: str) -> str:
    """Remove every registered secret (with its variants) and every credential from ``text``."""
    text = _registered().scrub(text)
    text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _PASSWORD_VALUE.sub(lambda m: f"{m['name']}{m['sep']}{MASK}", text)
    text = _QUERY_SECRET.sub(lambda m: f"{m['name']}{m['sep']}{MASK}", text)
    return _BEARER.sub(lambda m: f"{m['name']}{MASK}", text)


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
    global _registry_scrubber
    with _registry_lock:
        _registry.clear()
        _registry_scrubber = None
