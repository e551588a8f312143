"""Redis primary + replica + three Sentinels (ivr.devtools.redis_ha.RedisSet), real processes on loopback.

The store connects through the Sentinels (``redis.sentinels``): a writer creates a refund request every ~10 ms
while the primary is SIGKILLed; Sentinel promotes the replica, the writes in the gap fail with
``StoreUnavailable``, the next ones reach the new primary, and every request acknowledged before the kill or
after the promotion is read back from the new primary (the acknowledged ones it lacks are counted: they are
what the replication lag cost). The old primary, started again, rejoins as a replica and catches up.
Run alone with figures: ``pytest -s -n 0 -p no:cacheprovider tests/integration/test_redis_failover.py``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

from ivr.app.config import RedisConfig
from ivr.devtools.redis_ha import RedisSet
from ivr.devtools.stack import PORT_OFFSETS
from ivr.store.errors import StoreUnavailable
from ivr.store.redis_store import Store
from ivr.store.tokens import register_token_sync

from .harness import pick_port_base, wait_for

PREFIX = "fo"
DB = 3


@pytest.fixture
def redis_set(tmp_path: Path) -> Iterator[RedisSet]:
    # a stack's port base is free at its Redis port (base + 1379); the set takes that port and the next four
    base = pick_port_base(start=44000, stop=58000) + PORT_OFFSETS["redis"]
    rs = RedisSet(tmp_path / "redis", base, secrets.token_urlsafe(24), "ivr")
    rs.start(time.monotonic() + 30)
    try:
        yield rs
    finally:
        rs.stop()
        assert rs.pids() == {name: None for name in rs.ports}, "a part of the Redis set outlived stop()"


def config(rs: RedisSet, password: str | None = None) -> RedisConfig:
    return RedisConfig(url=f"redis://127.0.0.1/{DB}", prefix=PREFIX, password=rs.password if password is None
                       else password, sentinels=tuple(rs.sentinels), master_name=rs.master_name)


def direct(rs: RedisSet, port: int) -> Store:
    """A store on one data node by its port (not through the Sentinels): what that node holds."""
    return Store.from_url(f"redis://127.0.0.1:{port}/{DB}", PREFIX, rs.password)


async def test_the_store_and_the_token_registration_reach_the_primary_through_sentinels(redis_set: RedisSet) -> None:
    rs = redis_set
    store = Store.from_config(config(rs))
    try:
        assert await store.ping()        # what the controller's _wait_for_redis asks until it is true
        token = secrets.token_urlsafe(16)
        await asyncio.to_thread(register_token_sync, None, rs.password, PREFIX, token, sentinels=rs.sentinels,
                                master_name=rs.master_name, db=DB)
        assert (await store.verify_token(token) or {}).get("role") == "admin"
        on_primary = direct(rs, rs.ports["primary"])
        try:    # it is on the primary, in the database the URL names
            assert (await on_primary.verify_token(token) or {}).get("role") == "admin"
        finally:
            await on_primary.close()

        rs.kill("sentinel1")             # one Sentinel gone: the others answer
        fresh = Store.from_config(config(rs))
        try:
            assert await fresh.ping() and (await fresh.verify_token(token) or {}).get("name") == "admin"
        finally:
            await fresh.close()
        rs.restart("sentinel1")          # it starts again from the file it rewrote and knows the primary
        assert rs.status()["sentinel1"]["primary"] == rs.ports["primary"]
    finally:
        await store.close()

    wrong = Store.from_config(config(rs, password="not-" + rs.password))
    try:
        with pytest.raises(StoreUnavailable, match="No master found"):
            await wrong.ping()
    finally:
        await wrong.close()


@dataclass
class Writes:
    acked: list[tuple[float, str, str]] = field(default_factory=list)    # (monotonic time, booking, reference)
    failed: list[tuple[float, str, str]] = field(default_factory=list)   # (monotonic time, booking, error)


async def write_until(store: Store, writes: Writes, stop: asyncio.Event) -> None:
    """A refund request every ~10 ms; acknowledged and failed ones are recorded (only StoreUnavailable may fail)."""
    i = 0
    while not stop.is_set():
        booking = str(10_000_000 + i)
        i += 1
        try:
            record = await store.refunds.create(booking, source="failover")
        except StoreUnavailable as exc:
            writes.failed.append((time.monotonic(), booking, str(exc)[:120]))
        else:
            writes.acked.append((time.monotonic(), booking, record["reference"]))
        await asyncio.sleep(0.01)


async def test_a_killed_primary_is_replaced_and_acknowledged_writes_survive(redis_set: RedisSet) -> None:
    rs = redis_set
    old, new = rs.ports["primary"], rs.ports["replica"]
    store = Store.from_config(config(rs))
    writes, stop = Writes(), asyncio.Event()
    writer = asyncio.create_task(write_until(store, writes, stop))
    try:
        await asyncio.sleep(1.5)
        killed_at = time.monotonic()
        await asyncio.to_thread(rs.kill, "primary", signal.SIGKILL)
        dead_at = time.monotonic()
        while not any(t > dead_at for t, _, _ in writes.acked):
            assert time.monotonic() - dead_at < 20, f"no write succeeded 20 s after the kill: {writes.failed[-3:]}"
            assert not writer.done(), "the writer stopped"
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.0)          # and it keeps going
        stop.set()
        await writer
        promoted = await asyncio.to_thread(rs.primary)
    finally:
        stop.set()
        await asyncio.gather(writer, return_exceptions=True)
        await store.close()
    assert promoted == new, f"Sentinel names {promoted} as the primary, not the replica {new}"

    before = [w for w in writes.acked if w[0] <= killed_at]
    after = [w for w in writes.acked if w[0] > dead_at]
    first_after = after[0][0]
    gap = first_after - max(t for t, _, _ in before)
    failed_after_first_success = [f for f in writes.failed if f[0] > first_after]
    assert not failed_after_first_success, f"writes failed after the new primary took them: {failed_after_first_success}"
    assert writes.failed, "no write failed while there was no primary: was the primary really killed?"

    on_new = direct(rs, new)
    try:
        lost = []
        for t, booking, ref in writes.acked:
            got = await on_new.refunds.by_booking(booking)
            if not got or got.get("reference") != ref:
                lost.append((t, booking))
        applied_anyway = [b for _, b, _ in writes.failed if await on_new.refunds.by_booking(b)]
        last_second = [w for w in before if w[0] > killed_at - 1.0]
        lost_after = [b for t, b in lost if t > dead_at]
        figures = {"writes_acked": len(writes.acked), "acked_before_kill": len(before), "acked_after": len(after),
                   "failed_in_gap": len(writes.failed),
                   "failed_but_applied": len(applied_anyway), "gap_s": round(gap, 3),
                   "kill_to_first_write_s": round(first_after - killed_at, 3), "acked_but_lost": len(lost),
                   "acked_in_last_second_before_kill": len(last_second)}
        print("redis failover:", json.dumps(figures))
        assert not lost_after, f"writes acknowledged by the new primary are missing on it: {lost_after}"
        # the loss is bounded by the replication lag (sub-millisecond on loopback): at most the last second's writes
        assert len(lost) <= len(last_second), figures
        assert len(lost) <= 5, figures
        assert gap < 10, figures          # down-after 1 s + the Sentinels' vote and the promotion

        # the old primary, started again, follows the new one and catches up (its unreplicated tail is dropped)
        await asyncio.to_thread(rs.restart, "primary")
        status = await asyncio.to_thread(rs.status)
        assert status["primary"]["role"] == "replica" and status["primary"]["link"] == "up", status
        assert status["current_primary"] == new, status
        on_old = direct(rs, old)
        try:
            last_booking = after[-1][1]
            for _ in range(100):
                if await on_old.refunds.by_booking(last_booking) and \
                        await on_old.redis.dbsize() == await on_new.redis.dbsize():
                    break
                await asyncio.sleep(0.05)
            assert (await on_old.refunds.by_booking(last_booking) or {}).get("reference") == after[-1][2]
            assert await on_old.redis.dbsize() == await on_new.redis.dbsize()
        finally:
            await on_old.close()
    finally:
        await on_new.close()
    wait_for(lambda: all(p is not None for p in rs.pids().values()), 1, what="all five parts running")
