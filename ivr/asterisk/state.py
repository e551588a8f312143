"""Live model of queues, members and waiting callers, fed by AMI events.

Handlers are plain synchronous functions in a table keyed by event name: they
update dictionaries and never await, so an event burst cannot stall the loop.
After every (re)connect the model is rebuilt from QueueStatus (``resync``);
events that arrive meanwhile are applied as usual, and the QueueStatus answer
wins for anything it lists.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from ..core import names as ev

log = logging.getLogger(__name__)

Event = Mapping[str, Any]


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _bool(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes")


@dataclass(slots=True)
class Member:
    interface: str
    name: str = ""
    state_interface: str = ""
    membership: str = "dynamic"
    penalty: int = 0
    paused: bool = False
    paused_reason: str = ""
    status: int = ev.DEVICE_UNKNOWN
    in_call: bool = False
    calls_taken: int = 0
    last_call: int = 0
    bridged: str = ""        # the caller an AgentConnect bridged to this member, until its AgentComplete

    @property
    def held_elsewhere(self) -> bool:
        """Paused only because the agent is on a call on another node (a cluster): busy, not away."""
        return self.paused and self.paused_reason.startswith(ev.PAUSED_ELSEWHERE)

    @property
    def paused_here(self) -> bool:
        """Paused by a supervisor (or for any reason but a call on another node)."""
        return self.paused and not self.held_elsewhere

    @property
    def available(self) -> bool:
        """Free to take a queue call now."""
        return not self.paused and not self.in_call and self.status == ev.DEVICE_NOT_INUSE

    def as_dict(self) -> dict[str, Any]:
        return {
            "interface": self.interface, "name": self.name, "penalty": self.penalty,
            "paused": self.paused, "paused_reason": self.paused_reason,
            "status": ev.DEVICE_STATE_NAMES.get(self.status, str(self.status)),
            "in_call": self.in_call, "calls_taken": self.calls_taken, "last_call": self.last_call,
            "available": self.available, "membership": self.membership,
        }


@dataclass(slots=True)
class Caller:
    uniqueid: str
    channel: str = ""
    callerid: str = ""
    position: int = 0
    joined_at: float = 0.0          # wall-clock seconds
    priority: int = 0

    def as_dict(self, now: float) -> dict[str, Any]:
        return {"uniqueid": self.uniqueid, "channel": self.channel, "callerid": self.callerid,
                "position": self.position, "wait": round(max(0.0, now - self.joined_at), 1),
                "priority": self.priority}


@dataclass(slots=True)
class QueueStats:
    answered: int = 0
    abandoned: int = 0
    offered: int = 0
    answered_within_sl: int = 0
    total_hold: float = 0.0
    total_talk: float = 0.0


@dataclass(slots=True)
class QueueState:
    name: str
    members: dict[str, Member] = field(default_factory=dict)
    callers: dict[str, Caller] = field(default_factory=dict)
    stats: QueueStats = field(default_factory=QueueStats)
    servicelevel: int = 20
    strategy: str = ""
    asterisk_holdtime: int = 0      # Asterisk's own moving average (QueueParams Holdtime)
    asterisk_talktime: int = 0

    def ordered_callers(self) -> list[Caller]:
        return sorted(self.callers.values(), key=lambda c: (c.position or 10**9, c.joined_at))


# QueueMember Status numbers as the names DeviceStateChange uses
DEVICE_STATES = {0: "UNKNOWN", 1: "NOT_INUSE", 2: "INUSE", 3: "BUSY", 4: "INVALID", 5: "UNAVAILABLE",
                 6: "RINGING", 7: "RINGINUSE", 8: "ONHOLD"}


class CallCenterState:
    """The controller's view of every queue, member and waiting caller."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.queues: dict[str, QueueState] = {}
        self.channels: dict[str, dict[str, str]] = {}
        # device states of the agents' phones (PJSIP/<id> -> NOT_INUSE, UNAVAILABLE, ...), from
        # DeviceStateChange / DeviceStateList: known whether or not the device is in a queue now
        self.devices: dict[str, str] = {}
        self.events_seen = 0
        self.resyncs = 0
        self.last_resync_at = 0.0
        self._handlers: dict[str, Callable[[Event], None]] = {
            ev.QUEUE_PARAMS: self._on_queue_params,
            ev.QUEUE_MEMBER: self._on_member,
            ev.QUEUE_MEMBER_ADDED: self._on_member,
            ev.QUEUE_MEMBER_STATUS: self._on_member,
            ev.QUEUE_MEMBER_PAUSE: self._on_member,
            ev.QUEUE_MEMBER_PENALTY: self._on_member,
            ev.QUEUE_MEMBER_RINGINUSE: self._on_member,
            ev.QUEUE_MEMBER_REMOVED: self._on_member_removed,
            ev.QUEUE_ENTRY: self._on_entry,
            ev.QUEUE_CALLER_JOIN: self._on_join,
            ev.QUEUE_CALLER_LEAVE: self._on_leave,
            ev.QUEUE_CALLER_ABANDON: self._on_abandon,
            ev.AGENT_CONNECT: self._on_agent_connect,
            ev.AGENT_COMPLETE: self._on_agent_complete,
            ev.NEWCHANNEL: self._on_newchannel,
            ev.CORE_SHOW_CHANNEL: self._on_newchannel,
            ev.HANGUP: self._on_hangup,
            ev.DEVICE_STATE_CHANGE: self._on_device_state,
        }
        channel_handlers = {self._on_newchannel, self._on_hangup, self._on_device_state}
        self._queue_handlers = {h for h in self._handlers.values() if h not in channel_handlers}

    # ------------------------------------------------------------------ access
    def queue(self, name: str) -> QueueState:
        q = self.queues.get(name)
        if q is None:
            q = self.queues[name] = QueueState(name)
        return q

    def on_a_call(self, interface: str) -> bool:
        """Has the device ``PJSIP/1001`` a channel on Asterisk now (any call, queue or not)?"""
        prefix = interface + "-"
        return any(c.get("channel", "").startswith(prefix) for c in self.channels.values())

    def apply(self, event: Event) -> None:
        """Apply one AMI event (unknown events, and queue events without a queue, are ignored)."""
        handler = self._handlers.get(event.get("Event", ""))
        if handler is not None:
            if handler in self._queue_handlers and not event.get("Queue"):
                return
            self.events_seen += 1
            handler(event)

    def resync(self, queue_status: Iterable[Event], channels: Iterable[Event] | None = None,
               devices: Iterable[Event] | None = None) -> None:
        """Replace the model with the result of QueueStatus (and CoreShowChannels, DeviceStateList)."""
        if devices is not None:
            self.devices = {}
            for event in devices:
                self._on_device_state(event)
        old_stats = {name: q.stats for name, q in self.queues.items()}
        self.queues = {}
        for name, stats in old_stats.items():
            self.queue(name).stats = stats
        for event in queue_status:
            self.apply(event)
        if channels is not None:
            self.channels = {}
            for event in channels:
                self.apply(event)
        self.resyncs += 1
        self.last_resync_at = self.clock()

    # ---------------------------------------------------------------- handlers
    def _on_queue_params(self, e: Event) -> None:
        q = self.queue(e.get("Queue", ""))
        q.servicelevel = _int(e.get("ServiceLevel"), q.servicelevel)
        q.strategy = e.get("Strategy", q.strategy)
        q.asterisk_holdtime = _int(e.get("Holdtime"))
        q.asterisk_talktime = _int(e.get("TalkTime"))

    def _on_member(self, e: Event) -> None:
        q = self.queue(e.get("Queue", ""))
        interface = e.get("Interface") or e.get("Location") or ""
        if not interface:
            return
        m = q.members.get(interface)
        if m is None:
            m = q.members[interface] = Member(interface)
        m.name = e.get("MemberName") or e.get("Name") or m.name
        m.state_interface = e.get("StateInterface", m.state_interface)
        m.membership = e.get("Membership", m.membership)
        if "Penalty" in e:
            m.penalty = _int(e["Penalty"])
        if "Paused" in e:
            m.paused = _bool(e["Paused"])
        if "PausedReason" in e:
            m.paused_reason = e["PausedReason"]
        if "Status" in e:
            m.status = _int(e["Status"])
            # the device's state is known through its membership too, and kept after it leaves the queue
            self._on_device_state({"Device": interface, "State": DEVICE_STATES.get(m.status, "UNKNOWN")})
        if "InCall" in e:
            # a QueueMemberStatus raised by the device-state change of the answer can arrive after the
            # AgentConnect with InCall still 0: between AgentConnect and AgentComplete the member is in a call
            m.in_call = _bool(e["InCall"]) or bool(m.bridged)
        if "CallsTaken" in e:
            m.calls_taken = _int(e["CallsTaken"])
        if "LastCall" in e:
            m.last_call = _int(e["LastCall"])

    def _on_member_removed(self, e: Event) -> None:
        q = self.queues.get(e.get("Queue", ""))
        if q is not None:
            q.members.pop(e.get("Interface", ""), None)

    def _on_entry(self, e: Event) -> None:
        q = self.queue(e.get("Queue", ""))
        uid = e.get("Uniqueid", "")
        if not uid:
            return
        now = self.clock()
        q.callers[uid] = Caller(
            uniqueid=uid, channel=e.get("Channel", ""), callerid=e.get("CallerIDNum", ""),
            position=_int(e.get("Position")), joined_at=now - _int(e.get("Wait")),
            priority=_int(e.get("Priority")),
        )

    def _on_join(self, e: Event) -> None:
        q = self.queue(e.get("Queue", ""))
        uid = e.get("Uniqueid", "")
        if not uid:
            return
        q.stats.offered += 1
        position = _int(e.get("Position"))
        if position > 0:   # joined ahead of others (a priority, or a returning caller's place): they move back
            for c in q.callers.values():
                if c.position >= position:
                    c.position += 1
        q.callers[uid] = Caller(
            uniqueid=uid, channel=e.get("Channel", ""), callerid=e.get("CallerIDNum", ""),
            position=position, joined_at=self.clock(),
        )

    def _renumber(self, q: QueueState, left_position: int) -> None:
        if left_position <= 0:
            return
        for c in q.callers.values():
            if c.position > left_position:
                c.position -= 1

    def _on_leave(self, e: Event) -> None:
        q = self.queues.get(e.get("Queue", ""))
        if q is None:
            return
        caller = q.callers.pop(e.get("Uniqueid", ""), None)
        if caller is not None:
            self._renumber(q, _int(e.get("Position"), caller.position))

    def _on_abandon(self, e: Event) -> None:
        q = self.queues.get(e.get("Queue", ""))
        if q is not None:
            q.stats.abandoned += 1

    def _on_agent_connect(self, e: Event) -> None:
        q = self.queue(e.get("Queue", ""))
        hold = _int(e.get("HoldTime"))
        q.stats.answered += 1
        q.stats.total_hold += hold
        # app_queue's own estimate follows each answered call's wait (recalc_holdtime: an exponential
        # average with weight 1/4, in whole seconds); mirrored here so it is current between resyncs
        q.asterisk_holdtime = (3 * q.asterisk_holdtime + hold) >> 2
        if hold <= q.servicelevel:
            q.stats.answered_within_sl += 1
        m = q.members.get(e.get("Interface", ""))
        if m is not None:
            m.in_call = True
            m.bridged = e.get("Uniqueid", "") or "?"

    def _on_agent_complete(self, e: Event) -> None:
        q = self.queue(e.get("Queue", ""))
        q.stats.total_talk += _int(e.get("TalkTime"))
        m = q.members.get(e.get("Interface", ""))
        if m is not None:
            m.in_call = False
            m.bridged = ""

    def _on_device_state(self, e: Event) -> None:
        device = e.get("Device", "")
        if device.startswith("PJSIP/") and "/" not in device[6:]:   # the agents' endpoints, not channels or trunks
            self.devices[device] = e.get("State", "UNKNOWN")

    def _on_newchannel(self, e: Event) -> None:
        uid = e.get("Uniqueid", "")
        if uid:
            self.channels[uid] = {"channel": e.get("Channel", ""), "linkedid": e.get("Linkedid", uid),
                                  "callerid": e.get("CallerIDNum", "")}

    def _on_hangup(self, e: Event) -> None:
        uid = e.get("Uniqueid", "")
        self.channels.pop(uid, None)
        for q in self.queues.values():  # a caller whose channel vanished without a Leave event
            caller = q.callers.pop(uid, None)
            if caller is not None:
                self._renumber(q, caller.position)

    # ---------------------------------------------------------------- snapshot
    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready picture of every queue for the API, the dashboard and the balancer."""
        now = self.clock()
        out: dict[str, Any] = {"time": now, "queues": {}, "channels": len(self.channels)}
        for name, q in sorted(self.queues.items()):
            callers = q.ordered_callers()
            members = [m.as_dict() for m in sorted(q.members.values(), key=lambda m: m.interface)]
            s = q.stats
            out["queues"][name] = {
                "name": name,
                "waiting": len(callers),
                "longest_wait": round(max((now - c.joined_at for c in callers), default=0.0), 1),
                "callers": [c.as_dict(now) for c in callers],
                "members": members,
                "available": sum(1 for m in q.members.values() if m.available),
                "busy": sum(1 for m in q.members.values() if m.in_call),
                "paused": sum(1 for m in q.members.values() if m.paused),
                "offered": s.offered, "answered": s.answered, "abandoned": s.abandoned,
                "service_level": round(s.answered_within_sl / s.answered, 4) if s.answered else None,
                "asa": round(s.total_hold / s.answered, 1) if s.answered else None,
                "asterisk_holdtime": q.asterisk_holdtime,
                "servicelevel_target": q.servicelevel,
            }
        return out
