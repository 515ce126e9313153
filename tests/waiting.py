"""Waiting in the tests that drive real processes: poll a condition, never sleep a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(condition: Callable[[], object], what: str, timeout: float, *,
               every: float = 0.3) -> None:  # fmt: skip
    """Return once ``condition()`` is true; ``AssertionError`` naming ``what`` after ``timeout``
    seconds. ``every``: seconds between two looks (each may ask a chain or a node)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)
