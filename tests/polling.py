"""Waiting for something that happens in another thread or process, without guessing how long."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest


def poll(predicate: Callable[[], Any], what: str, timeout: float, *, interval: float = 0.02) -> Any:
    """Call ``predicate`` until it returns something truthy, and return that; fail the test
    after ``timeout`` seconds. ``interval`` is a poll interval, not a wait for a guessed
    duration."""
    end = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
    return value
