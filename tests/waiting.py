"""Waiting in tests for something a real process does: a file, a job state, a log line."""

from __future__ import annotations

import time


def wait_for(condition, timeout: float, what: str, every: float = 0.1):
    """Call ``condition`` every ``every`` seconds until it returns something true, and return that; fail the test
    (AssertionError) naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
