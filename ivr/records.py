"""Call records: one per caller, built from the IVR (AGI) and queue (AMI) events.

The menu engine writes what happened in the IVR; AMI events add the queue, the
wait, the agent and the talk time; the caller's Hangup closes the record and
appends it, once, to the ``calls`` stream. All Redis writes go through one
ordered worker so the events of a call are stored in the order they happened,
and the event handler itself never waits on Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, Mapping

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .ami import names as ev
from .store.redis_store import Store

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]
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
    """Tracks calls in progress and writes their records to Redis."""

    def __init__(self, store: Store, *, finalize_delay: float = 1.0, max_backlog: int = 100_000,
                 late_complete_delay: float = LATE_AGENT_COMPLETE_S, inbound: frozenset[str] = frozenset(),
                 inbound_context: str = "from-trunk") -> None:
        self.store = store
        # the numbers callers dial: a new channel in ``inbound_context`` for one of them is a caller, recorded
        # from its first moment (a call that ends before the IVR starts still leaves a record)
        self.inbound = inbound
        self.inbound_context = inbound_context
        self.finalize_delay = finalize_delay
        self.late_complete_delay = late_complete_delay
        self._active: dict[str, float] = {}
        self._timers: dict[str, tuple[asyncio.TimerHandle, Job]] = {}
        self._jobs: asyncio.Queue[Job] = asyncio.Queue(max_backlog)
        self._worker: asyncio.Task[None] | None = None
        self.records_written = 0
        self.write_errors = 0
        self.retries = 0
        self.dropped = 0
        self.on_finished: Callable[[dict[str, Any]], None] | None = None

    async def start(self) -> None:
        self._worker = asyncio.create_task(self._run(), name="call-recorder")

    async def stop(self, grace: float = 5.0) -> None:
        """Flush what is queued (bounded by ``grace``), then stop."""
        if self._worker is None:
            return
        for uid, (handle, job) in list(self._timers.items()):  # calls that ended just now: write them too
            handle.cancel()
            self._submit(job)
        self._timers.clear()
        try:
            await asyncio.wait_for(self._jobs.join(), grace)
        except asyncio.TimeoutError:
            log.warning("call recorder: %d writes not flushed at stop", self._jobs.qsize())
        self._worker.cancel()
        try:
            await self._worker
        except asyncio.CancelledError:
            pass
        self._worker = None

    @property
    def active(self) -> int:
        return len(self._active)

    def _submit(self, job: Job) -> None:
        try:
            self._jobs.put_nowait(job)
        except asyncio.QueueFull:
            self.dropped += 1
            log.error("call recorder backlog full: a record write was dropped")

    async def _run(self) -> None:
        """Write jobs in order. While Redis is unreachable the job at the head is retried (back-off up to
        5 s) and the others wait behind it in memory: a Redis restart delays records, it loses none."""
        while True:
            job = await self._jobs.get()
            try:
                delay, since = 0.25, 0.0
                while True:
                    try:
                        await job()
                        if since:
                            log.info("call recorder: Redis is back after %.1fs; writing %d queued record updates",
                                     time.monotonic() - since, self._jobs.qsize() + 1)
                        break
                    except (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError,
                            asyncio.TimeoutError) as exc:
                        if not since:
                            since = time.monotonic()
                            log.warning("call recorder: Redis unreachable (%s): record updates are kept in memory "
                                        "and written when it is back", exc)
                        self.retries += 1
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 5.0)
            except Exception:
                self.write_errors += 1
                log.exception("call recorder: a write failed")
            finally:
                self._jobs.task_done()

    # ------------------------------------------------------------ from the IVR
    def track(self, uid: str) -> None:
        self._active.setdefault(uid, time.time())

    async def save(self, uid: str, fields: dict[str, Any]) -> None:
        self._submit(lambda: self.store.call_update(uid, fields))

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
            self._submit(lambda uid=uid: self._finish(uid, now, "ended while AMI was disconnected"))  # type: ignore[misc]
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
            fields = {"caller": e.get("CallerIDNum", ""), "channel": e.get("Channel", ""), "started_at": now,
                      "inbound": 1, "dialled": e.get("Exten", "")}
            self._submit(lambda: self.store.call_update_if_new(uid, fields))
        elif name == ev.QUEUE_CALLER_JOIN:
            self.track(uid)
            fields = {"queue": e.get("Queue", ""), "joined_at": now, "caller": e.get("CallerIDNum", "")}
            self._submit(lambda: self.store.call_update_if_new(uid, fields))
        elif uid not in self._active:
            return
        elif name == ev.AGENT_CONNECT:
            fields = {"answered_at": now, "wait": e.get("HoldTime", ""), "ring": e.get("RingTime", ""),
                      "agent": e.get("MemberName") or e.get("Interface", ""), "queue": e.get("Queue", "")}
            shown = chan_vars(e, "DestChanVariable").get("IVR_ESCALATED_FROM")
            if shown:   # the agent's channel carries the self-service context (manager.conf channelvars)
                fields["agent_context"] = shown
            self._submit(lambda: self.store.call_update(uid, fields))
        elif name == ev.AGENT_COMPLETE:
            fields = {"talk": e.get("TalkTime", ""), "ended_by": e.get("Reason", "")}
            self._submit(lambda: self.store.call_update(uid, fields))
        elif name == ev.QUEUE_CALLER_ABANDON:
            fields = {"abandoned": 1, "wait": e.get("HoldTime", "")}
            self._submit(lambda: self.store.call_update(uid, fields))
        elif name == ev.HANGUP:
            self._active.pop(uid, None)
            cause = e.get("Cause-txt") or e.get("Cause", "")
            job: Job = lambda: self._finish(uid, now, cause)  # noqa: E731
            if uid in self._timers:
                return
            handle = asyncio.get_running_loop().call_later(self.finalize_delay, self._finalize_due, uid)
            self._timers[uid] = (handle, job)

    def _finalize_due(self, uid: str) -> None:
        entry = self._timers.pop(uid, None)
        if entry is not None:
            self._submit(entry[1])

    async def _finish(self, uid: str, ended_at: float, cause: str, late: bool = False) -> None:
        record = await self.store.call_get(uid)
        if not record or record.get("finished"):
            return
        final: dict[str, Any] = {}
        if record.get("answered_at") and not record.get("talk"):
            if not late:   # app_queue's AgentComplete can trail the caller's Hangup under load: wait once more
                asyncio.get_running_loop().call_later(
                    self.late_complete_delay, self._submit, lambda: self._finish(uid, ended_at, cause, late=True))
                return
            final["talk"] = max(0, round(ended_at - float(record["answered_at"])))
            final["talk_estimated"] = 1
        started = float(record.get("started_at") or record.get("joined_at") or ended_at)
        final.update({"ended_at": ended_at, "duration": round(ended_at - started, 3),
                      "outcome": outcome_of(record), "hangup_cause": cause,
                      "fallback": "0" if record.get("menu") or not record.get("queue") else "1"})
        done = await self.store.call_finish(uid, final)
        self.records_written += 1
        log.info("call %s: record written (outcome %s, queue %s, wait %s, talk %s)", uid,
                 final["outcome"], record.get("queue", "-"), record.get("wait", "-"), record.get("talk", "-"))
        if self.on_finished is not None:
            try:
                self.on_finished(done)
            except Exception:
                log.exception("call %s: on_finished hook failed", uid)
