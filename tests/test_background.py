"""cancel_and_wait stops a task even when it swallows a cancellation."""

import asyncio

from api.background import cancel_and_wait


async def test_a_task_that_swallows_one_cancellation_is_still_stopped() -> None:
    ticks = 0

    async def stubborn() -> None:
        nonlocal ticks
        while True:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                # What asyncio.timeout can do on Python 3.11 when a cancel meets its deadline.
                ticks += 1
                if ticks == 1:
                    continue
                raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0.02)
    await cancel_and_wait(task)
    assert task.cancelled()
    assert ticks == 2


async def test_none_and_finished_tasks_are_fine() -> None:
    await cancel_and_wait(None)
    task = asyncio.create_task(asyncio.sleep(0))
    await task
    await cancel_and_wait(task)
