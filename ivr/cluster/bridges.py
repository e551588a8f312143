"""Proof that no agent was on two calls at once, from the AMI event logs of every node (pure).

A cluster test records each node's AMI events with the time it received them, then calls
``double_calls(logs)``: each AgentConnect opens a call of the agent (its Interface) on that node, closed by
the AgentComplete of the same caller, or by the Hangup of the caller's or the agent's channel; a call still
open at the end of its log lasts to the end. Two calls of one agent that overlap in time, on one node or
on two, are returned. Event times of different nodes are compared as given: record them with one clock
(the test process's), not with each Asterisk's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..core import names as ev

TimedEvent = tuple[float, Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class AgentCall:
    """One queue call of an agent on a node: from the AgentConnect to its end (inf: still going)."""

    agent: str
    node: str
    uid: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class DoubleCall:
    """Two calls of one agent at once."""

    agent: str
    first: AgentCall
    second: AgentCall

    def __str__(self) -> str:
        f, s = self.first, self.second
        return (f"agent {self.agent}: call {f.uid} on {f.node} ({f.start:.3f}-{f.end:.3f}) and call {s.uid} on "
                f"{s.node} ({s.start:.3f}-{s.end:.3f}) overlap")


def agent_of_interface(interface: str) -> str:
    """``PJSIP/1001`` -> ``1001`` (the agent ids of the SIP phones); anything else as it is."""
    tech, sep, rest = interface.partition("/")
    return rest if sep and tech.upper() == "PJSIP" else interface


def agent_calls(node: str, events: Iterable[TimedEvent],
                agent_of: Callable[[str], str] = agent_of_interface) -> list[AgentCall]:
    """The agents' queue calls of one node's event log (events in the order received)."""
    open_calls: dict[str, tuple[str, str, float]] = {}   # caller uid -> (agent, agent channel uid, start)
    by_agent_uid: dict[str, str] = {}                    # agent channel uid -> caller uid
    out: list[AgentCall] = []

    def close(uid: str, at: float) -> None:
        call = open_calls.pop(uid, None)
        if call is not None:
            agent, agent_uid, start = call
            by_agent_uid.pop(agent_uid, None)
            out.append(AgentCall(agent, node, uid, start, at))

    for at, e in events:
        kind, uid = e.get("Event"), str(e.get("Uniqueid") or "")
        if kind == ev.AGENT_CONNECT and uid and e.get("Interface"):
            close(uid, at)   # the same caller connected again (a second AgentConnect): one call ends first
            agent_uid = str(e.get("DestUniqueid") or "")
            open_calls[uid] = (agent_of(str(e["Interface"])), agent_uid, at)
            if agent_uid:
                by_agent_uid[agent_uid] = uid
        elif kind == ev.AGENT_COMPLETE and uid:
            close(uid, at)
        elif kind == ev.HANGUP and uid:
            close(by_agent_uid.get(uid, uid), at)
    for uid in list(open_calls):
        close(uid, math.inf)
    return out


def double_calls(logs: Mapping[str, Iterable[TimedEvent]],
                 agent_of: Callable[[str], str] = agent_of_interface) -> list[DoubleCall]:
    """Every pair of overlapping calls of one agent across the nodes' logs (node -> timed events); empty
    when no agent was ever bridged on two calls at once. Calls that only touch (one ends as the other
    starts) do not overlap."""
    calls: dict[str, list[AgentCall]] = {}
    for node, events in logs.items():
        for call in agent_calls(node, events, agent_of):
            calls.setdefault(call.agent, []).append(call)
    found: list[DoubleCall] = []
    for agent, theirs in sorted(calls.items()):
        theirs.sort(key=lambda c: (c.start, c.end))
        for i, first in enumerate(theirs):
            for second in theirs[i + 1:]:
                if second.start >= first.end:
                    break
                found.append(DoubleCall(agent, first, second))
    return found
