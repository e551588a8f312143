"""The refund request lifecycle: received -> approved / rejected -> paid, decided by approvers through the
API (one by one or in bulk), some approved by policy, every decision told to the customer by phone.

A request is created in the IVR (menu option 2), by a keypress on an outbound notice, or by an agent
through the API. Storage (the request, its history, the per-status index) is ``RefundStore``; this
module adds what happens around a decision:

* **policy**: a request of a group in ``refunds.auto_approve_groups`` (e.g. medical workers, from the
  campaign contact's ``group`` column or the API), up to ``auto_approve_max``, is approved at once by
  ``policy``;
* **the customer is called**: a decision in ``refunds.notify`` adds a contact to the campaign
  ``refunds.notice_campaign`` (created and started on first use), so the calls are paced, kept within
  calling hours, retried and never doubled by the campaign engine. The callee hears "about your refund
  request for booking 3 1 4 1 5 9: its status is now: approved" in their language, and can press 3 for
  an agent or 1 to hear it again. A customer who calls in meanwhile is marked reached and not called
  (ivr/continuity/service.py); the IVR tells them the status at any time;
* **the outbound guard** (ivr/campaigns/outbound.py): a number it refuses gets no call, and the request says why;
  ``refunds.allowed_prefixes`` narrows ``outbound.allowed_prefixes`` further for these calls;
* **audit**: who decided what, when, from which status, with their note (``{p}:audit`` and the
  request's own history).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable


from ..campaigns import contacts, contacts_parse
from ..campaigns.model import CampaignError, parse_campaign
from ..app.config import Config
from ..campaigns.outbound import OutboundGuard
from ..store.errors import StoreError
from ..store.redis_store import Store
from ..webhooks.events import Events

log = logging.getLogger(__name__)

MAX_BULK = 1000


class RefundService:
    def __init__(self, cfg: Config, store: Store, dialer: Any, number_key: Callable[[str], str],
                 guard: OutboundGuard | None = None, events: Events | None = None) -> None:
        self.cfg = cfg
        self.events = events or Events.disabled()   # refund.requested, refund.decided
        self.guard = guard or OutboundGuard(cfg, store)
        self.rc = cfg.refunds
        self.store = store
        self.dialer = dialer
        self.number_key = number_key
        self.notices_queued = 0

    # ------------------------------------------------------------- creation
    async def create(self, booking: str, **kw: Any) -> dict[str, Any]:
        """Create a request, then apply the approval policy to it."""
        rec = await self.store.refunds.create(booking, **kw)
        self.events.publish("refund.requested", rec)
        return await self.apply_policy(rec)

    async def apply_policy(self, rec: dict[str, Any]) -> dict[str, Any]:
        group = rec.get("group") or ""
        if not group or group not in self.rc.auto_approve_groups:
            return rec
        amount = float(rec.get("amount") or 0)
        if self.rc.auto_approve_max and amount > self.rc.auto_approve_max:
            return rec
        note = f"group {group}" + (f", amount {amount:g} <= {self.rc.auto_approve_max:g}" if self.rc.auto_approve_max
                                   else "")
        decided, _ = await self.decide(rec["reference"], "approved", by="policy", note=note)
        log.info("refund %s: approved by policy (%s)", rec["reference"], note)
        return decided

    # ------------------------------------------------------------- decisions
    async def decide(self, ref: str, status: str, *, by: str, note: str = "") -> tuple[dict[str, Any], str]:
        """One decision: stored, audited, and the customer's call queued. Returns the request and what
        happened about the call (``queued`` / ``not queued: why`` / ``not notified``)."""
        old = await self.store.refunds.get(ref)
        rec = await self.store.refunds.set_status(ref, status, by=by, note=note)
        await self.store.audit(by, "refund.decide", ref, old.get("status") if old else None,
                               {"status": status, **({"note": note} if note else {})})
        self.events.publish("refund.decided", {**rec, "previous_status": old.get("status") if old else None,
                                               "decided_by": by, "note": note})
        if status not in self.rc.notify:
            return rec, "not notified"
        try:
            notice = await self.notify(rec)
        except (StoreError, OSError) as exc:   # the decision stands; the call can be queued again later
            notice = f"not queued: Redis ({exc})"
            log.warning("refund %s: decision stored, call not queued: %s", ref, exc)
        await self.store.refunds.set_fields(ref, notice=notice)
        return rec, notice

    async def decide_many(self, decisions: Iterable[dict[str, Any]], *, by: str) -> list[dict[str, Any]]:
        """Bulk: each decision on its own (one bad reference or transition never sinks the others)."""
        out = []
        for i, d in enumerate(decisions):
            ref, status = str(d.get("reference", "")), str(d.get("status", ""))
            try:
                rec, notice = await self.decide(ref, status, by=by, note=str(d.get("note") or ""))
                out.append({"reference": ref, "ok": True, "status": rec["status"], "notice": notice})
            except KeyError:
                out.append({"reference": ref, "ok": False, "error": f"decisions[{i}]: no refund request {ref!r}"})
            except ValueError as exc:
                out.append({"reference": ref, "ok": False, "error": f"decisions[{i}]: {exc}"})
        return out

    # ------------------------------------------------------------- the call
    async def ensure_campaign(self) -> str:
        cid = self.rc.notice_campaign
        found = await self.dialer.get(cid)
        if found is None:
            start, end = self.rc.notice_window.split("-")
            campaign = parse_campaign({
                "id": cid, "name": "Refund decisions", "message": {lang: "refund-update-options" for lang in
                                                                   self.cfg.languages},
                "options": {"1": "repeat", "3": "agent", "9": "optout"}, "window": {"start": start, "end": end},
                "max_attempts": self.rc.notice_max_attempts, "amd": self.rc.notice_amd,
                "pacing": {"cps": self.rc.notice_cps, "max_channels": max(2, int(self.rc.notice_cps * 10)),
                           "max_transfers": 2},
                "queue": self.rc.notice_queue or ("refunds" if "refunds" in self.cfg.queue_names()
                                                  else self.cfg.fallback_queue), "allowed_prefixes": list(self.rc.allowed_prefixes),
                "default_lang": self.cfg.languages[0] if self.cfg.languages else "en"},
                queues=frozenset(self.cfg.queue_names()), languages=tuple(self.cfg.languages))
            try:
                await self.dialer.create(campaign, by="refunds")
            except ValueError:
                pass   # created meanwhile by another node
            found = await self.dialer.get(cid)
        if found is not None and found[1] in ("draft", "done"):
            await self.dialer.set_state(cid, "running", by="refunds")
        return cid

    async def notify(self, rec: dict[str, Any]) -> str:
        number = self.number_key(str(rec.get("caller") or ""))
        if not number:
            return "not notified: no phone number on the request"
        row = {"number": number, "lang": rec.get("lang") or "", "booking": rec.get("booking") or "",
               "refund": rec["reference"], "refund_status": rec["status"]}
        checked = contacts_parse.validate_row(row, 0, default_lang=self.cfg.languages[0] if self.cfg.languages else "en",
                                              allowed_prefixes=self.rc.allowed_prefixes,
                                              keep_columns=("refund", "refund_status"),
                                              languages=tuple(self.cfg.languages))
        if isinstance(checked, contacts_parse.RowError):
            return f"not notified: {checked.reason}"
        verdict = await self.guard.check(checked.number, "refund", count=False, narrower=self.rc.allowed_prefixes,
                                         ref=f"refund {rec['reference']}")
        if not verdict.ok:     # the dialer would refuse it too: say so on the request now
            return f"not notified: refused by the outbound guard ({verdict.reason})"
        try:
            cid = await self.ensure_campaign()
        except CampaignError as exc:
            return f"not notified: the notice campaign is invalid ({exc})"
        n, status = await contacts.add_contact(self.store.campaigns, None, cid, checked)
        if status == "dnc":
            return "not notified: the number is on the do-not-call list"
        self.notices_queued += 1
        log.info("refund %s: %s call to %s queued (campaign %s, contact %d)", rec["reference"], rec["status"],
                 number, cid, n)
        return f"queued: campaign {cid}, contact {n}"
