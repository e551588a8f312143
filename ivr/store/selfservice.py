"""Refund requests, callback requests and survey answers in Redis.

These are the records the IVR creates by itself (self-service): a refund
request with a reference the caller hears, a callback that keeps the caller's
place (ordered by when they first joined), a post-call survey score. Writes
that must not half-happen use MULTI/EXEC.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import redis.asyncio as aioredis

from .keys import Keys

REFUND_STATUSES = ("received", "approved", "rejected", "paid")
REFUND_REF_START = 1_000_000
_DIGITS = re.compile(r"^[0-9]{1,20}$")


def _check_digits(name: str, value: str, lo: int = 1, hi: int = 20) -> str:
    if not _DIGITS.match(value or "") or not lo <= len(value) <= hi:
        raise ValueError(f"{name}: expected {lo}-{hi} digits, got {value!r}")
    return value


class RefundStore:
    """Refund requests by reference and by booking number."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.redis, self.keys = client, keys

    async def create(self, booking: str, *, caller: str = "", lang: str = "en", source: str = "ivr",
                     call_uid: str = "", amount: str = "") -> dict[str, Any]:
        """Create a refund request (status ``received``); returns it with its new reference."""
        _check_digits("booking", booking, 4, 12)
        n = await self.redis.incr(self.keys.refund_seq)
        ref = str(REFUND_REF_START + n)
        now = time.time()
        record = {"reference": ref, "booking": booking, "status": "received", "caller": caller,
                  "lang": lang, "source": source, "call_uid": call_uid, "amount": amount,
                  "created": now, "updated": now,
                  "history": json.dumps([{"at": now, "status": "received", "by": source}])}
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(self.keys.refund(ref), mapping={k: str(v) for k, v in record.items()})
            p.set(self.keys.refund_by_booking(booking), ref)
            p.xadd(self.keys.refunds, {"event": "created", "reference": ref, "booking": booking,
                                       "source": source}, maxlen=1_000_000, approximate=True)
            await p.execute()
        return record

    async def get(self, ref: str) -> dict[str, Any] | None:
        raw = await self.redis.hgetall(self.keys.refund(ref))
        if not raw:
            return None
        rec: dict[str, Any] = dict(raw)
        rec["history"] = json.loads(rec.get("history") or "[]")
        return rec

    async def by_booking(self, booking: str) -> dict[str, Any] | None:
        ref = await self.redis.get(self.keys.refund_by_booking(booking))
        return await self.get(ref) if ref else None

    async def set_status(self, ref: str, status: str, by: str) -> dict[str, Any]:
        if status not in REFUND_STATUSES:
            raise ValueError(f"status: expected one of {', '.join(REFUND_STATUSES)}, got {status!r}")
        rec = await self.get(ref)
        if rec is None:
            raise KeyError(ref)
        now = time.time()
        history = rec["history"] + [{"at": now, "status": status, "by": by}]
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(self.keys.refund(ref), mapping={"status": status, "updated": str(now),
                                                    "history": json.dumps(history)})
            p.xadd(self.keys.refunds, {"event": "status", "reference": ref, "status": status, "by": by},
                   maxlen=1_000_000, approximate=True)
            await p.execute()
        rec.update(status=status, updated=now, history=history)
        return rec


class CallbackStore:
    """Callback requests; pending ones are ordered by the caller's original place in line."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.redis, self.keys = client, keys

    async def request(self, number: str, *, queue: str, lang: str = "en", call_uid: str = "",
                      joined_at: float | None = None, caller: str = "") -> dict[str, Any]:
        _check_digits("number", number, 3, 20)
        cb_id = str(await self.redis.incr(self.keys.callback_seq))
        now = time.time()
        place = joined_at or now
        record = {"id": cb_id, "number": number, "queue": queue, "lang": lang, "call_uid": call_uid,
                  "caller": caller, "requested_at": now, "place": place, "status": "pending", "attempts": 0}
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(self.keys.callback(cb_id), mapping={k: str(v) for k, v in record.items()})
            p.zadd(self.keys.callbacks_pending, {cb_id: place})
            await p.execute()
        return record

    async def get(self, cb_id: str) -> dict[str, Any] | None:
        raw = await self.redis.hgetall(self.keys.callback(cb_id))
        return dict(raw) if raw else None

    async def claim(self, cb_id: str) -> dict[str, Any] | None:
        """Take a pending callback for dialling; None if another node (or tick) already took it."""
        if not await self.redis.zrem(self.keys.callbacks_pending, cb_id):
            return None
        await self.redis.hset(self.keys.callback(cb_id), mapping={"status": "dialling",
                                                                    "dialled_at": str(time.time())})
        return await self.get(cb_id)

    async def finish(self, cb_id: str, outcome: str, *, retry_at: float | None = None) -> None:
        """Record an attempt: ``retry_at`` puts it back in line (same place), else it is closed."""
        rec = await self.get(cb_id) or {}
        attempts = int(rec.get("attempts") or 0) + 1
        async with self.redis.pipeline(transaction=True) as p:
            fields = {"attempts": str(attempts), "last_outcome": outcome, "updated": str(time.time())}
            if retry_at is not None:
                fields.update(status="pending", not_before=str(retry_at))
                p.zadd(self.keys.callbacks_pending, {cb_id: float(rec.get("place") or time.time())})
            else:
                fields.update(status="done" if outcome == "answered" else "failed")
            p.hset(self.keys.callback(cb_id), mapping=fields)
            await p.execute()

    async def postpone(self, cb_id: str, until: float, why: str) -> None:
        """Put a claimed callback back in line (same place) without counting an attempt."""
        rec = await self.get(cb_id) or {}
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(self.keys.callback(cb_id), mapping={"status": "pending", "not_before": str(until),
                                                        "last_outcome": why, "updated": str(time.time())})
            p.zadd(self.keys.callbacks_pending, {cb_id: float(rec.get("place") or time.time())})
            await p.execute()

    async def close(self, cb_id: str, status: str, why: str) -> None:
        """Close a claimed callback without dialling it (e.g. ``reached``: the caller got through meanwhile)."""
        await self.redis.hset(self.keys.callback(cb_id), mapping={"status": status, "last_outcome": why,
                                                                    "updated": str(time.time())})

    async def mark_call(self, call_uid: str, cb_id: str, ttl: int = 30 * 86400) -> None:
        """Tag the call record of an answered callback (reports keep it apart from inbound calls)."""
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(self.keys.call(call_uid), mapping={"kind": "callback", "callback_id": cb_id, "menu": "callback"})
            p.expire(self.keys.call(call_uid), ttl)
            p.hset(self.keys.callback(cb_id), "call_uid_back", call_uid)
            await p.execute()

    async def pending(self, limit: int = 100) -> list[dict[str, Any]]:
        ids = await self.redis.zrange(self.keys.callbacks_pending, 0, limit - 1)
        out = []
        for cb_id in ids:
            rec = await self.get(cb_id)
            if rec:
                out.append(rec)
        return out


class SurveyStore:
    """Post-call satisfaction scores (1-5)."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.redis, self.keys = client, keys

    async def record(self, call_uid: str, score: int, *, menu: str = "", lang: str = "", queue: str = "",
                     agent: str = "") -> None:
        if not 1 <= score <= 5:
            raise ValueError(f"score: expected 1-5, got {score}")
        async with self.redis.pipeline(transaction=True) as p:
            p.xadd(self.keys.surveys, {"uid": call_uid, "score": str(score), "menu": menu, "lang": lang,
                                       "queue": queue, "agent": agent, "at": str(time.time())},
                   maxlen=1_000_000, approximate=True)
            p.hset(self.keys.call(call_uid), mapping={"survey": str(score)})
            await p.execute()

    async def recent(self, count: int = 100) -> list[dict[str, Any]]:
        return [dict(f, id=i) for i, f in await self.redis.xrevrange(self.keys.surveys, count=count)]
