"""Call records: one per caller, built from the IVR (AGI) and queue (AMI) events.

The menu engine writes what happened in the IVR; AMI events add the queue, the
wait, the agent and the talk time; the caller's Hangup closes the record and
appends it, once, to the ``calls`` stream. All Redis writes go through one
ordered worker so the events of a call are stored in the order they happened,
and the event handler itself never waits on Redis; the worker writes what has
gathered in one round trip, so a busy line costs Redis little per call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Mapping


from ..app.aiotasks import drain_then_stop
from ..core import names as ev
from ..store.errors import StoreUnavailable
from ..store.redis_store import Store

log = logging.getLogger(__name__)

# a record write: ("set" | "setnx", uid, fields) or ("finish", uid, (ended_at, hangup cause, late))
Op = tuple[str, str, Any]
LATE_AGENT_COMPLETE_S = 3.0


def chan_vars(e: Mapping[str, Any], key: str = "ChanVariable") -> dict[str, str]:
    """The ``channelvars`` of an event (one header per variable, ``NAME=value``; repeated headers are a list)."""
    raw = e.get(key) or []
    out = {}
    for item in [raw] if isinstance(raw, str) else raw:
        name, _, value = str(item).partition("=")
        if value:
            out[name] = value
    return out


def outcome_of(record: Mapping[str, Any]) -> str:
    """The final outcome of a call from its record fields."""
    if record.get("answered_at"):
        return "answered"
    if record.get("abandoned"):
        return "abandoned"
    if record.get("queue"):
        return "left_queue"
    ivr = record.get("ivr_outcome")
    if ivr and ivr != "queued":
        return str(ivr)
    if record.get("inbound") and not record.get("menu"):
        return "before_ivr"      # hung up before the IVR started (or while it was being reached)
    return "ivr_hangup"


class CallRecorder:
    """Tracks calls in progress and writes their records to Redis.

    Writes are operations (``("set" | "setnx" | "finish", uid, payload)``) queued in the order they
    happen. One worker takes what is queued (waiting ``linger`` seconds for a burst to gather when the
    queue is short) and applies it in one pipeline round trip, plus one more for the records that end;
    the calls of a busy line share round trips instead of paying about five each.
    """

    def __init__(self, store: Store, *, finalize_delay: float = 1.0, max_backlog: int = 100_000,
                 late_complete_delay: float = LATE_AGENT_COMPLETE_S, inbound: frozenset[str] = frozenset(),
                 inbound_context: str = "from-trunk", linger: float = 0.1, batch_max: int = 256,
                 on_finished: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.store = store
        # the numbers callers dial: a new channel in ``inbound_context`` for one of them is a caller, recorded
        # from its first moment (a call that ends before the IVR starts still leaves a record)
        self.inbound = inbound
        self.inbound_context = inbound_context
        self.finalize_delay = finalize_delay
        self.late_complete_delay = late_complete_delay
        self.linger = linger
        self.batch_max = batch_max
        self._active: dict[str, float] = {}
        self._timers: dict[str, tuple[asyncio.TimerHandle, Op]] = {}
        self._jobs: asyncio.Queue[Op] = asyncio.Queue(max_backlog)
        self._carry: Op | None = None
        self._unwritten = 0        # submitted, not yet written (or given up)
        self._worker: asyncio.Task[None] | None = None
        self.records_written = 0
        self.write_errors = 0
        self.retries = 0
        self.dropped = 0
        self.batches = 0
        self.on_finished = on_finished   # told each finished call's record

    async def start(self) -> None:
        self._worker = asyncio.create_task(self._run(), name="call-recorder")

    async def stop(self, grace: float = 5.0) -> None:
        """Flush what is queued (bounded by ``grace``), then stop."""
        if self._worker is None:
            return
        for handle, op in list(self._timers.values()):  # calls that ended just now: write them too
            handle.cancel()
            self._submit(op)
        self._timers.clear()
        await drain_then_stop(self._jobs, self._worker, grace, "call recorder writes")
        self._worker = None

    @property
    def active(self) -> int:
        return len(self._active)

    @property
    def pending(self) -> int:
        """Record writes not in Redis yet: queued, being written, or a finish waiting out its delay after a
        Hangup (for the events that trail it)."""
        return self._unwritten + len(self._timers)

    def _submit(self, op: Op) -> None:
        try:
            self._jobs.put_nowait(op)
            self._unwritten += 1
        except asyncio.QueueFull:
            self.dropped += 1
            log.error("call recorder backlog full: a record write was dropped (call %s)", op[1])

    async def _run(self) -> None:
        while True:
            batch = [self._carry] if self._carry is not None else [await self._jobs.get()]
            self._carry = None
            try:
                if self.linger > 0 and self._jobs.qsize() < self.batch_max:
                    await asyncio.sleep(self.linger)    # a burst of events gathers meanwhile
                ending = {op[1] for op in batch if op[0] == "finish"}
                while len(batch) < self.batch_max and not self._jobs.empty():
                    op = self._jobs.get_nowait()
                    if op[1] in ending:             # a write after the call's finish waits for the next batch
                        self._carry = op
                        break
                    batch.append(op)
                    if op[0] == "finish":
                        ending.add(op[1])
                await self._write(batch)
            except Exception:
                self.write_errors += 1
                log.exception("call recorder: a batch of %d writes failed", len(batch))
            finally:
                for _ in batch:
                    self._jobs.task_done()
                self._unwritten -= len(batch)

    async def _retrying(self, what: Callable[[], Awaitable[list[Any]]]) -> list[Any]:
        """Run one round trip until it gets through. While Redis is unreachable it is retried (back-off up
        to 5 s) and the writes behind it wait in order, in memory: a Redis restart delays records, it loses
        none."""
        delay, since = 0.25, 0.0
        while True:
            try:
                result = await what()
                if since:
                    log.info("call recorder: Redis is back after %.1fs; writing %d queued record updates",
                             time.monotonic() - since, self._jobs.qsize() + 1)
                return result
            except (StoreUnavailable, ConnectionError, OSError, asyncio.TimeoutError) as exc:
                if not since:
                    since = time.monotonic()
                    log.warning("call recorder: Redis unreachable (%s): record updates are kept in memory "
                                "and written when it is back", exc)
                self.retries += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _write(self, batch: list[Op]) -> None:
        self.batches += 1
        ops = [("get", uid, None) if kind == "finish" else (kind, uid, payload) for kind, uid, payload in batch]
        results = await self._retrying(lambda: self.store.call_batch(ops))
        finals: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        for (kind, uid, payload), result in zip(batch, results):
            if isinstance(result, Exception):
                self.write_errors += 1
                log.error("call %s: record write (%s) refused by Redis: %s", uid, kind, result)
            elif kind == "finish":
                final = self._final(uid, result, *payload)
                if final is not None:
                    finals.append((uid, final, result))
        if not finals:
            return
        done = await self._retrying(lambda: self.store.call_finish_many([(uid, f) for uid, f, _ in finals]))
        for (uid, final, record), merged in zip(finals, done):
            if isinstance(merged, Exception):
                self.write_errors += 1
                log.error("call %s: record not finished, Redis refused: %s", uid, merged)
                continue
            self.records_written += 1
            log.info("call %s: record written (outcome %s, queue %s, wait %s, talk %s)", uid,
                     final["outcome"], record.get("queue", "-"), record.get("wait", "-"), record.get("talk", "-"))
            if self.on_finished is not None:
                try:
                    self.on_finished(merged)
                except Exception:
                    log.exception("call %s: on_finished hook failed", uid)

    # ------------------------------------------------------------ from the IVR
    def track(self, uid: str) -> None:
        self._active.setdefault(uid, time.time())

    async def save(self, uid: str, fields: dict[str, Any]) -> None:
        self._submit(("set", uid, fields))

    def adopt(self, uids: list[str]) -> None:
        """After a resync: calls already waiting in queues are tracked again."""
        for uid in uids:
            self.track(uid)

    def reconcile(self, live: set[str], before: float) -> int:
        """After a resync: tracked calls whose channel is gone ended while AMI was away (their Hangup was
        never seen, e.g. Asterisk restarted): write their records now. Only calls tracked ``before`` the
        channel list was asked for are judged (a call that began since is not in it). Returns how many."""
        gone = [uid for uid, since in self._active.items() if uid not in live and since < before]
        now = round(time.time(), 3)
        for uid in gone:
            self._active.pop(uid, None)
            self._submit(("finish", uid, (now, "ended while AMI was disconnected", False)))
        if gone:
            log.warning("call recorder: %d call(s) ended while AMI was disconnected; records written now", len(gone))
        return len(gone)

    # --------------------------------------------------------- from AMI events
    def on_event(self, e: Mapping[str, Any]) -> None:
        name = e.get("Event")
        uid = e.get("Uniqueid", "")
        if not uid:
            return
        now = round(time.time(), 3)
        if name == ev.NEWCHANNEL and e.get("Context") == self.inbound_context and e.get("Exten") in self.inbound:
            self.track(uid)
            self._submit(("setnx", uid, {"caller": e.get("CallerIDNum", ""), "channel": e.get("Channel", ""),
                                         "started_at": now, "inbound": 1, "dialled": e.get("Exten", "")}))
        elif name == ev.QUEUE_CALLER_JOIN:
            self.track(uid)
            self._submit(("setnx", uid, {"queue": e.get("Queue", ""), "joined_at": now,
                                         "caller": e.get("CallerIDNum", "")}))
        elif uid not in self._active:
            return
        elif name == ev.AGENT_CONNECT:
            fields = {"answered_at": now, "wait": e.get("HoldTime", ""), "ring": e.get("RingTime", ""),
                      "agent": e.get("MemberName") or e.get("Interface", ""), "queue": e.get("Queue", "")}
            shown = chan_vars(e, "DestChanVariable").get("IVR_ESCALATED_FROM")
            if shown:   # the agent's channel carries the self-service context (manager.conf channelvars)
                fields["agent_context"] = shown
            self._submit(("set", uid, fields))
        elif name == ev.AGENT_COMPLETE:
            self._submit(("set", uid, {"talk": e.get("TalkTime", ""), "ended_by": e.get("Reason", "")}))
        elif name == ev.QUEUE_CALLER_ABANDON:
            self._submit(("set", uid, {"abandoned": 1, "wait": e.get("HoldTime", "")}))
        elif name == ev.HANGUP:
            self._active.pop(uid, None)
            if uid in self._timers:
                return
            cause = e.get("Cause-txt") or e.get("Cause", "")
            self._finish_after(self.finalize_delay, ("finish", uid, (now, cause, False)))

    def _finish_after(self, delay: float, op: Op) -> None:
        """Submit a call's finish ``delay`` seconds from now (for the events that trail its Hangup); until
        then it counts as pending and ``stop()`` writes it at once."""
        uid = op[1]
        old = self._timers.pop(uid, None)
        if old is not None:
            old[0].cancel()
        self._timers[uid] = (asyncio.get_running_loop().call_later(delay, self._finalize_due, uid), op)

    def _finalize_due(self, uid: str) -> None:
        entry = self._timers.pop(uid, None)
        if entry is not None:
            self._submit(entry[1])

    def _final(self, uid: str, record: Mapping[str, Any], ended_at: float, cause: str,
               late: bool) -> dict[str, Any] | None:
        """The closing fields of a record, or None when there is nothing to close yet."""
        if not record or record.get("finished"):
            return None
        final: dict[str, Any] = {}
        if record.get("answered_at") and not record.get("talk"):
            if not late:   # app_queue's AgentComplete can trail the caller's Hangup under load: wait once more
                self._finish_after(self.late_complete_delay, ("finish", uid, (ended_at, cause, True)))
                return None
            final["talk"] = max(0, round(ended_at - float(record["answered_at"])))
            final["talk_estimated"] = 1
        started = float(record.get("started_at") or record.get("joined_at") or ended_at)
        final.update({"ended_at": ended_at, "duration": round(ended_at - started, 3),
                      "outcome": outcome_of(record), "hangup_cause": cause,
                      "fallback": "0" if record.get("menu") or not record.get("queue") else "1"})
        return final

