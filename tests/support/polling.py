"""Waiting in tests: poll a condition until it holds, or fail saying what was awaited."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest


def wait_for(
    condition: Callable[[], object], timeout: float, what: str, log: Path | None = None, every_s: float = 0.2
) -> None:
    """Poll ``condition`` every ``every_s`` until it is truthy; past ``timeout`` fail naming ``what`` (and ``log``'s tail)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every_s)
    tail = f"; the command's output ends:\n{log.read_text()[-4000:]}" if log else ""
    pytest.fail(f"timed out waiting for {what}{tail}")


def wait_until(check, timeout_s: float = 60.0, every_s: float = 0.1):
    """Poll `check` until it returns something truthy and return that, or fail with an AssertionError after
    `timeout_s` (`wait_for` when the caller names what it awaits and needs no value back)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every_s)
    raise AssertionError(f"not true within {timeout_s} s: {check}")
