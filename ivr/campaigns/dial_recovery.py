"""The dialer's crash recovery: settling the leases a previous run left, and freeing the channel slots of
calls whose end was never seen.

On start, ``Dialer.recover()`` looks at every lease (``settle_leases``): never dialled -> back to due; the
callee's key already acted on -> that is the outcome; dialled and still on a live channel (AMI shows its
AccountCode: ``live_account_codes``) -> left alone, its slot held again; dialled and gone -> outcome
``unknown``, retried after its back-off like any other outcome. A second call to the same person only ever
comes from a retry rule. A recovery that fails (Redis or AMI unreachable at start) is tried again with a
growing back-off; nothing is dialled until it has run.

Channel slots (``max_channels``) are held in memory from the dial until the call's Hangup event. A Hangup sent
while AMI was away is never seen, so every AMI resync calls ``Dialer.reconcile``: a slot whose channel is not
in Asterisk's list and whose Originate is not waiting for its response is free again (``free_stale_slots``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Awaitable, Callable, Collection, Mapping

from ..asterisk.ami_client import AmiClient
from ..core import names as ev
from . import contacts
from .dial_rules import Running

if TYPE_CHECKING:
    from ..store.campaigns import CampaignStore

log = logging.getLogger(__name__)

# (cid, n, attempt, outcome, keypress): Dialer.finish_attempt
Finish = Callable[[str, str, int, str, str], Awaitable[None]]
# (cid, n, contact fields) -> whether this node settles that lease (Dialer._owns)
Owns = Callable[[str, str, Mapping[str, str]], Awaitable[bool]]


async def live_account_codes(ami: AmiClient) -> set[str]:
    """Account codes of the campaign calls up now; AmiError when AMI cannot say (then nothing is settled:
    taking "no answer" for "nothing is live" would dial again people who are on the line)."""
    channels = await ami.list_action(ev.CORE_SHOW_CHANNELS, timeout=20)
    return {c.get("AccountCode", "") for c in channels if c.get("AccountCode", "").startswith("c:")}


async def settle_leases(db: "CampaignStore", live: set[str], finish: Finish,
                        hold: Callable[[str, str], Awaitable[None]], owns: Owns | None = None) -> dict[str, int]:
    """Settle every lease in every campaign (see the module docstring): ``finish`` ends an attempt, ``hold``
    takes the slot of a call still live (campaign id, account code); ``owns`` (a cluster) says which leases
    are this node's to settle (the others: another node's, or still in the work stream). Returns how many
    went which way."""
    summary = {"requeued": 0, "answered": 0, "still_live": 0, "unknown": 0, **({"others": 0} if owns else {})}
    for cid in await db.ids():
        for n in await db.leased(cid):
            contact = await contacts.contact(db, None, cid, int(n)) or {}
            if owns is not None and not await owns(cid, str(n), contact):
                summary["others"] += 1
                continue
            code = contact.get("attempt_id", "")
            if contact.get("status") != "in_progress":
                await db.requeue(cid, n, time.time())
                summary["requeued"] += 1
            elif contact.get("key_attempt") == code and contact.get("key_action"):
                # the callee pressed a key and the action ran before the stop: that is the outcome
                await finish(cid, str(n), int(contact.get("attempts") or 1), contact["key_action"],
                             contact.get("keypress", ""))
                summary["answered"] += 1
            elif code in live:
                summary["still_live"] += 1
                await hold(cid, code)
            else:
                await finish(cid, str(n), int(contact.get("attempts") or 1), "unknown", "")
                summary["unknown"] += 1
    if any(v for k, v in summary.items() if k != "others"):
        log.warning("dialer recovery: %s", summary)
    return summary


def node_owns(attempt_holder: Callable[[str, str, str], Awaitable[str]], node: str) -> Owns:
    """In a cluster, whether a lease is ``node``'s to settle: dialled there (the contact names it), or taken
    there from the work stream and not dialled yet (the claim's attempt key names it). A claim nobody took is
    still in the work stream: the nodes dial it from there."""
    async def owns(cid: str, n: str, contact: Mapping[str, str]) -> bool:
        if contact.get("status") == "in_progress":
            return contact.get("node") == node
        return await attempt_holder(cid, n, contact.get("claims") or "0") == node
    return owns


def free_stale_slots(running: Mapping[str, Running], live: Collection[str], originating: Collection[str],
                     since: float) -> int:
    """Free the slots of calls whose channel is not in ``live`` (the account codes AMI listed), unless their
    Originate is still waiting or they were taken at or after ``since``. Returns how many were freed."""
    freed = 0
    for cid, r in running.items():
        for code, taken in list(r.active.items()):
            if code in live or code in originating or taken >= since:
                continue
            del r.active[code]
            freed += 1
            log.warning("campaign %s: call %s ended while AMI was away (its Hangup was not seen): slot freed",
                        cid, code)
    return freed
