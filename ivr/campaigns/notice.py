"""The callee's side of an outbound notice: message, keypress, action (AGI ``notice/<campaign>``).

The dialplan (``ivr-notice``) runs answering-machine detection first; a machine
hears the short voicemail message, a person hears the campaign's message and
presses a key: 1 refund request (read back its reference), 2 callback, 3 an
agent now (within the campaign's transfer limit), 9 no more calls (do-not-call
list). The keypress is recorded as the attempt's outcome.

An agent now takes one of the campaign's ``pacing.max_transfers`` (ivr/campaigns/
transfers.py). When they are all taken the callee gets the callback path instead
(booked, "we will call you back, you keep your place"; outcome ``callback``): the
dialler holds new dials while the transfers are full, but calls already on the
line when they filled can still choose an agent, and a callee on the line cannot
be held back like a dial.
"""

from __future__ import annotations

import logging
import time
from typing import Any


from ..asterisk.agi_server import AgiSession
from ..menu.engine import CallContext, MenuEngine
from ..menu.schema import Menu
from ..store.errors import StoreError
from ..store.redis_store import Store
from ..store.selfservice import GROUP_RE, REFUND_STATUSES
from . import contacts
from .dial_rules import account_code
from .dialer import Dialer

log = logging.getLogger(__name__)


class NoticeHandler:
    def __init__(self, engine: MenuEngine, dialer: Dialer, store: Store, refunds: Any = None) -> None:
        self.refunds = refunds    # ivr.refunds.service.RefundService (the approval policy applies to notice requests)
        self.engine = engine
        self.dialer = dialer
        self.store = store

    async def run(self, s: AgiSession) -> None:
        cid = s.route_arg
        n = (await s.get_variable("IVR_CONTACT")) or ""
        attempt = int((await s.get_variable("IVR_ATTEMPT")) or 0)
        amd = (await s.get_variable("AMDSTATUS")) or ""
        try:
            found = await self.dialer.get(cid)
            contact = (await contacts.contact(self.store.campaigns, None, cid, int(n))
                       if n.isdigit() else None)
        except StoreError as exc:   # the callee answered but nothing can be read: end politely, retry later
            log.warning("campaign %s: contact %s answered while Redis is unreachable (%s); retried later", cid, n, exc)
            if n.isdigit():
                await self.dialer.record_outcome(cid, n, attempt, "unknown")
            return
        if found is None:
            raise LookupError(f"campaign {cid!r} does not exist")
        campaign = found[0]
        if contact is None:
            raise LookupError(f"campaign {cid}: no contact {n!r}")
        lang = contact.get("lang") or campaign.default_lang
        menu = Menu(name=f"notice-{cid}", source="campaign", start="", nodes={}, languages=(lang,))
        ctx = CallContext(uid=s.uniqueid, menu=menu, lang=lang, callerid=contact["number"].lstrip("+"))
        self.engine.sink.track(ctx.uid)
        continuity = getattr(self.dialer, "continuity", None)
        if continuity is not None:
            try:
                await continuity.mark_live(contact["number"], ctx.uid)
            except StoreError as exc:
                log.warning("campaign %s: contact %s: not marked as on a call (Redis: %s)", cid, n, exc)
        outcome, key, reference = "no_key", "", ""
        try:
            if amd == "MACHINE":
                await self.engine.play(s, ctx, (campaign.machine_message,))
                outcome = "machine"
                return
            message = campaign.message.get(lang) or next(iter(campaign.message.values()))
            update = contact.get("refund_status", "") if contact.get("refund") else ""
            for _ in range(2):
                if update in REFUND_STATUSES:   # a refund decision (ivr/refunds/service.py): the news, then the options
                    await self._say_refund_update(s, ctx, contact, update)
                    outcome = "heard"
                key = await self.engine.ask(s, ctx, (message,), 6.0)
                action = campaign.options.get(key)
                if action == "repeat" or action is None:
                    continue
                if self._needs_agent(action, contact) and not self.dialer.transfers.reserve(
                        campaign, s.uniqueid, account_code(cid, n, attempt)):
                    action = "callback"   # the campaign's transfers to agents are full: called back instead
                outcome = action
                # recorded before acting: a controller stopped mid-action knows the callee answered
                await self.store.campaigns.set_contact_fields(cid, n, {
                    "keypress": key, "key_action": action, "key_attempt": f"c:{cid}:{n}:{attempt}"})
                reference = await self._act(s, ctx, campaign.queue, action, contact)
                return
        except StoreError as exc:
            # the keypress's action (refund request, callback, opt-out) could not be stored: never report it
            # as done; the contact is retried under its retry rules instead
            log.warning("campaign %s: contact %s: %s not stored (Redis: %s); the contact will be retried",
                        cid, n, outcome, exc)
            outcome = "unknown"
        finally:
            try:
                await self.engine.sink.save(ctx.uid, {"caller": ctx.callerid, "menu": f"notice:{cid}",
                                                      "language": lang, "started_at": round(ctx.started, 3),
                                                      "ivr_outcome": f"notice_{outcome}", "campaign": cid,
                                                      "contact": n, "keypress": key})
            except StoreError as exc:
                log.warning("campaign %s: contact %s: call record not saved (Redis: %s)", cid, n, exc)
            if continuity is not None:
                try:   # the next inbound call of this number gets the short path (ivr/continuity/service.py)
                    await continuity.noticed(contact["number"], {
                        "campaign": cid, "contact": n, "action": outcome, "keypress": key, "lang": lang,
                        "booking": contact.get("booking") or "", "reference": reference, "uid": ctx.uid})
                except StoreError as exc:
                    log.warning("campaign %s: contact %s: notice not remembered (Redis: %s)", cid, n, exc)
            await self.dialer.record_outcome(cid, n, attempt, outcome, keypress=key if outcome != "machine" else "")

    async def _say_refund_update(self, s: AgiSession, ctx: CallContext, contact: dict, status: str) -> None:
        """"About your refund request for booking 3 1 4 1 5 9: its status is now: approved." """
        await self.engine.play(s, ctx, ("refund-update-intro",))
        booking = contact.get("booking") or ""
        if booking.isascii() and booking.isdigit() and len(booking) <= 12:
            await s.say_digits(booking)
        await self.engine.play(s, ctx, ("refund-update-status", f"status-{status}"))

    @staticmethod
    def _needs_agent(action: str | None, contact: dict) -> bool:
        """The choice ends with an agent: "agent", or a refund without a booking on file (_act)."""
        return action == "agent" or (action == "refund" and not _booking_ok(contact))

    async def _act(self, s: AgiSession, ctx: CallContext, queue: str, action: str, contact: dict) -> str:
        """Carry out the callee's choice; returns the refund reference when one was created."""
        number = contact["number"].lstrip("+")
        reference = ""
        if action == "refund":
            booking = contact.get("booking") or ""
            if _booking_ok(contact):
                service = getattr(self, "refunds", None)
                create = service.create if service is not None else self.store.refunds.create
                group = (contact.get("group") or "").strip().lower()
                rec = await create(booking, caller=number, lang=ctx.lang, source="notice", call_uid=ctx.uid,
                                   group=group if GROUP_RE.fullmatch(group) else "")
                reference = rec["reference"]
                await self.engine.play(s, ctx, ("refund-created",))
                await s.say_digits(reference)
            else:   # no booking on file: an agent takes the request
                await self._to_queue(s, queue)
                return reference
        elif action == "callback":
            await self.store.callbacks.request(number, queue=queue, lang=ctx.lang, call_uid=ctx.uid,
                                               joined_at=time.time(), caller=number)
            await self.engine.play(s, ctx, ("callback-booked",))
        elif action == "agent":
            await self._to_queue(s, queue)
            return reference
        elif action == "optout":
            await self.store.campaigns.dnc_add([contact["number"]])
            await self.engine.play(s, ctx, ("optout-done",))
        await self.engine.play(s, ctx, ("goodbye",))
        await s.set_variable("IVR_NEXT", "hangup")
        return reference

    async def _to_queue(self, s: AgiSession, queue: str) -> None:
        await self.engine.mset(s, {"IVR_QUEUE": queue, "IVR_PRIORITY": "5", "IVR_NEXT": "queue"})


def _booking_ok(contact: dict) -> bool:
    """A booking number a refund request can be made for (else an agent takes the request)."""
    booking = contact.get("booking") or ""
    return booking.isascii() and booking.isdigit() and 4 <= len(booking) <= 12
