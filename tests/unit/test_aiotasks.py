"""cancel_and_wait: a task that swallows a cancel (as redis-py does in the middle of a command) is
cancelled again until it ends; one that never ends is reported, not waited for forever."""

from __future__ import annotations

import asyncio

from ivr.app.aiotasks import cancel_and_wait


class Stubborn:
    """A loop that swallows the first ``swallow`` cancels it gets, then ends on the next one."""

    def __init__(self, swallow: int) -> None:
        self.swallow = swallow
        self.cancels = 0

    async def run(self) -> None:
        while True:
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                self.cancels += 1
                if self.cancels > self.swallow:
                    raise


async def test_a_task_that_swallows_cancels_is_cancelled_again_until_it_ends() -> None:
    loop = Stubborn(3)
    task = asyncio.create_task(loop.run())
    await asyncio.sleep(0)
    assert await cancel_and_wait([task], timeout=5.0, every=0.01) == set()
    assert task.cancelled() and loop.cancels == 4


async def test_a_task_that_never_ends_is_given_up_after_the_timeout() -> None:
    loop = Stubborn(10**9)
    task = asyncio.create_task(loop.run())
    await asyncio.sleep(0)
    assert await cancel_and_wait([task], timeout=0.2, every=0.01) == {task}
    assert loop.cancels >= 5 and not task.done()
    loop.swallow = 0                      # the test's own clean-up: the next cancel ends it
    assert await cancel_and_wait([task], timeout=1.0) == set()


async def test_done_tasks_need_nothing() -> None:
    task = asyncio.create_task(asyncio.sleep(0))
    await task
    assert await cancel_and_wait([task]) == set()
