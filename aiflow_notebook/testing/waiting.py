"""Waiting in tests: poll a condition until it holds, or fail saying what did not happen."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiflow_notebook.core.waiting import Deadline, wait_until

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 60.0, what: str = "condition", interval: float = 0.05) -> T:
    """Return ``predicate()``'s first truthy value; raise ``AssertionError`` after ``timeout`` seconds
    (the public :func:`aiflow_notebook.wait_until`, failing as a test fails)."""
    try:
        return wait_until(predicate, timeout=timeout, what=what, interval=interval)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


async def wait_for_async(predicate: Callable[[], Awaitable[T]], timeout: float = 60.0, what: str = "condition",
                         interval: float = 0.05) -> T:
    """:func:`wait_for` for a coroutine predicate on a running event loop (a test of a Jupyter server on the
    same loop must not block it with ``time.sleep``)."""
    deadline = Deadline(timeout)
    while True:
        value = await predicate()
        if value:
            return value
        if deadline.passed:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(min(interval, deadline.left()))
