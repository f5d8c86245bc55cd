"""The one bounded wait of the test suite: poll a condition until it holds or a deadline passes.

Tests wait on conditions (a row, an event, a log line), never on a fixed sleep: a sleep is
either too short on a loaded machine or wasted time on an idle one. The only sleeps of the
suite are the polling intervals here.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(check: Callable[[], T], *, timeout: float = 30.0, interval: float = 0.05, what: str) -> T:
    """Call `check` until it returns something truthy and return that; fail after `timeout` seconds.

    `check` runs at least once, and once more after the deadline, so a slow last poll is not lost.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def eventually(
    check: Callable[[], Awaitable[T] | T], *, timeout: float = 30.0, interval: float = 0.05, what: str
) -> T:
    """The async twin of `wait_until`: `check` may be a plain or an async callable."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = check()
        result = await outcome if inspect.isawaitable(outcome) else outcome
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
