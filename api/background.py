"""Stopping background tasks for sure.

``task.cancel()`` followed by ``await task`` hangs for ever when the cancellation is
swallowed inside the task: on Python 3.11 ``asyncio.timeout`` can turn a cancellation that
arrives just as its deadline passes into a ``TimeoutError``, which a loop's ``except
Exception`` then logs and survives (seen in the test suite: a passage scheduler kept ticking
after its app shut down, and the shutdown waited for it). So cancel again until the task is
done, each time waiting a little, and give up loudly after a bound.
"""

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

ATTEMPTS = 10
WAIT_S = 0.5


async def cancel_and_wait(task: "asyncio.Task[Any] | None") -> None:
    """Cancel ``task`` and wait until it has ended (re-cancelling a task that ignored it)."""
    if task is None:
        return
    for _ in range(ATTEMPTS):
        if task.done():
            break
        task.cancel()
        await asyncio.wait({task}, timeout=WAIT_S)
    if not task.done():
        log.error("background task %s did not stop after %d cancellations", task, ATTEMPTS)
        return
    if not task.cancelled() and task.exception() is not None:
        log.warning("background task %s ended with %r", task.get_name(), task.exception())
