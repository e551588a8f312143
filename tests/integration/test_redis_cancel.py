"""Every loop of the controller (callback recovery, the dialer, the balancing loop, the sweepers) stops by
cancellation at shutdown, and those loops run Redis commands. redis-py swallows the CancelledError of a
command it is reading the answer of when the client has a ``socket_timeout`` (as the Store's has), and in
8.0-8.2 even without one: a single cancel() then leaves the loop running and the shutdown hangs (the
full suite once hung in a test for that reason). ``cancel_and_wait`` repeats the cancel until the task
ends: proven here against a real Redis, at every point of a command's round trip."""

from __future__ import annotations

import asyncio

from ivr.app.aiotasks import cancel_and_wait
from ivr.store.redis_store import Store


async def _busy(store: Store) -> None:
    while True:
        await store.redis.zrangebyscore("t:cancel:z", "-inf", "+inf")
        await store.redis.hgetall("t:cancel:h")
        await asyncio.sleep(0.0005)


async def test_a_task_running_redis_commands_always_stops(store: Store) -> None:
    single_cancel_lost = 0
    for i in range(150):
        task = asyncio.create_task(_busy(store))
        await asyncio.sleep(0.003 + (i % 7) * 0.0007)    # cancel at every point of a command's round trip
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=0.05)
        single_cancel_lost += not done
        assert not await cancel_and_wait({task}, timeout=5.0), f"round {i}: the task did not stop"
        assert task.done()
    # what the helper is for (informative: depends on the redis-py version and the machine's timing)
    print(f"a single cancel() was lost {single_cancel_lost} times in 150")
