"""The suite's one bounded wait (tests/support/waiting.py): what it answers and how it fails.

Interval 0 and timeout 0 keep these from waiting at all: a check is still called at
least once, and the deadline is what ends the polling.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from tests.support.waiting import eventually, wait_until


def calls_until_truthy(truthy_on: int) -> tuple[list[int], Callable[[], int]]:
    calls: list[int] = []

    def check() -> int:
        calls.append(len(calls) + 1)
        return len(calls) if len(calls) >= truthy_on else 0

    return calls, check


def test_wait_until_answers_the_first_truthy_result() -> None:
    calls, check = calls_until_truthy(3)
    assert wait_until(check, interval=0, what="the third call") == 3
    assert calls == [1, 2, 3]


def test_wait_until_calls_once_more_at_the_deadline_and_says_what_it_waited_for() -> None:
    calls, check = calls_until_truthy(10)
    with pytest.raises(AssertionError, match=r"^timed out after 0s waiting for the tenth call$"):
        wait_until(check, timeout=0, what="the tenth call")
    assert calls == [1]


def test_wait_until_lets_a_checks_own_failure_through() -> None:
    def check() -> bool:
        raise AssertionError("the worker exited")

    with pytest.raises(AssertionError, match="^the worker exited$"):
        wait_until(check, what="never")


def test_eventually_takes_a_plain_or_an_async_check() -> None:
    calls, check = calls_until_truthy(2)

    async def async_check() -> str:
        return "done"

    assert asyncio.run(eventually(check, interval=0, what="the second call")) == 2
    assert calls == [1, 2]
    assert asyncio.run(eventually(async_check, what="an async answer")) == "done"


def test_eventually_fails_saying_what_it_waited_for() -> None:
    async def never() -> None:
        return None

    with pytest.raises(AssertionError, match=r"^timed out after 0s waiting for nothing at all$"):
        asyncio.run(eventually(never, timeout=0, what="nothing at all"))
