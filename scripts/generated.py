"""What the scripts that write generated files share: write the file, or only check it."""

from __future__ import annotations

import sys
from pathlib import Path


def rewrite_or_check(path: Path, fresh: str, *, check: bool, command: str) -> int:
    """Write ``fresh`` to ``path`` if it differs (or, with ``check``, say that it does and
    return 1 without writing); the exit status of the script."""
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    if fresh == current:
        return 0
    if check:
        print(f"{path} is out of date: run {command}", file=sys.stderr)
        return 1
    path.write_text(fresh, encoding="utf-8")
    print(f"rewrote {path}")
    return 0
