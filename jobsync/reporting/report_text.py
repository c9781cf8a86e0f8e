"""Text for reports: failure reasons reduced to their shape, and durations and rates for people.

APIs put the specifics of each failure into its text: a file name, a row number, a job id, a
URL. :func:`normalise_reason` replaces those with placeholders so that ``"file s3://b/x1.parquet
not found"`` and ``"file s3://b/y22.parquet not found"`` count as one reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["NO_REASON", "for_people", "format_seconds", "normalise_reason", "people_columns"]

NO_REASON = "(no reason given)"

_QUOTED = re.compile(
    r"'([^']*)'|\"([^\"]*)\"|`([^`]*)`|\u2018([^\u2019]*)\u2019|\u201c([^\u201d]*)\u201d"
)
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"`<>()\[\]{},;]*")
_PATH = re.compile(
    r"(?:\b[a-z]:)?(?:[^\s'\"`<>()\[\]{},;:=]*[\w.~-])?[/\\][\w.~-][^\s'\"`<>()\[\]{},;]*"
)
_FILE = re.compile(r"\b[\w.-]+\.(?:parquet|json|jsonl|csv|npy|txt|gz|zip|tar|bin|avro|orc)\b")
_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
_HEX = re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b")
# A word of six or more characters holding digits and letters (hyphens allowed): an id, while
# short words such as "s3" or "utf-8" stay.
_ID = re.compile(r"\b(?=[\w-]{6})(?=[\w-]*\d)(?=[\w-]*[a-z])\w+(?:-\w+)*\b")
# A number, with a unit of up to three letters kept: "30.5s" becomes "<n>s".
_NUMBER = re.compile(r"(?<![\w<-])[-+]?\d+(?:[.,]\d+)*(?=[a-z]{0,3}\b)")
_PLACEHOLDER = re.compile(r"<(?:url|path|str|id|n)>")


def normalise_reason(reason: str | None) -> str:
    """The shape of a failure reason, so that the same failure groups together.

    Lower-cased; URLs become ``<url>``, paths and data file names ``<path>``, quoted text
    ``<str>`` (or the placeholder it consists of), UUIDs, hex strings and mixed letter-digit
    ids ``<id>``, numbers ``<n>``; whitespace is collapsed and trailing punctuation dropped.
    ``"file s3://b/x1.parquet not found"`` becomes ``"file <url> not found"``.
    """
    if reason is None or not reason.strip():
        return NO_REASON
    return _shape(reason.lower()) or NO_REASON


def _shape(text: str) -> str:
    text = _URL.sub("<url>", text)

    def quoted(match: re.Match[str]) -> str:
        inner = _shape(next(g for g in match.groups() if g is not None))
        return inner if _PLACEHOLDER.fullmatch(inner) else "<str>"

    text = _QUOTED.sub(quoted, text)
    # A path ends before the punctuation that follows it in a sentence.
    text = _PATH.sub(lambda m: "<path>" + m.group()[len(m.group().rstrip(".:")) :], text)
    for pattern, placeholder in (
        (_FILE, "<path>"),
        (_UUID, "<id>"),
        (_ID, "<id>"),
        (_HEX, "<id>"),
        (_NUMBER, "<n>"),
    ):
        text = pattern.sub(placeholder, text)
    return " ".join(text.split()).rstrip(".:;, ")


def format_seconds(seconds: float | None) -> str:
    """``45s``, ``12m 05s``, ``1h 02m``, ``2h``, ``2d 04h``: two units at most, rounded down.

    A second unit of zero is left out; under a second shows as ``0.25s``.
    """
    if seconds is None:
        return ""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{seconds:.2f}s"
    whole = int(seconds)
    units: list[tuple[int, str]] = []
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m"), (1, "s")):
        amount, whole = divmod(whole, size)
        if amount or units:
            units.append((amount, unit))
    (big, big_unit), *rest = units
    if not rest or rest[0][0] == 0:
        return f"{big}{big_unit}"
    small, small_unit = rest[0]
    return f"{big}{big_unit} {small:02d}{small_unit}"


def for_people(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for the table format: seconds as ``1h 02m`` (the column named without ``seconds``),
    rates as percentages, flags as yes or no."""
    shown = []
    for row in rows:
        out: dict[str, Any] = {}
        for key, value in row.items():
            if key.endswith("_seconds") or key.startswith("seconds_"):
                out[_people_name(key)] = format_seconds(value)
            elif key.endswith("_rate"):
                out[key] = "" if value is None else f"{value * 100:.1f}%"
            elif isinstance(value, bool):
                out[key] = "yes" if value else "no"
            else:
                out[key] = value
        shown.append(out)
    return shown


def people_columns(columns: Sequence[str]) -> list[str]:
    """The column names :func:`for_people` gives: ``p50_seconds`` -> ``p50``."""
    return [_people_name(c) for c in columns]


def _people_name(key: str) -> str:
    return key.removesuffix("_seconds").removeprefix("seconds_")
