"""The dialer's rules, with no store and no AMI: the pace of a running campaign (a token bucket per campaign,
``Running`` and ``refill``), the calling window of a contact across its time zones (``contact_zones``,
``next_dial_time``), when a contact the outbound guard refused for now is tried again (``guard_retry_at``),
what an OriginateResponse or a hangup cause means as an outcome, which outcomes close a contact, and the
account code that ties a call to its attempt (``account_code``). ``dialer.py`` applies them.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from . import contacts_parse
from .model import Campaign

# OriginateResponse Reason (the last control frame): 5 busy, 3 ringing (no answer), 1 hung up, 8 congestion
ORIGINATE_REASONS = {"5": "busy", "3": "no_answer", "1": "no_answer", "0": "failed", "8": "failed"}
# Q.850 hangup causes of the outbound channel, which tell "busy" apart when the reason is 0 (PJSIP 486)
HANGUP_CAUSES = {"17": "busy", "18": "no_answer", "19": "no_answer", "16": "no_answer"}
FINAL_ACTIONS = {"refund": "done", "callback": "done", "agent": "done", "optout": "optout",
                 "heard": "done"}   # heard: an information call (a refund decision) listened to without a key
CLOSED = ("reached", "done", "failed", "optout", "dnc")   # contact statuses that are never dialled
NODE_LOST = "node_lost"   # the outcome of an attempt in progress on a lost node, with no choice recorded


def lost_attempt_outcome(contact: Mapping[str, str]) -> tuple[str, str]:
    """(outcome, new status) of an attempt a lost node left ``in_progress``: the callee's choice when the notice
    recorded one for this very attempt (it is recorded before its action runs, as the restart recovery reads
    it too), else ``node_lost``, which closes the contact as ``failed``: the Originate had gone out on that
    node's Asterisk and whether the callee answered (and heard the message) cannot be known, so the contact
    is never dialled again blindly."""
    code, action = contact.get("attempt_id", ""), contact.get("key_action", "")
    if code and contact.get("key_attempt") == code and action in FINAL_ACTIONS:
        return action, FINAL_ACTIONS[action]
    return NODE_LOST, "failed"


def account_code(cid: str, n: str, attempt: int) -> str:
    return f"c:{cid}:{n}:{attempt}"


@dataclass
class Running:
    campaign: Campaign
    tokens: float = 0.0
    pace: float = 1.0
    active: dict[str, float] = field(default_factory=dict)   # account codes of calls in flight -> when taken
    held: bool = False        # dials nobody: its transfers to agents are at max_transfers
    dialled: int = 0
    last: float = field(default_factory=time.monotonic)


def refill(r: Running, now: float) -> None:
    """Add the tokens earned since the last tick (``cps`` a second, scaled by the pace the balancing policy
    set), never more than a second's worth (at least one)."""
    c = r.campaign
    r.tokens = min(max(1.0, c.pacing.cps), r.tokens + (now - r.last) * c.pacing.cps * r.pace)
    r.last = now


class NoCommonTime(ValueError):
    """The contact's time zones share no calling time: it can never be called."""


def contact_zones(number: str, tz: str) -> list[ZoneInfo]:
    """The zones a contact's calling window must hold in: its own, or every zone of its number when its tz is
    ``*`` (contacts_parse.MULTI_ZONE); an unknown zone counts as UTC."""
    return [_zone(z) for z in (contacts_parse.number_zones(number) if tz == contacts_parse.MULTI_ZONE else (tz,))]


def next_dial_time(c: Campaign, zones: Sequence[ZoneInfo], now: datetime.datetime) -> float | None:
    """None when ``now`` (aware) is inside the campaign's calling window in every zone; else when the window
    next opens (unix s) in all of them. NoCommonTime when they never share one."""
    if c.in_window_everywhere(now, zones):
        return None
    if len(zones) == 1:
        return c.next_window_start(now.astimezone(zones[0])).timestamp()
    common = c.next_common_start(now, zones)
    if common is None:
        raise NoCommonTime(f"{len(zones)} time zones with no common calling time")
    return common.timestamp()


def guard_retry_at(reason: str, now: float) -> float:
    """When a contact the outbound guard refused for now is tried again: at the next clock hour for a cap,
    in a minute when Redis was away."""
    return (now // 3600 + 1) * 3600 if reason.startswith("cap_") else now + 60


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "Etc/UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("Etc/UTC")
