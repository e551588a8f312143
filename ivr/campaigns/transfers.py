"""Campaign calls sent to the agents: the count behind ``pacing.max_transfers``.

A notice campaign draws on the same agents as inbound callers and callbacks,
so each campaign has at most ``max_transfers`` of its answered calls on their
way to, waiting in, or talking from an agent queue. The count comes from real
events, per channel (its Uniqueid), never from a guess:
- the notice *reserves* one when the callee chooses an agent (refused when the
  campaign's transfers are full: the notice books a callback instead, since a
  callee on the line cannot be held back like a dial);
- the channel's QueueCallerJoin confirms it (a join that was never reserved, e.g.
  one from before a restart, counts all the same);
- the channel's Hangup ends it (the Queue() call goes on while the callee talks
  to the agent, so "with an agent" counts too);
- an AMI resync rebuilds the count from the channel list: a campaign channel in
  Queue() is a transfer, one whose channel is gone has ended.
The dialler holds a campaign's new dials while its transfers are full.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from ..core import names as ev
from .model import Campaign

log = logging.getLogger(__name__)

QUEUE_APP = "Queue"       # the dialplan application a transferred callee's channel runs (with the agent too)
CAMPAIGN_PREFIX = "c:"    # account codes of campaign calls: c:<campaign>:<contact>:<attempt>


@dataclass
class Transfer:
    cid: str
    code: str                 # the call's account code
    since: float              # monotonic time of the reservation or of the join
    joined: bool = False      # its QueueCallerJoin has been seen


def _uid(e: Mapping[str, Any]) -> str:
    return str(e.get("Uniqueid") or e.get("UniqueID") or "")


def _campaign_of(code: str) -> str:
    return code.split(":")[1] if code.startswith(CAMPAIGN_PREFIX) and code.count(":") >= 1 else ""


class Transfers:
    """The campaign calls with (or on their way to) the agents, by channel Uniqueid."""

    def __init__(self) -> None:
        self.calls: dict[str, Transfer] = {}

    def count(self, cid: str) -> int:
        return sum(1 for t in self.calls.values() if t.cid == cid)

    def full(self, c: Campaign) -> bool:
        """The campaign may dial nobody now (``max_transfers`` 0 means no transfers at all, not no dials)."""
        return c.pacing.max_transfers > 0 and self.count(c.id) >= c.pacing.max_transfers

    def reserve(self, c: Campaign, uniqueid: str, code: str) -> bool:
        """The callee on channel ``uniqueid`` chose an agent: take one of the campaign's ``max_transfers``
        (True), or False when they are all taken."""
        if uniqueid in self.calls:
            return True
        if self.count(c.id) >= c.pacing.max_transfers:
            log.info("campaign %s: call %s (%s): %d transfers to agents in flight (max_transfers): a callback "
                     "instead", c.id, uniqueid, code, self.count(c.id))
            return False
        self.calls[uniqueid] = Transfer(c.id, code, time.monotonic())
        log.info("campaign %s: call %s (%s): transfer to the agents, %d of %d", c.id, uniqueid, code,
                 self.count(c.id), c.pacing.max_transfers)
        return True

    def on_event(self, e: Mapping[str, Any]) -> None:
        """QueueCallerJoin of a campaign call: a transfer; Hangup of a transfer's channel: it ended."""
        name, uid = e.get("Event"), _uid(e)
        if not uid:
            return
        if name == ev.QUEUE_CALLER_JOIN:
            cid = _campaign_of(str(e.get("AccountCode", "")))
            if not cid:
                return
            t = self.calls.get(uid)
            if t is None:
                t = self.calls[uid] = Transfer(cid, str(e["AccountCode"]), time.monotonic())
                log.info("campaign %s: call %s (%s): in queue %s without a reservation: counted", cid, uid, t.code,
                         e.get("Queue", ""))
            t.joined = True
            log.debug("campaign %s: call %s (%s): joined queue %s", cid, uid, t.code, e.get("Queue", ""))
        elif name == ev.HANGUP and uid in self.calls:
            self._end(uid, f"hangup, cause {e.get('Cause', '')}")

    def reconcile(self, channels: Iterable[Mapping[str, Any]], since: float) -> None:
        """After an AMI resync (``channels``: CoreShowChannels, asked at monotonic ``since``)."""
        channels = list(channels)
        present = {_uid(c) for c in channels}
        for uid, t in list(self.calls.items()):
            if uid not in present and t.since < since:
                self._end(uid, "channel gone at an AMI resync")
        for c in channels:
            uid, code = _uid(c), str(c.get("AccountCode", ""))
            cid = _campaign_of(code)
            if cid and uid and c.get("Application") == QUEUE_APP and uid not in self.calls:
                self.calls[uid] = Transfer(cid, code, time.monotonic(), joined=True)
                log.info("campaign %s: call %s (%s): in an agent queue at an AMI resync: counted", cid, uid, code)

    def _end(self, uid: str, why: str) -> None:
        t = self.calls.pop(uid)
        log.info("campaign %s: call %s (%s): transfer ended (%s); %d in flight", t.cid, uid, t.code, why,
                 self.count(t.cid))
