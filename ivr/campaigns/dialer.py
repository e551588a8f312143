"""The outbound dialer: paced, within calling hours, and never dialling anyone twice by accident.

How "never twice, never skipped" holds across crashes of the controller:
1. due contacts are *claimed* with one Lua script that moves them from the
   ``due`` zset to the ``leases`` zset (atomic: two ticks or two nodes cannot
   claim the same contact);
2. before the Originate is sent the contact is marked ``in_progress`` with its
   attempt number (so Redis knows a call may have gone out);
3. the attempt ends in ``finish_attempt`` (OriginateResponse failure, or the
   notice AGI's outcome), which releases the lease and either closes the
   contact or puts it back in ``due`` after the retry back-off for that outcome.
On start, ``recover()`` settles every lease a previous run left (dial_recovery.py); a recovery that
fails (Redis or AMI unreachable at start) is tried again with a growing back-off; nothing is dialled until
it has run. A second call to the same person only ever comes from a retry rule.

Transfers to agents (``max_transfers``) are counted from real events by
``transfers.Transfers``; while a campaign's are full it dials nobody.

Channel slots (``max_channels``) are held in memory from the dial until the
call's Hangup event; ``reconcile`` frees those whose Hangup was missed (dial_recovery.py).

In a cluster (``leadership`` clustered) only the leader paces: its claims go into the campaign's work
stream (fenced: ``Fenced`` stops an old leader), concurrency counts every node's leases, and each node dials
the claims it takes from the stream on its own Asterisk (``dial_claimed``, from ivr/campaigns/work.py); its
recovery settles only its own attempts, and the attempts a lost node left in progress are settled by the
leader's lost-node sweep (``settle_lost``: the callee's recorded choice, else ``node_lost``, never dialled
again). Without a cluster the dialer claims and dials itself, as above.

This module runs the loop and sends the calls; the rules it applies (pace, calling windows, what an
outcome means) are dial_rules.py's.
"""

from __future__ import annotations

import asyncio
import builtins
import datetime
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Collection, Iterable, Mapping

from ..core import names as ev
from ..asterisk.ami_client import AmiClient, AmiError
from ..balance.policy import CampaignView
from ..app.config import Config
from ..app.logutil import RateLimit
from .outbound import OutboundGuard
from ..cluster.leader import Leadership, NotLeader
from ..store.errors import StoreError
from ..store.campaign_work import TakenOver
from ..store.leader import Fenced
from ..store.redis_store import Store
from ..webhooks.events import Events

from . import contacts
from .dial_recovery import free_stale_slots, live_account_codes, node_owns, settle_leases
from .dial_rules import (CLOSED, FINAL_ACTIONS, HANGUP_CAUSES, NODE_LOST, ORIGINATE_REASONS, NoCommonTime, Running,
                         account_code, contact_zones, guard_retry_at, lost_attempt_outcome, next_dial_time, refill)
from .model import Campaign, campaign_from_dict
from .transfers import Transfers

if TYPE_CHECKING:
    from ..store.campaigns import CampaignStore

log = logging.getLogger(__name__)

TICK_S = 0.1
BUSY_DEFER_S = 300.0      # a contact on a call with us is tried again this much later
OUTCOME_RETRY_S = 600.0   # how long an outcome waits in memory for Redis to come back
STATES = ("draft", "running", "paused", "stopped", "done")


class Dialer:
    """Runs every campaign in state ``running``; one dialer per deployment (the leader)."""

    def __init__(self, cfg: Config, store: Store, ami: AmiClient, guard: OutboundGuard | None = None, *,
                 continuity: Any = None, on_attempt: Callable[[str, str], None] | None = None,
                 events: Events | None = None, leadership: Leadership | None = None) -> None:
        self.cfg = cfg
        self.leadership = leadership or Leadership.solo(cfg.node)   # only the leader paces
        self.events = events or Events.disabled()   # campaign.contact_done
        self.guard = guard or OutboundGuard(cfg, store)   # every contact dialled passes it
        self.store = store
        self.ami = ami
        self.running: dict[str, Running] = {}
        self.causes: dict[str, str] = {}       # account code -> Q.850 cause of its Hangup
        self.errors = 0
        self._unreachable = RateLimit(10.0)
        self.originating: set[str] = set()     # account codes whose Originate awaits its OriginateResponse
        self.recovered = False                 # recover() has run since the start
        self.recover_errors = 0
        self.last_recover_error = ""
        self.slots_reclaimed = 0
        self.continuity = continuity           # ivr.continuity.service.Continuity: callers on a call are not dialled
        self._on_attempt = on_attempt          # told (campaign id, outcome) of each attempt (the metrics)
        self.transfers = Transfers()           # answered calls sent to the agents (max_transfers)
        self.fenced = 0                        # claims refused because another node leads

    @property
    def clustered(self) -> bool:
        """Claims go through the work stream, dialled by whichever node takes them."""
        return self.leadership.clustered

    @property
    def db(self) -> "CampaignStore":
        """The store's campaigns part: everything this class keeps in Redis goes through it."""
        return self.store.campaigns

    # ---------------------------------------------------------- definitions
    async def create(self, campaign: Campaign, by: str = "") -> None:
        if not await self.db.create(campaign.id, campaign.to_dict()):
            raise ValueError(f"campaign {campaign.id!r} exists already")
        await self.store.audit(by or "api", "campaign.create", campaign.id, None, campaign.to_dict())

    async def get(self, cid: str) -> tuple[Campaign, str] | None:
        found = await self.db.get(cid)
        if found is None:
            return None
        return campaign_from_dict(found[0]), found[1]

    async def set_state(self, cid: str, state: str, by: str = "") -> None:
        if state not in STATES:
            raise ValueError(f"state: expected one of {', '.join(STATES)}")
        found = await self.get(cid)
        if found is None:
            raise KeyError(cid)
        await self.db.set_state(cid, state)
        await self.store.audit(by or "api", "campaign.state", cid, found[1], state)
        log.info("campaign %s: %s -> %s", cid, found[1], state)

    async def list(self) -> list[dict[str, Any]]:
        out = []
        for cid in sorted(await self.db.ids()):
            found = await self.get(cid)
            if found:
                counts = await contacts.counts(self.db, None, cid)
                out.append({"id": cid, "name": found[0].name, "state": found[1], "counts": counts,
                            **self.live(cid)})
        return out

    def live(self, cid: str) -> dict[str, Any]:
        """What this dialler does for the campaign now: calls in flight, pace, transfers to agents, held."""
        r = self.running.get(cid)
        return {"active": len(r.active) if r else 0, "pace": r.pace if r else None,
                "transfers": self.transfers.count(cid), "held": r.held if r else False}

    def set_pace(self, cid: str, pace: float, reason: str = "") -> None:
        r = self.running.get(cid)
        if r is not None and r.pace != pace:
            log.info("campaign %s: pace %.0f%% (%s)", cid, pace * 100, reason or "-")
            r.pace = pace

    def campaign_views(self) -> builtins.list[CampaignView]:   # builtins: `list` here is Dialer.list
        """The running campaigns as the balancing policy sees them (priority, full rate, held)."""
        return [CampaignView(cid, r.campaign.priority, r.campaign.pacing.cps, held=self.transfers.full(r.campaign))
                for cid, r in self.running.items()]

    # ------------------------------------------------------------ the loop
    async def run(self) -> None:
        await self._recover_until_done()
        refreshed = 0.0
        while True:
            try:
                now = time.monotonic()
                if now - refreshed > 2.0:
                    await self._refresh()
                    refreshed = now
                if self.ami.connected and self.leadership.is_leader:
                    for cid, r in list(self.running.items()):
                        await self._pace(cid, r)
            except asyncio.CancelledError:
                raise
            except (StoreError, OSError) as exc:   # Redis restarting: one line now and then, no traceback
                self.errors += 1
                self._unreachable.log(log, logging.WARNING, "dialer: Redis unreachable (%s); retrying", exc)
            except Exception:
                self.errors += 1
                log.exception("dialer: tick failed")
                await asyncio.sleep(1.0)
            await asyncio.sleep(TICK_S)

    async def _recover_until_done(self, first_delay: float = 1.0, max_delay: float = 30.0) -> None:
        """recover() once AMI is up, again and again (growing back-off) until it succeeds."""
        delay = first_delay
        while True:
            await self.ami.ready.wait()
            try:
                await self.recover()
                self.recovered, self.last_recover_error = True, ""
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.recover_errors += 1
                self.last_recover_error = str(exc)[:200]
                if isinstance(exc, (StoreError, OSError, AmiError)):
                    self._unreachable.log(log, logging.WARNING, "dialer recovery failed (%s); retrying in %.0fs",
                                          exc, delay)
                else:
                    log.exception("dialer recovery failed; retrying in %.0fs", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)

    def reconcile(self, channels: Iterable[Mapping[str, Any]], since: float) -> int:
        """After an AMI resync: free the slots of calls whose channel is gone (``channels``: CoreShowChannels)
        unless their Originate is still waiting or they were taken at or after ``since`` (monotonic time the
        channel list was asked for). Returns how many slots were freed."""
        channels = list(channels)
        live = {str(c.get("AccountCode", "")) for c in channels}
        self.transfers.reconcile(channels, since)
        freed = free_stale_slots(self.running, live, self.originating, since)
        self.slots_reclaimed += freed
        return freed

    def health(self) -> dict[str, Any]:
        """What /health shows of the dialer."""
        return {"recovered": self.recovered, "recover_errors": self.recover_errors,
                "last_recover_error": self.last_recover_error, "errors": self.errors,
                "slots_reclaimed": self.slots_reclaimed,
                "active": {cid: len(r.active) for cid, r in self.running.items()},
                "transfers": {cid: self.transfers.count(cid) for cid in self.running}}

    async def _refresh(self) -> None:
        """Follow campaign state changes made through the API or the CLI (or another node)."""
        for cid in await self.db.ids():
            found = await self.get(cid)
            if found is None:
                continue
            campaign, state = found
            if state == "running" and cid not in self.running:
                self.running[cid] = Running(campaign)
                log.info("campaign %s: dialling (%.1f calls/s, %d channels)", cid, campaign.pacing.cps,
                         campaign.pacing.max_channels)
            elif state != "running" and cid in self.running and not self.running[cid].active:
                del self.running[cid]

    async def _pace(self, cid: str, r: Running) -> None:
        refill(r, time.monotonic())
        c = r.campaign
        state = (await self.db.state(cid)) or "draft"
        if state != "running":
            return
        held = self.transfers.full(c)
        if held != r.held:
            r.held = held
            if held:
                log.info("campaign %s: %d transfers to agents in flight (max_transfers): dialling held", cid,
                         self.transfers.count(cid))
            else:
                log.info("campaign %s: transfers below max_transfers: dialling resumes", cid)
        if held:
            return
        # in a cluster the calls are on every node: the leases (claimed, not finished) count them all
        active = await self.db.leased_count(cid) if self.clustered else len(r.active)
        want = min(int(r.tokens), c.pacing.max_channels - active)
        if want <= 0:
            return
        hour = time.strftime("%Y%m%d%H", time.gmtime())
        used = await self.db.dials_this_hour(cid, hour)
        want = min(want, c.hourly_cap - used)
        if want <= 0:
            return
        if self.clustered:
            ns = await self._enqueue(cid, want)
        else:
            ns = await self.db.claim(cid, time.time(), want, time.time() + 3600)
        if not ns:
            if not r.active and not await self.db.leased_count(cid):
                if not await self.db.due_count(cid):
                    await self.set_state(cid, "done", by="dialer")
            return
        for n in ns:
            r.tokens -= 1
            if not self.clustered:
                await self._dial(cid, r, str(n), hour)

    async def _enqueue(self, cid: str, want: int) -> builtins.list[str]:
        """The leader's claim into the work stream (fenced); [] when this node no longer leads."""
        try:
            claims = await self.store.campaign_work.enqueue(cid, self.leadership.fence(), time.time(), want,
                                                            time.time() + 3600)
        except (Fenced, NotLeader) as exc:
            self.fenced += 1
            log.warning("campaign %s: claim refused, this node no longer leads (%s)", cid, exc)
            return []
        for n, attempt in claims:
            log.info("campaign %s: contact %s claim %d queued for the nodes", cid, n, attempt)
        return [n for n, _ in claims]

    async def dial_claimed(self, cid: str, n: str) -> None:
        """Dial a claim this node took from the work stream (ivr/campaigns/work.py), on its own Asterisk; the
        checks of a dial (calling hours, do-not-call, the guard) may put it back in line or close it instead."""
        found = await self.get(cid)
        if found is None:
            await self.db.release(cid, n)
            return
        if found[1] != "running":   # paused or stopped since the claim: back in line, dialled when it runs
            await self.db.requeue(cid, n, time.time())
            return
        r = self.running.setdefault(cid, Running(found[0]))
        await self._dial(cid, r, n, time.strftime("%Y%m%d%H", time.gmtime()))

    async def _dial(self, cid: str, r: Running, n: str, hour: str) -> None:
        c = r.campaign
        contact = await contacts.contact(self.db, None, cid, int(n))
        if contact is None:
            await self.db.release(cid, n)
            return
        number = contact.get("number", "")
        if contact.get("status") in CLOSED:   # called in while it was being claimed, or closed by a late outcome
            await self.db.release(cid, n)
            return
        if self.continuity is not None and await self.continuity.busy(number):
            # on a call with us right now (the IVR, a queue, an agent): not now; the call in progress
            # marks the contact reached, else it is dialled after BUSY_DEFER_S
            await self.db.requeue(cid, n, time.time() + BUSY_DEFER_S)
            log.info("campaign %s: contact %s is on a call with us: not dialled now", cid, n)
            return
        if not c.allows(number):
            await self._close(cid, n, "failed", last_outcome="destination not allowed")
            log.warning("campaign %s: contact %s: %s is outside the allowed destinations", cid, n, number)
            return
        if await self.db.dnc_has(number):
            await self._close(cid, n, "dnc", last_outcome="do not call")
            return
        zones = contact_zones(number, contact.get("tz") or "")
        try:
            when = next_dial_time(c, zones, datetime.datetime.now(datetime.timezone.utc))
        except NoCommonTime:
            await self._close(cid, n, "failed", last_outcome="no common calling time")
            log.warning("campaign %s: contact %s: %s spans %d time zones with no common calling time "
                        "(give it a tz column)", cid, n, number, len(zones))
            return
        if when is not None:
            await self.db.requeue(cid, n, when)
            return
        purpose = "refund" if cid == self.cfg.refunds.notice_campaign else "campaign"
        verdict = await self.guard.check(number, purpose, narrower=c.allowed_prefixes,
                                         ref=f"campaign {cid} contact {n}")
        if not verdict.ok:
            if verdict.retry_later:   # a cap: at the next clock hour; Redis away: in a minute
                await self.db.requeue(cid, n, guard_retry_at(verdict.reason, time.time()))
            else:
                await self._close(cid, n, "dnc" if verdict.reason == "dnc" else "failed",
                                  last_outcome=f"refused: {verdict.reason}", updated=str(time.time()))
            return
        attempt = int(contact.get("attempts") or 0) + 1
        code = account_code(cid, n, attempt)
        marked = {"attempts": str(attempt), "dialled_at": str(time.time()), "attempt_id": code}
        if self.clustered:   # only while the claim is still this node's (TakenOver: another node dials it)
            try:
                await self.store.campaign_work.mark_in_progress(cid, n, contact.get("claims") or "0", self.cfg.node,
                                                                {**marked, "node": self.cfg.node})
            except TakenOver as exc:
                log.warning("campaign %s: contact %s not dialled here: %s", cid, n, exc)
                return
        else:
            await contacts.set_status(self.db, None, cid, int(n), "in_progress", **marked)
        await self.db.count_dial(cid, hour)
        r.active[code] = time.monotonic()
        self.originating.add(code)
        r.dialled += 1
        lang = contact.get("lang") or c.default_lang
        digits = verdict.digits
        fields = {
            "Channel": f"PJSIP/trunk/sip:{digits}@{self.cfg.asterisk.trunk_uri.split(':', 1)[1]}",
            "Context": "ivr-notice", "Exten": "s", "Priority": 1, "Async": "true",
            "Timeout": c.ring_timeout * 1000, "Account": code,
            "CallerID": self.cfg.asterisk.outbound_callerid or "ivr",
            "Variable": [f"IVR_CAMPAIGN={cid}", f"IVR_CONTACT={n}", f"IVR_ATTEMPT={attempt}",
                         f"CHANNEL(language)={lang}", f"IVR_AMD={'1' if c.amd else '0'}"],
        }
        log.info("campaign %s: dialling contact %s (attempt %d)", cid, n, attempt)
        task = asyncio.create_task(self._originate(cid, r, n, attempt, code, fields, c.ring_timeout + 15))
        task.add_done_callback(lambda _t: self.originating.discard(code))

    async def _originate(self, cid: str, r: Running, n: str, attempt: int, code: str, fields: dict[str, Any],
                         timeout: float) -> None:
        outcome = None
        try:
            result = await self.ami.action(ev.ORIGINATE, fields, as_list=None, timeout=timeout)
            events = result if isinstance(result, list) else [result]
            final = next((m for m in events if m.get("Event") == ev.ORIGINATE_RESPONSE), None)
            if final is None or final.get("Response") != "Success":
                reason = (final or {}).get("Reason", "")
                outcome = ORIGINATE_REASONS.get(reason, "failed")
                if reason == "0":
                    for _ in range(10):     # the channel's Hangup event carries the cause; it may come just after
                        if code in self.causes:
                            break
                        await asyncio.sleep(0.05)
                    outcome = HANGUP_CAUSES.get(self.causes.get(code, ""), outcome)
                log.debug("campaign %s: contact %s: OriginateResponse %s reason %s", cid, n,
                          (final or {}).get("Response"), reason)
        except AmiError as exc:
            log.warning("campaign %s: contact %s: originate failed: %s", cid, n, exc)
            outcome = "failed"
        if outcome is not None:
            r.active.pop(code, None)
            self.causes.pop(code, None)
            await self.record_outcome(cid, n, attempt, outcome)

    async def record_outcome(self, cid: str, n: str, attempt: int, outcome: str, keypress: str = "",
                             give_up_s: float = OUTCOME_RETRY_S) -> None:
        """Record an outcome; while Redis is unreachable keep it and retry, so a Redis restart mid-campaign
        neither loses the attempt (the lease would hold the contact for an hour) nor dials it again."""
        deadline = time.monotonic() + give_up_s
        delay = 0.5
        while True:
            try:
                await self.finish_attempt(cid, n, attempt, outcome, keypress=keypress)
                return
            except StoreError as exc:
                if time.monotonic() > deadline:
                    log.error("campaign %s: contact %s: outcome %s not recorded (Redis: %s); the recovery at the "
                              "next start settles it", cid, n, outcome, exc)
                    return
                if delay == 0.5:
                    log.warning("campaign %s: contact %s: Redis unreachable, outcome %s kept until it is back (%s)",
                                cid, n, outcome, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def on_event(self, e: Any) -> None:
        """A Hangup of one of our calls frees its channel slot; transfers follow their queue and hangup events."""
        self.transfers.on_event(e)
        if e.get("Event") == ev.HANGUP:
            code = e.get("AccountCode", "")
            # only the dialled channel's Hangup ends the call: an agent's leg of a transfer inherits the
            # account code (Uniqueid != Linkedid there), and its end leaves the callee on the line
            uid, linked = e.get("Uniqueid", ""), e.get("Linkedid", "")
            if code.startswith("c:") and (not uid or not linked or uid == linked):
                self.causes[code] = str(e.get("Cause", ""))
                if len(self.causes) > 10_000:
                    self.causes.pop(next(iter(self.causes)))
                cid = code.split(":")[1]
                r = self.running.get(cid)
                if r is not None:
                    r.active.pop(code, None)

    # ------------------------------------------------------------ outcomes
    async def finish_attempt(self, cid: str, n: str, attempt: int, outcome: str, keypress: str = "") -> None:
        """End one attempt: close the contact, or put it back in line after the outcome's back-off."""
        found = await self.get(cid)
        if found is None:
            return
        c = found[0]
        contact = await contacts.contact(self.db, None, cid, int(n)) or {}
        if contact.get("attempt_id") and contact["attempt_id"] != account_code(cid, n, attempt):
            log.warning("campaign %s: contact %s: late outcome for attempt %d ignored", cid, n, attempt)
            return
        extra = {"last_outcome": outcome, "updated": str(time.time())}
        if keypress:
            extra["keypress"] = keypress
        if outcome in FINAL_ACTIONS:
            await self._close(cid, n, FINAL_ACTIONS[outcome], **extra)
        elif contact.get("status") in CLOSED:   # e.g. "unknown" after the notice stored the callee's choice
            log.warning("campaign %s: contact %s: outcome %s of attempt %d came after the contact was closed (%s): "
                        "ignored", cid, n, outcome, attempt, contact["status"])
            await self.db.release(cid, n)
            return
        elif attempt < c.max_attempts:
            when = time.time() + float(c.retry.get(outcome, c.retry.get("failed", 1800)))
            await contacts.set_status(self.db, None, cid, int(n), "pending", **extra)
            await self.db.requeue(cid, n, when)
        else:
            await self._close(cid, n, "failed", **extra)
        await self.db.add_attempt(cid, {"n": n, "attempt": str(attempt), "outcome": outcome,
                                        "keypress": keypress, "at": str(time.time())})
        self.store_metric(cid, outcome)
        log.info("campaign %s: contact %s attempt %d: %s", cid, n, attempt, outcome)

    def store_metric(self, cid: str, outcome: str) -> None:
        """Count an attempt's outcome (``on_attempt``, given by the controller)."""
        if self._on_attempt is not None:
            self._on_attempt(cid, outcome)

    async def _close(self, cid: str, n: str, status: str, **fields: str) -> None:
        """Close a contact; a retry planned for it (an outcome taken for failed before the real one) goes too."""
        await contacts.set_status(self.db, None, cid, int(n), status, **fields)
        await self.db.unschedule(cid, n)
        self.events.publish("campaign.contact_done", {"campaign": cid, "contact": str(n), "status": status, **fields})

    # ------------------------------------------------------------ recovery
    async def recover(self) -> dict[str, int]:
        """After a (re)start: settle every lease left by a previous run (dial_recovery.py)."""
        owns = node_owns(self.store.campaign_work.attempt_holder, self.cfg.node) if self.clustered else None
        return await settle_leases(self.db, await live_account_codes(self.ami), self.finish_attempt, self._hold_slot,
                                   owns)

    async def settle_lost(self, holder: str, nodes: Collection[str]) -> int:
        """The leader's settling of the attempts that lost ``nodes`` left ``in_progress`` (their controller
        is gone, or their Asterisk: no outcome will ever come from there), fenced by ``holder``, by
        ``dial_rules.lost_attempt_outcome``: the callee's choice when one was recorded for that very attempt,
        else ``node_lost``, which closes the contact and is never retried. Returns how many were settled;
        ``Fenced`` when another node leads."""
        settled = 0
        for cid in sorted(await self.db.ids()):
            for n, contact in await self.store.campaign_work.in_progress_on(cid, nodes):
                code, node = contact.get("attempt_id", ""), contact.get("node", "")
                outcome, status = lost_attempt_outcome(contact)
                fields = {"last_outcome": outcome, "updated": str(time.time())}
                if not await self.store.campaign_work.settle_lost(cid, n, holder, node, code, status, fields):
                    continue
                settled += 1
                r = self.running.get(cid)
                if r is not None:      # this node's own Asterisk was the one lost: its slot is free
                    r.active.pop(code, None)
                attempt = contact.get("attempts") or "1"
                await self.db.add_attempt(cid, {"n": n, "attempt": attempt, "outcome": outcome,
                                                "keypress": contact.get("keypress", "") if outcome != NODE_LOST else "",
                                                "at": str(time.time()), "node": node})
                self.store_metric(cid, outcome)
                self.events.publish("campaign.contact_done", {"campaign": cid, "contact": n, "status": status,
                                                              **fields})
                log.warning("campaign %s: contact %s attempt %s was in progress on lost node %s: %s (%s)", cid, n,
                            attempt, node, outcome, "not dialled again" if outcome == NODE_LOST else
                            "the callee's choice")
        return settled

    async def _hold_slot(self, cid: str, code: str) -> None:
        """A call of a previous run still on the line: its slot is taken again."""
        r = self.running.setdefault(cid, Running((await self.get(cid))[0]))  # type: ignore[index]
        r.active.setdefault(code, time.monotonic())
