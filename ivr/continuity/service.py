"""Caller continuity: who is calling, and what happened to them before.

In a surge calls drop (mobile networks, power cuts) and people call again;
others call right after an outbound notice. This module remembers, per caller
number (E.164), what the IVR needs to treat them as a returning customer:

* **place keeping**: a caller who dropped out of a queue and calls again within
  ``continuity.window`` rejoins that queue at the position their first call
  had earned (Queue()'s ``position`` argument, computed from the callers still
  waiting), told so in their language. If they do not call within the window
  the controller can call them back itself (``callback_dropped``), keeping the
  same place in the callback line;
* **notified callers**: a number that got an outbound notice within
  ``notice_hours`` hears a shorter path, and their keypress on the notice
  (refund requested, callback booked) is known to the IVR, the channel
  (``IVR_NOTICE_*`` variables) and the agent (API and dashboard);
* **reached contacts**: a caller who calls in is marked ``reached`` in every
  campaign that has their number, so no campaign dials them after that; the
  dialer and the callback dispatcher do not call a number that is on a call
  with us right now;
* **history**: the last calls of each number (menu path, outcome, queue,
  agent, notice, refund reference), for the agent and the API, and whether
  this is a repeat call (priority by policy: ``repeat_priority``).

The caller key and the summaries of calls are pure and live in ``records.py``; this module keeps the
data and acts on it.

Redis keys (``{n}`` is the E.164 number):

| key                         | type   | what                                                          |
|-----------------------------|--------|---------------------------------------------------------------|
| {p}:caller:{n}              | hash   | last_in, last_uid, last_answered, notice (JSON)               |
| {p}:caller:{n}:calls        | list   | newest first: JSON summaries of the caller's calls (capped)   |
| {p}:caller:{n}:live         | set    | Uniqueids of the caller's calls in progress                   |
| {p}:dropped                 | hash   | n -> JSON {uid, queue, lang, place_since, dropped_at, waited} |
| {p}:dropped:due             | zset   | n -> the end of their window (unix s)                         |
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from ..app.config import ContinuityConfig
from ..cluster.leader import NotLeader
from ..store.leader import Fenced
from ..store.errors import StoreError
from ..store.redis_store import Store
from .records import came_in, caller_key, load_json, record_uid, record_vars, summarise, to_float

if TYPE_CHECKING:
    from ..store.continuity import ContinuityStore

log = logging.getLogger(__name__)

# notice outcomes where someone (or their voicemail) heard the message
HEARD = frozenset({"machine", "no_key", "refund", "callback", "agent", "optout", "heard"})
DROPPED = frozenset({"abandoned", "left_queue"})
HISTORY_BATCH = 500   # caller histories written in one round trip at most
LIVE_TTL_S = 6 * 3600


@dataclass
class Recognised:
    """What the IVR learns about a caller as the call starts."""

    number: str = ""
    dropped: dict[str, Any] | None = None     # their place: queue, lang, place_since, waited
    notice: dict[str, Any] | None = None      # the last notice: campaign, action, keypress, booking, reference
    calls: list[dict[str, Any]] = field(default_factory=list)   # previous calls, newest first
    repeat: bool = False                      # called within repeat_hours
    group: str = ""                           # flagged into this priority group (continuity.priority_groups)


class Continuity:
    """One per controller; every method that touches Redis may raise StoreError (callers decide)."""

    def __init__(self, cfg: ContinuityConfig, store: Store, *, guard: Any = None,
                 channel_alive: Callable[[str], bool] | None = None, events: Any = None) -> None:
        self.cfg = cfg
        self.events = events     # ivr.webhooks.events.Events: callback.requested for a dropped caller's callback
        self.store = store
        self.place_since: dict[str, float] = {}      # uid -> the time their place dates from (returning callers)
        self.context: dict[str, dict[str, Any]] = {}  # uid -> what the dashboard shows next to the call
        self.returned = 0
        self.notified_calls = 0
        self.reached_marked = 0
        self.callbacks_made = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ended: list[tuple[Mapping[str, Any], float | None]] = []   # calls whose history is not written yet
        self._remembering = False
        # is this Uniqueid a channel on Asterisk now? (given by the controller from its AMI state)
        self.channel_alive = channel_alive
        # ivr.campaigns.outbound.OutboundGuard (given by the controller): a number it refuses is not made a callback
        self.guard = guard
        self.callbacks_refused = 0

    @property
    def db(self) -> "ContinuityStore":
        """The store's continuity part: everything this class keeps in Redis goes through it."""
        return self.store.continuity

    # ---------------------------------------------------------------- numbers
    def key(self, raw: str) -> str:
        return caller_key(raw, self.cfg.region)

    def _checked_key(self, raw: str) -> str:
        """``key()`` of a number given to the API; ValueError naming the problem when it is not one."""
        number = self.key(raw)
        if not number:
            raise ValueError(f"number: expected 6-15 digits (optionally with +), got {raw!r}")
        return number

    @property
    def _history_ttl(self) -> int:
        return self.cfg.history_days * 86400 or 86400

    # ------------------------------------------------------------ the IVR
    async def recognise(self, uid: str, callerid: str) -> Recognised:
        """At the start of an inbound call: mark the caller live, read their place, notice and history."""
        number = self.key(callerid)
        if not number or not self.cfg.enabled:
            return Recognised(number=number)
        now = time.time()
        raw_drop, deadline, raw_notice, raw_calls, raw_flag = await self.db.recognise(
            number, uid, now, live_ttl=LIVE_TTL_S, history=self.cfg.history, history_ttl=self._history_ttl)
        found = Recognised(number=number, calls=[load_json(c) for c in raw_calls])
        found.calls = [c for c in found.calls if c]
        since_repeat = now - self.cfg.repeat_hours * 3600
        found.repeat = any(float(c.get("at") or 0) >= since_repeat for c in found.calls)
        flag = self._current_flag(load_json(raw_flag), now)
        if flag:
            found.group = flag["group"]
        drop = load_json(raw_drop)
        if drop and deadline is not None and float(deadline) >= now:
            if await self.db.take_place(number):   # one return per drop
                found.dropped = drop
                self.place_since[uid] = float(drop.get("place_since") or now)
                self.returned += 1
        notice = load_json(raw_notice)
        if notice and float(notice.get("at") or 0) >= now - self.cfg.notice_hours * 3600:
            found.notice = notice
            self.notified_calls += 1
        ctx: dict[str, Any] = {"number": number}
        if found.dropped:
            ctx["returning"] = True
        if found.notice:
            ctx["notice"] = found.notice.get("action", "")
            if found.notice.get("reference"):
                ctx["refund"] = found.notice["reference"]
        if found.repeat:
            ctx["repeat"] = True
        if found.group:
            ctx["group"] = found.group
        self.context[uid] = ctx
        self._spawn(self.mark_reached(number), f"mark {number} reached")
        return found

    async def mark_reached(self, number: str, before: float | None = None,
                           campaigns: set[str] | None = None) -> int:
        """The caller called in: contacts with this number waiting in any campaign are not dialled (with
        ``before``, only contacts added before then: a message queued after the call ended still goes).
        ``campaigns``: the campaign ids when the caller has just read them."""
        from ..campaigns import contacts

        marked = 0
        if campaigns is None:
            campaigns = await self.store.campaigns.ids()
        cids = sorted(campaigns)
        if not cids:
            return 0
        found = await self.db.numbers_in_campaigns(cids, number)
        for cid, n in zip(cids, found):
            if not n:
                continue
            contact = await contacts.contact(self.store.campaigns, None, cid, int(n)) or {}
            if contact.get("status") != "pending":
                continue
            if before is not None and float(contact.get("added") or 0) > before:
                continue
            old = await contacts.set_status(self.store.campaigns, None, cid, int(n), "reached",
                                            last_outcome="called in", updated=str(time.time()))
            await self.store.campaigns.unschedule_due(cid, n)
            if old is not None:
                marked += 1
                log.info("campaign %s: contact %s called in: marked reached, not dialled", cid, n)
        self.reached_marked += marked
        return marked

    def queue_position(self, waiting: Iterable[tuple[str, float]], since: float) -> int:
        """Queue() position for a caller whose place dates from ``since``: behind everyone still waiting
        whose own place is older (``waiting`` = (uid, joined_at) of the callers now in the queue)."""
        ahead = sum(1 for uid, joined in waiting if self.place_since.get(uid, joined) <= since)
        return ahead + 1

    # ---------------------------------------------------------- priority flags
    def _current_flag(self, flag: dict[str, Any] | None, now: float) -> dict[str, Any] | None:
        """A flag counts while it lasts and its group is still configured (a group removed from the
        configuration stops giving priority at once)."""
        if not flag or float(flag.get("until") or 0) < now or flag.get("group") not in self.cfg.priority_groups:
            return None
        return flag

    def group_priority(self, group: str) -> int:
        return int(self.cfg.priority_groups.get(group, 0)) if group else 0

    async def set_flag(self, raw_number: str, group: str, *, note: str = "", hours: float | None = None,
                       by: str = "") -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Flag a number into a priority group: their calls queue with the group's priority until it ends.
        Returns the new flag (with the number) and the one it replaced (for the audit log)."""
        number = self._checked_key(raw_number)
        if group not in self.cfg.priority_groups:
            known = ", ".join(sorted(self.cfg.priority_groups)) or "none configured (continuity.priority_groups)"
            raise ValueError(f"group: {group!r} is not a priority group (known: {known})")
        hours = self.cfg.flag_hours if hours is None else float(hours)
        if not 0 < hours <= 24 * 365:
            raise ValueError(f"hours: expected more than 0 and at most 8760, got {hours}")
        if len(note) > 200 or any(ch in note for ch in "\r\n\x00"):
            raise ValueError("note: at most 200 characters on one line")
        now = time.time()
        flag = {"group": group, "priority": self.group_priority(group), "note": note, "by": by,
                "at": round(now, 3), "until": round(now + hours * 3600, 3)}
        old = await self.db.swap_flag(number, json.dumps(flag), max(self._history_ttl, int(hours * 3600) + 60))
        log.info("caller %s flagged %s (priority %d) for %.0f h by %s", number, group, flag["priority"], hours,
                 by or "?")
        return dict(flag, number=number), self._current_flag(load_json(old), now)

    async def clear_flag(self, raw_number: str) -> dict[str, Any] | None:
        number = self._checked_key(raw_number)
        return load_json(await self.db.swap_flag(number, None))

    # ----------------------------------------------------------- campaigns
    async def noticed(self, raw_number: str, info: Mapping[str, Any]) -> None:
        """An outbound notice was heard: remember it for the caller's next inbound call."""
        number = self.key(raw_number)
        if not number or not self.cfg.enabled or info.get("action") not in HEARD:
            return
        notice = {k: str(v) for k, v in info.items() if v not in (None, "")}
        notice.setdefault("at", str(time.time()))
        await self.db.set_notice(number, json.dumps(notice), max(self._history_ttl, int(self.cfg.notice_hours * 3600)))

    async def mark_live(self, raw_number: str, uid: str) -> None:
        """A call with this number that did not come in through the IVR (a callback, a notice) is in progress."""
        number = self.key(raw_number)
        if number and uid and self.cfg.enabled:
            await self.db.mark_live(number, uid, LIVE_TTL_S)

    async def busy(self, raw_number: str, besides: str = "") -> bool:
        """Is this number on a call with us right now (in the IVR, waiting or with an agent)? The call
        ``besides`` does not count (the call that asked for a callback is still ending when it is due)."""
        number = self.key(raw_number)
        if not number or not self.cfg.enabled:
            return False
        uids = await self.db.live(number) - {besides}
        if uids and self.channel_alive is not None:
            stale = {u for u in uids if not self.channel_alive(u)}
            if stale:   # calls whose end was never recorded (the controller was killed): forget them
                await self.db.forget_live(number, stale)
                log.info("%s: %d call(s) no longer on Asterisk dropped from the live set", number, len(stale))
            uids -= stale
        return bool(uids)

    async def answered_since(self, raw_number: str, since: float) -> bool:
        """Did this number talk to an agent after ``since`` (so a callback asked for before is moot)?"""
        number = self.key(raw_number)
        if not number or not self.cfg.enabled:
            return False
        last = await self.db.last_answered(number)
        return last is not None and bool(last) and float(last) > since

    # ------------------------------------------------------- after a call
    def call_finished(self, record: Mapping[str, Any]) -> None:
        """Hook for the call recorder (runs in the event loop). The Redis work is done by one task for all
        the calls that ended meanwhile (the recorder finishes records in batches): one round trip for many
        callers' histories."""
        uid = record_uid(record)
        self.context.pop(uid, None)
        since = self.place_since.pop(uid, None)
        if self.cfg.enabled and record.get("caller"):
            self._ended.append((record, since))
            if not self._remembering:
                self._remembering = True
                self._spawn(self._remember_ended(), "caller histories")

    async def _remember_ended(self) -> None:
        try:
            while self._ended:
                batch, self._ended = self._ended[:HISTORY_BATCH], self._ended[HISTORY_BATCH:]
                try:
                    await self.remember_many(batch)
                except Exception as exc:   # Redis down: these histories are lost, the calls' records are not
                    log.warning("continuity: histories of %d call(s) not written: %s", len(batch), exc)
        finally:
            self._remembering = False

    async def remember(self, record: Mapping[str, Any], since: float | None = None) -> None:
        await self.remember_many([(record, since)])

    async def remember_many(self, items: Sequence[tuple[Mapping[str, Any], float | None]]) -> None:
        """After calls ended: their callers' histories (one round trip for all), contacts who called in
        marked reached in running campaigns, and places kept for callers who dropped out of a queue."""
        entries = [(n, record, since) for record, since in items if (n := self.key(str(record.get("caller") or "")))]
        if not entries:
            return
        reach_any = any(came_in(record) for _, record, _ in entries)
        writes = [(number, record_uid(record), json.dumps(summarise(record)),
                   str(record.get("answered_at") or time.time()) if record.get("outcome") == "answered" else "")
                  for number, record, _ in entries]
        campaigns, replies = await self.db.remember(writes, last_index=max(0, self.cfg.history - 1),
                                                    ttl=self._history_ttl, with_campaigns=reach_any)
        failed = [r for r in replies if isinstance(r, Exception)]
        if failed:
            log.warning("continuity: %d of %d history writes refused by Redis: %s", len(failed), len(replies),
                        failed[0])
        for number, record, since in entries:
            if came_in(record):   # added to a campaign while on this call: in touch already
                await self.mark_reached(number, before=to_float(record.get("ended_at")), campaigns=campaigns)
            await self._keep_place(number, record, since)

    async def _keep_place(self, number: str, record: Mapping[str, Any], since: float | None) -> None:
        """A caller who dropped out of a queue after waiting a while: their place is kept for a window."""
        uid = record_uid(record)
        outcome = record.get("outcome", "")
        queue = str(record.get("queue") or "")
        if outcome not in DROPPED or not queue or record.get("campaign") or self.cfg.window <= 0:
            return
        waited = to_float(record.get("wait"))
        if waited is None:
            waited = max(0.0, to_float(record.get("ended_at")) or 0.0) - (to_float(record.get("joined_at")) or 0.0)
        if waited < self.cfg.min_wait:
            return
        ended = to_float(record.get("ended_at")) or time.time()
        place = since or record_vars(record).get("place_since") or record.get("joined_at") or ended - waited
        drop = {"uid": uid, "queue": queue, "lang": record.get("language") or "", "place_since": float(place),
                "dropped_at": ended, "waited": round(waited, 1), "caller": str(record.get("caller"))}
        await self.db.keep_place(number, drop, ended + self.cfg.window)
        log.info("call %s: %s dropped out of %s after %.0fs; their place is kept for %ds", uid, number, queue,
                 waited, self.cfg.window)

    async def sweep(self, now: float | None = None, callbacks: Any = None, fence: str | None = None) -> int:
        """Places whose window passed: forget them, or (``callback_dropped``) turn them into callbacks
        that keep the same place in the callback line. Returns how many callbacks were made. ``fence``: the
        balancing leader's holder string (its claims are refused with ``Fenced`` once another node leads)."""
        now = time.time() if now is None else now
        made = 0
        for number in await self.db.places_due(now, 200):
            # claimed once, even with several nodes (and, fenced, only by the node that leads)
            taken, raw = await (self.db.claim_place(number) if fence is None else
                                self.db.claim_place(number, fence=fence))
            drop = load_json(raw)
            if not taken or not drop:
                continue
            if self.cfg.callback_dropped and callbacks is not None:
                digits = number.lstrip("+")
                if await self.busy(number):
                    continue    # they are on a call with us: nothing to call back
                if self.guard is not None and not (await self.guard.check(number, "continuity", count=False)).ok:
                    self.callbacks_refused += 1     # the guard logged, counted and audited it
                    continue
                rec = await callbacks.request(digits, queue=drop["queue"], lang=drop.get("lang") or "en",
                                              call_uid=drop.get("uid", ""), joined_at=float(drop["place_since"]),
                                              caller=digits)
                made += 1
                if self.events is not None:
                    self.events.publish("callback.requested", {**rec, "source": "dropped"})
                log.info("%s did not call back within %ds: callback %s keeps their place in %s", number,
                         self.cfg.window, rec["id"], drop["queue"])
        self.callbacks_made += made
        return made

    async def run_sweeper(self, callbacks: Any, interval: float = 5.0, leadership: Any = None) -> None:
        """Sweep every ``interval`` seconds; in a cluster only while ``leadership`` (ivr/cluster/leader.py)
        leads, its claims fenced by its lease."""
        while True:
            await asyncio.sleep(interval)
            clustered = leadership is not None and leadership.clustered
            if clustered and not leadership.is_leader:
                continue
            try:
                await self.sweep(callbacks=callbacks, fence=leadership.fence() if clustered else None)
            except asyncio.CancelledError:
                raise
            except (Fenced, NotLeader) as exc:
                log.warning("continuity sweep stopped: this node no longer leads (%s)", exc)
            except (StoreError, OSError) as exc:
                log.warning("continuity sweep: Redis unreachable (%s)", exc)
            except Exception:
                log.exception("continuity sweep failed")

    # ----------------------------------------------------------------- API
    async def describe(self, raw_number: str) -> dict[str, Any]:
        """Everything known about a caller: live calls, kept place, last notice, recent calls, refunds."""
        number = self._checked_key(raw_number)
        info, live, raw_calls, raw_drop, deadline = await self.db.describe(number)
        calls = [c for c in (load_json(x) for x in raw_calls) if c]
        now = time.time()
        notice = load_json(info.get("notice"))
        drop = load_json(raw_drop)
        refs = sorted({c["refund"] for c in calls if c.get("refund")} |
                      ({notice["reference"]} if notice and notice.get("reference") else set()))
        refunds = [r for r in [await self.store.refunds.get(ref) for ref in refs] if r]
        return {
            "number": number,
            "live": sorted(live),
            "last_in": to_float(info.get("last_in")),
            "last_answered": to_float(info.get("last_answered")),
            "kept_place": dict(drop, window_ends=float(deadline)) if drop and deadline is not None else None,
            "notice": notice,
            "notice_current": bool(notice) and float(notice.get("at") or 0) >= now - self.cfg.notice_hours * 3600,
            "calls": calls,
            "repeat_calls_24h": sum(1 for c in calls if float(c.get("at") or 0) >= now - 86400),
            "flag": self._current_flag(load_json(info.get("flag")), now),
            "refunds": [{k: r.get(k) for k in ("reference", "booking", "status", "created", "updated")}
                        for r in refunds],
        }

    # ---------------------------------------------------------------- misc
    def _spawn(self, coro: Any, what: str) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.warning("continuity: %s failed: %s", what, t.exception())
        task.add_done_callback(done)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait for the background writes (at stop)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
