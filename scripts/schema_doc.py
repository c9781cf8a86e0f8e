"""Rewrite the generated blocks of docs/schema.md from the data dictionary.

python scripts/schema_doc.py           # rewrite the page
python scripts/schema_doc.py --check   # exit 1 if the page is not what it would write
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from generated import rewrite_or_check

from jobsync.reporting.schema_doc import regenerate

PAGE = Path(__file__).resolve().parents[1] / "docs" / "schema.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check, change nothing")
    args = parser.parse_args()
    fresh = regenerate(PAGE.read_text(encoding="utf-8"))
    return rewrite_or_check(PAGE, fresh, check=args.check, command="python scripts/schema_doc.py")


if __name__ == "__main__":
    sys.exit(main())
