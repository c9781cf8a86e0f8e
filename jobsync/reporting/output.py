"""Rendering rows for people (an aligned table) and for programs (CSV, JSON).

Values come from an API we do not control: in the table, control characters are shown
escaped (``\\x1b``), so a job name cannot move the cursor or recolour the terminal.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from jobsync.observability.text import escape_control

__all__ = ["FORMATS", "render"]

FORMATS = ("table", "csv", "json")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds").replace("+00:00", "Z")
    return value


def render(rows: Sequence[dict[str, Any]], fmt: str, columns: Sequence[str] | None = None) -> str:
    """Render rows in one of FORMATS; ``columns`` fixes the order (default: first row's keys)."""
    cols = list(columns or (rows[0].keys() if rows else []))
    if fmt == "json":
        return json.dumps(
            [{c: _plain(r.get(c)) for c in cols} for r in rows], indent=2, ensure_ascii=False
        )
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(cols)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else _plain(row.get(c)) for c in cols])
        return buffer.getvalue().rstrip("\n")
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}")
    if not rows:
        return "(no rows)"
    cells = [[escape_control(_cell(r.get(c))) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += [
        "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    value = _plain(value)
    return str(value)
