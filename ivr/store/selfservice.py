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
# the decisions an approver may take from each status (rejected may be reversed on appeal; paid is final)
REFUND_TRANSITIONS = {"received": ("approved", "rejected"), "approved": ("paid", "rejected"),
                      "rejected": ("approved",), "paid": ()}
_AMOUNT = re.compile(r"^[0-9]{1,9}(\.[0-9]{1,2})?$")
GROUP_RE = re.compile(r"^[a-z0-9_-]{1,32}$")
REFUND_REF_START = 1_000_000
_DIGITS = re.compile(r"^[0-9]{1,20}$")


def _check_digits(name: str, value: str, lo: int = 1, hi: int = 20) -> str:
    if not _DIGITS.fullmatch(value or "") or not lo <= len(value) <= hi:
        raise ValueError(f"{name}: expected {lo}-{hi} digits, got {value!r}")
    return value


class RefundStore:
    """Refund requests by reference and by booking number."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.redis, self.keys = client, keys

    async def create(self, booking: str, *, caller: str = "", lang: str = "en", source: str = "ivr",
                     call_uid: str = "", amount: str = "", group: str = "") -> dict[str, Any]:
        """Create a refund request (status ``received``); returns it with its new reference."""
        _check_digits("booking", booking, 4, 12)
        if caller:
            _check_digits("caller", caller, 3, 20)
        if amount and not _AMOUNT.fullmatch(amount):
            raise ValueError(f"amount: expected a number like 120 or 120.50, got {amount!r}")
        if group and not GROUP_RE.fullmatch(group):
            raise ValueError(f"group: lower-case letters, digits, _ and - (at most 32), got {group!r}")
        n = await self.redis.incr(self.keys.refund_seq)
        ref = str(REFUND_REF_START + n)
        now = time.time()
        record = {"reference": ref, "booking": booking, "status": "received", "caller": caller,
                  "lang": lang, "source": source, "call_uid": call_uid, "amount": amount, "group": group,
                  "created": now, "updated": now,
                  "history": json.dumps([{"at": now, "status": "received", "by": source}])}
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(self.keys.refund(ref), mapping={k: str(v) for k, v in record.items()})
            p.zadd(self.keys.refunds_in("received"), {ref: now})
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

    async def set_status(self, ref: str, status: str, by: str, note: str = "",
                         check: bool = True) -> dict[str, Any]:
        """Decide a request: ``status`` must be a next step from its current one (REFUND_TRANSITIONS) unless
        ``check`` is off. The history keeps who, when and the note; the status index moves in the same
        MULTI/EXEC. Raises KeyError (no such request) or ValueError (naming what is not allowed)."""
        if status not in REFUND_STATUSES:
            raise ValueError(f"status: expected one of {', '.join(REFUND_STATUSES)}, got {status!r}")
        if len(note) > 500 or any(c in note for c in "\r\n\x00"):
            raise ValueError("note: at most 500 characters on one line")
        rec = await self.get(ref)
        if rec is None:
            raise KeyError(ref)
        old = rec.get("status", "received")
        if check and status not in REFUND_TRANSITIONS.get(old, ()):
            allowed = ", ".join(REFUND_TRANSITIONS.get(old, ())) or "nothing (it is final)"
            raise ValueError(f"refund {ref} is {old}: it can become {allowed}, not {status}")
        now = time.time()
        entry: dict[str, Any] = {"at": now, "status": status, "by": by, "from": old}
        if note:
            entry["note"] = note
        history = rec["history"] + [entry]
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(self.keys.refund(ref), mapping={"status": status, "updated": str(now),
                                                    "history": json.dumps(history)})
            p.zrem(self.keys.refunds_in(old), ref)
            p.zadd(self.keys.refunds_in(status), {ref: float(rec.get("created") or now)})
            p.xadd(self.keys.refunds, {"event": "status", "reference": ref, "status": status, "from": old, "by": by},
                   maxlen=1_000_000, approximate=True)
            await p.execute()
        rec.update(status=status, updated=now, history=history)
        return rec

    async def set_fields(self, ref: str, **fields: str) -> None:
        await self.redis.hset(self.keys.refund(ref), mapping=fields)

    async def list(self, status: str, *, count: int = 100, offset: int = 0, group: str = "") -> dict[str, Any]:
        """Requests in one status, oldest first (the order approvers work in); ``total`` counts them all."""
        if status not in REFUND_STATUSES:
            raise ValueError(f"status: expected one of {', '.join(REFUND_STATUSES)}, got {status!r}")
        key = self.keys.refunds_in(status)
        total = await self.redis.zcard(key)
        refs = await self.redis.zrange(key, offset, offset + max(count * (10 if group else 1), count) - 1)
        async with self.redis.pipeline(transaction=False) as p:
            for ref in refs:
                p.hgetall(self.keys.refund(ref))
            raws = await p.execute()
        out = []
        for raw in raws:
            if raw and (not group or raw.get("group") == group):
                rec: dict[str, Any] = dict(raw)
                rec["history"] = json.loads(rec.get("history") or "[]")
                out.append(rec)
        return {"status": status, "total": total, "offset": offset, "refunds": out[:count]}

    async def counts(self) -> dict[str, int]:
        async with self.redis.pipeline(transaction=False) as p:
            for st in REFUND_STATUSES:
                p.zcard(self.keys.refunds_in(st))
            return dict(zip(REFUND_STATUSES, await p.execute()))


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

    async def pending_count(self) -> int:
        """How many callbacks wait (one ZCARD, whatever their number)."""
        return int(await self.redis.zcard(self.keys.callbacks_pending))

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
