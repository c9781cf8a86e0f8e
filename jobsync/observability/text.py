"""Showing text that comes from outside (the API, the database) without obeying it.

A job name or an error message may hold control characters: a newline that starts a forged log
line, an escape sequence that moves the cursor or recolours a terminal, a bidi override that
reorders what is read. Whatever shows such text to a person (the log formatter, the table
renderer, the CLI's error line) escapes them first.
"""

from __future__ import annotations

import re

__all__ = ["escape_control"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def escape_control(text: str) -> str:
    """Show control and bidi-override characters as escapes instead of obeying them."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
