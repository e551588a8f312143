"""Stopping the controller's background tasks for certain.

Why: a task cancelled while redis-py runs one of its commands does not always end. With a
``socket_timeout`` (redis-py 5-8) and in redis-py 8.0-8.2 even without one, the client swallows the
CancelledError of a command it was reading the answer of (measured: 60-200 of 300 cancels lost; see
tests/integration/test_redis_cancel.py), and the loop around it goes on. One ``cancel()`` and an
unbounded ``gather`` then hang the shutdown. So the cancel is repeated until every task has ended
(the next one lands while the loop sleeps), with a bound.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Iterable

log = logging.getLogger(__name__)


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]], timeout: float = 10.0,
                          every: float = 0.05) -> set[asyncio.Task[object]]:
    """Cancel ``tasks`` and wait until all have ended, cancelling again every ``every`` seconds those
    still running; returns the tasks still running after ``timeout`` (logged), normally none."""
    pending = {t for t in tasks if not t.done()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while pending:
        for task in pending:
            task.cancel()
        left = deadline - loop.time()
        if left <= 0:
            log.warning("%d task(s) did not stop within %.0f s: %s", len(pending), timeout,
                        ", ".join(sorted(t.get_name() for t in pending)))
            break
        _, pending = await asyncio.wait(pending, timeout=min(every, left))
    return pending


async def drain_then_stop(jobs: "asyncio.Queue[Any]", worker: "asyncio.Task[Any]", grace: float,
                          what: str) -> None:
    """Let ``worker`` finish the ``jobs`` queued (bounded by ``grace``; what is left is logged as ``what``),
    then stop it for certain (``cancel_and_wait``: it writes to Redis, whose client may swallow a cancel)."""
    try:
        await asyncio.wait_for(jobs.join(), grace)
    except asyncio.TimeoutError:
        log.warning("%s: %d not written at stop", what, jobs.qsize())
    await cancel_and_wait([worker])
