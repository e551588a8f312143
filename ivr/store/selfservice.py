"""Refund requests, callback requests and survey answers in Redis.

These are the records the IVR creates by itself (self-service): a refund
request with a reference the caller hears, a callback that keeps the caller's
place (ordered by when they first joined), a post-call survey score. Writes
that must not half-happen use MULTI/EXEC or one Lua script.

A callback being dialled is never only in memory: the claim moves it from the
pending line to a lease (expiry time) in one script, and every end of the
attempt (answered, retry, postponed, closed) takes the lease off in the same
script that writes the outcome. A claim whose holder died (SIGKILL, a stop in
the middle of a dial, a Redis error on the way out) is found again: its lease
runs out, or it carries this node's name without this process holding it.
Recovery puts it back in line at the caller's original place unless its call
is still up, and a late outcome from a holder that lost its lease is ignored,
so two nodes never dial the same callback at once.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any, Collection

import redis.asyncio as aioredis

from .callrecord import stage_call_fields
from .errors import Translating
from .keys import Keys
from .leader import run_fenced, shifted

log = logging.getLogger(__name__)

REFUND_STATUSES = ("received", "approved", "rejected", "paid")
# the decisions an approver may take from each status (rejected may be reversed on appeal; paid is final)
REFUND_TRANSITIONS = {"received": ("approved", "rejected"), "approved": ("paid", "rejected"),
                      "rejected": ("approved",), "paid": ()}
_AMOUNT = re.compile(r"^[0-9]{1,9}(\.[0-9]{1,2})?$")
GROUP_RE = re.compile(r"^[a-z0-9_-]{1,32}$")
REFUND_REF_START = 1_000_000
_DIGITS = re.compile(r"^[0-9]{1,20}$")
LEASE_S = 120.0   # a claim for dialling; longer than a whole attempt (ring timeout + the OriginateResponse wait)

# KEYS: pending, leases, the callback; ARGV: id, lease end, token, node, now. A pending id with no record
# (damaged data) is dropped, not claimed.
CLAIM_LUA = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return false end
if redis.call('EXISTS', KEYS[3]) == 0 then return false end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[3], 'status', 'dialling', 'dialled_at', ARGV[5], 'lease', ARGV[3], 'lease_node', ARGV[4])
return redis.call('HGETALL', KEYS[3])
"""
CLAIM_FENCED_BODY = shifted(CLAIM_LUA)   # the same claim by the balancing leader, after the fence
# KEYS: the callback, pending, leases; ARGV: id, lease token ('' = whoever holds it), '1' back in line,
# '1' count an attempt, now, then field/value pairs. Returns the attempts so far (at least 1 so a caller
# can tell it from) 0: the lease is no longer that token's (nothing written), -1: no such callback.
SETTLE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return -1
end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[1], 'lease') ~= ARGV[2] then return 0 end
local attempts = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0') or 0
if ARGV[4] == '1' then attempts = attempts + 1 end
if #ARGV > 5 then redis.call('HSET', KEYS[1], unpack(ARGV, 6)) end
redis.call('HSET', KEYS[1], 'attempts', attempts)
redis.call('HDEL', KEYS[1], 'lease', 'lease_node')
redis.call('ZREM', KEYS[3], ARGV[1])
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[2], tonumber(redis.call('HGET', KEYS[1], 'place') or '') or tonumber(ARGV[5]), ARGV[1])
end
return math.max(attempts, 1)
"""
# KEYS: leases, the callback; ARGV: id, token, new lease end
RENEW_LUA = """
if redis.call('HGET', KEYS[2], 'lease') ~= ARGV[2] then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""


def _check_digits(name: str, value: str, lo: int = 1, hi: int = 20) -> str:
    if not _DIGITS.fullmatch(value or "") or not lo <= len(value) <= hi:
        raise ValueError(f"{name}: expected {lo}-{hi} digits, got {value!r}")
    return value


class RefundStore(Translating):
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


class CallbackStore(Translating):
    """Callback requests; pending ones are ordered by the caller's original place in line.

    A callback taken for dialling moves from ``pending`` to ``leases`` in one step (CLAIM_LUA) and comes
    off ``leases`` when the attempt is settled (``finish``, ``postpone``, ``close``). Claims nobody holds
    any more are found by ``orphans`` and settled by ``recover`` (see the module docstring).
    """

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.redis, self.keys = client, keys
        self.held: dict[str, str] = {}     # callback id -> lease token of the claims this process is dialling
        self._scripts: dict[str, Any] = {}

    def _script(self, lua: str) -> Any:
        if lua not in self._scripts:    # registered on first use (redis-py reloads it after SCRIPT FLUSH)
            self._scripts[lua] = self.redis.register_script(lua)
        return self._scripts[lua]

    async def request(self, number: str, *, queue: str, lang: str = "en", call_uid: str = "",
                      joined_at: float | None = None, caller: str = "",
                      promise_s: float | None = None) -> dict[str, Any]:
        """Store a callback request at the caller's place (``joined_at``). With ``promise_s`` (what the caller
        was told: "within N minutes") the record keeps it and its ``due`` time (epoch seconds)."""
        _check_digits("number", number, 3, 20)
        if promise_s is not None and not 0 < promise_s <= 7 * 86400:
            raise ValueError(f"promise_s: expected seconds above 0, got {promise_s!r}")
        cb_id = str(await self.redis.incr(self.keys.callback_seq))
        now = time.time()
        place = joined_at or now
        record: dict[str, Any] = {"id": cb_id, "number": number, "queue": queue, "lang": lang, "call_uid": call_uid,
                                  "caller": caller, "requested_at": now, "place": place, "status": "pending",
                                  "attempts": 0}
        if promise_s is not None:
            record.update(promise_s=round(promise_s), due=round(now + promise_s, 3))
        async with self.redis.pipeline(transaction=True) as p:
            p.hset(self.keys.callback(cb_id), mapping={k: str(v) for k, v in record.items()})
            p.zadd(self.keys.callbacks_pending, {cb_id: place})
            await p.execute()
        return record

    async def get(self, cb_id: str) -> dict[str, Any] | None:
        raw = await self.redis.hgetall(self.keys.callback(cb_id))
        return dict(raw) if raw else None

    async def claim(self, cb_id: str, *, node: str = "", lease_s: float = LEASE_S,
                    fence: str | None = None) -> dict[str, Any] | None:
        """Take a pending callback for dialling under a lease of ``lease_s``; None if another node (or tick)
        already took it. The record comes back with its ``lease`` token. With ``fence`` (the balancing
        leader's holder string, ivr/store/leader.py) the claim is made only while that lease holds (else
        ``Fenced``)."""
        token = uuid.uuid4().hex
        now = time.time()
        keys = [self.keys.callbacks_pending, self.keys.callbacks_leases, self.keys.callback(cb_id)]
        args = [cb_id, now + lease_s, token, node, now]
        if fence is not None:
            raw = await run_fenced(self.redis, self.keys.leader, CLAIM_FENCED_BODY, fence, keys, args)
        else:
            raw = await self._script(CLAIM_LUA)(keys=keys, args=args)
        if not raw:
            return None
        self.held[cb_id] = token
        return dict(zip(raw[::2], raw[1::2]))

    async def _settle_claim(self, cb_id: str, *, requeue: bool, count: bool, token: str | None = None,
                            **fields: str) -> int:
        """Write the end of a claim; the lease goes, the callback back in line at its place if ``requeue``.
        Returns the attempts so far, 0 when the claim was no longer ours (recovered meanwhile: nothing
        written), -1 when there is no such callback."""
        if token is None:
            token = self.held.pop(cb_id, "")
        flat = [x for kv in fields.items() for x in kv]
        keys = [self.keys.callback(cb_id), self.keys.callbacks_pending, self.keys.callbacks_leases]
        args = [cb_id, token, "1" if requeue else "0", "1" if count else "0", time.time(), *flat]
        return int(await self._script(SETTLE_LUA)(keys=keys, args=args))

    async def finish(self, cb_id: str, outcome: str, *, retry_at: float | None = None,
                     extra: dict[str, str] | None = None) -> None:
        """Record an attempt: ``retry_at`` puts it back in line (same place), else it is closed. ``extra``
        fields are written with it (``made_at`` and ``kept`` of a callback made)."""
        fields = {**(extra or {}), "last_outcome": outcome, "updated": str(time.time())}
        if retry_at is not None:
            fields.update(status="pending", not_before=str(retry_at))
        else:
            fields.update(status="done" if outcome == "answered" else "failed")
        if not await self._settle_claim(cb_id, requeue=retry_at is not None, count=True, **fields):
            log.warning("callback %s: late outcome %s ignored (its claim was recovered meanwhile)", cb_id, outcome)

    async def postpone(self, cb_id: str, until: float, why: str) -> None:
        """Put a claimed callback back in line (same place) without counting an attempt."""
        await self._settle_claim(cb_id, requeue=True, count=False, status="pending", not_before=str(until),
                                 last_outcome=why, updated=str(time.time()))

    async def close(self, cb_id: str, status: str, why: str) -> None:
        """Close a claimed callback without dialling it (e.g. ``reached``: the caller got through meanwhile)."""
        await self._settle_claim(cb_id, requeue=False, count=False, status=status, last_outcome=why,
                                 updated=str(time.time()))

    # ------------------------------------------------------------ leases
    async def orphans(self, node: str, now: float | None = None) -> dict[str, str]:
        """Claims nobody is dialling any more (id -> lease token): leases that ran out, and ``node``'s own
        that this process does not hold (left by an earlier run of the node, or by a dial that failed)."""
        now = time.time() if now is None else now
        leases = await self.redis.zrange(self.keys.callbacks_leases, 0, -1, withscores=True)
        if not leases:
            return {}
        async with self.redis.pipeline(transaction=False) as p:
            for cb_id, _ in leases:
                p.hmget(self.keys.callback(cb_id), "lease", "lease_node")
            holders = await p.execute()
        out = {}
        for (cb_id, until), (token, holder) in zip(leases, holders):
            mine = bool(token) and self.held.get(cb_id) == token
            if until <= now or (holder == node and not mine):
                out[cb_id] = token or ""
        return out

    async def renew(self, cb_id: str, token: str, lease_s: float = LEASE_S) -> bool:
        """Extend a lease (only while ``token`` still holds it)."""
        keys = [self.keys.callbacks_leases, self.keys.callback(cb_id)]
        return bool(await self._script(RENEW_LUA)(keys=keys, args=[cb_id, token, time.time() + lease_s]))

    async def recover(self, orphans: dict[str, str], live: Collection[str],
                      lease_s: float = LEASE_S) -> dict[str, str]:
        """Settle orphaned claims (from ``orphans``): one whose call is still up (its id in ``live``) keeps
        its lease a while longer (``still_live``); the others go back in line at their place, to be dialled
        again at once, without counting an attempt (whether it rang is not known): ``requeued``. A claim
        its holder settled meanwhile is left alone (``settled``); the holder's own outcome coming after a
        requeue is ignored (its token no longer holds the callback)."""
        out = {}
        for cb_id, token in orphans.items():
            if cb_id in live:
                done = await self.renew(cb_id, token, lease_s)
                out[cb_id] = "still_live" if done else "settled"
                continue
            now = time.time()
            attempts = await self._settle_claim(cb_id, requeue=True, count=False, token=token, status="pending",
                                                not_before=str(now), last_outcome="unknown", updated=str(now),
                                                recovered_at=str(now))
            out[cb_id] = "requeued" if attempts > 0 else "settled"
        return out

    async def mark_call(self, call_uid: str, cb_id: str, ttl: int = 30 * 86400, kept: str = "") -> None:
        """Tag the call record of an answered callback (reports keep it apart from inbound calls); ``kept``
        (yes, no, none: no promise was made) is whether it was made within its promise."""
        fields = {"kind": "callback", "callback_id": cb_id, "menu": "callback"}
        if kept:
            fields["callback_kept"] = kept
        async with self.redis.pipeline(transaction=True) as p:
            stage_call_fields(p, self.keys, call_uid, fields, ttl)
            p.hset(self.keys.callback(cb_id), "call_uid_back", call_uid)
            await p.execute()

    async def pending_count(self) -> int:
        """How many callbacks wait (one ZCARD, whatever their number)."""
        return int(await self.redis.zcard(self.keys.callbacks_pending))

    async def pending_by_queue(self, limit: int = 5000) -> dict[str, int]:
        """How many callbacks wait for each queue (the oldest ``limit`` places; one pipeline)."""
        ids = await self.redis.zrange(self.keys.callbacks_pending, 0, limit - 1)
        if not ids:
            return {}
        async with self.redis.pipeline(transaction=False) as p:
            for cb_id in ids:
                p.hget(self.keys.callback(cb_id), "queue")
            queues = await p.execute()
        out: dict[str, int] = {}
        for q in queues:
            if q is not None:
                out[q] = out.get(q, 0) + 1
        return out

    async def pending(self, limit: int = 100) -> list[dict[str, Any]]:
        ids = await self.redis.zrange(self.keys.callbacks_pending, 0, limit - 1)
        out = []
        for cb_id in ids:
            rec = await self.get(cb_id)
            if rec:
                out.append(rec)
        return out


class SurveyStore(Translating):
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
            stage_call_fields(p, self.keys, call_uid, {"survey": str(score)})
            await p.execute()

    async def recent(self, count: int = 100) -> list[dict[str, Any]]:
        return [dict(f, id=i) for i, f in await self.redis.xrevrange(self.keys.surveys, count=count)]
