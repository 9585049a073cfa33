"""The one way tests wait: poll a condition until it holds or a deadline passes.

Timeouts are generous upper bounds (a loaded 2-core machine starts processes slowly); a
condition that holds returns at once, so a generous timeout costs nothing when things work.
On timeout the error names what was awaited and the condition's last value, so a failing
test says what did not happen instead of hanging or asserting on a stale value.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

#: seconds between polls: short against the hub's 0.2–2 s heartbeats and sampling periods
INTERVAL = 0.2


def wait(condition: Callable[[], T], timeout: float = 60, what: str = "the condition",
         interval: float = INTERVAL) -> T:
    """Call ``condition()`` every ``interval`` s until it returns a truthy value, and return
    that value. Raises ``TimeoutError`` naming ``what`` (and the last value) after
    ``timeout`` s. Exceptions from ``condition`` propagate: a broken probe is not a wait."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what} "
                               f"(last value: {value!r})")
        time.sleep(interval)


async def async_wait(condition: Callable[[], T | Awaitable[T]], timeout: float = 60,
                     what: str = "the condition", interval: float = INTERVAL) -> T:
    """``wait`` inside an event loop: ``condition`` may be a plain or an async function."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what} "
                               f"(last value: {value!r})")
        await asyncio.sleep(interval)
