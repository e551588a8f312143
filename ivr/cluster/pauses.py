"""Which queue members of this node to pause or unpause because their agent is on a call on another node.

Pure: ``plan_pauses`` maps (who is busy elsewhere, this node's members, the members this node paused for
that) to QueuePause actions; ivr/cluster/agents.py feeds it and sends them. A member held for that reason
is paused with ``busy@<node>`` (``ivr.core.names.PAUSED_ELSEWHERE``), a reason nobody else may use: so a
member paused for any other reason (a supervisor's, with or without a reason) is never touched, in either
direction, and a member held by a controller that restarted is recognised by its reason alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass

from ..core import names as ev

Key = tuple[str, str]   # (queue, member interface)


def reason_for(node: str) -> str:
    """The pause reason of a member whose agent is on a call on ``node``."""
    return f"{ev.PAUSED_ELSEWHERE}{node}"


def held_elsewhere(paused: bool, reason: str) -> bool:
    """A member in that state is paused only because its agent is busy on another node."""
    return paused and reason.startswith(ev.PAUSED_ELSEWHERE)


@dataclass(frozen=True, slots=True)
class MemberView:
    """One queue member of this node, as the live state shows it, with the agent it stands for."""

    queue: str
    interface: str
    agent: str
    paused: bool
    reason: str = ""

    @property
    def key(self) -> Key:
        return (self.queue, self.interface)


@dataclass(frozen=True, slots=True)
class PauseAction:
    """One QueuePause to send: ``reason`` is the pause's Reason (empty for an unpause); ``why`` is for the log."""

    queue: str
    interface: str
    agent: str
    paused: bool
    reason: str
    why: str

    @property
    def key(self) -> Key:
        return (self.queue, self.interface)


@dataclass(frozen=True, slots=True)
class PausePlan:
    actions: tuple[PauseAction, ...]
    ours: frozenset[Key]          # the members held for a call elsewhere once the actions are applied
    adopted: frozenset[Key]       # held with our reason but not known as ours (a controller restart)
    released: frozenset[Key]      # ours no longer: paused or unpaused by someone else meanwhile


def plan_pauses(busy_elsewhere: Mapping[str, str], members: Iterable[MemberView], ours: Set[Key]) -> PausePlan:
    """``busy_elsewhere``: agent -> the other node that has them on a call. For each member of such an agent:
    pause it if it is not paused (reason ``busy@<node>``), re-pause one of ours whose reason names another
    node, and leave a member paused for another reason alone. Unpause a member held for a call elsewhere
    whose agent is free again (or busy on this node: app_queue here knows that from the device state)."""
    actions: list[PauseAction] = []
    now_ours: set[Key] = set()
    adopted: set[Key] = set()
    seen: set[Key] = set()
    for m in members:
        seen.add(m.key)
        node = busy_elsewhere.get(m.agent)
        held = held_elsewhere(m.paused, m.reason)
        if held and m.key not in ours:
            adopted.add(m.key)
        if node is not None:
            want = reason_for(node)
            if not m.paused:
                actions.append(PauseAction(m.queue, m.interface, m.agent, True, want, f"on a call on {node}"))
                now_ours.add(m.key)
            elif held:
                now_ours.add(m.key)
                if m.reason != want:
                    actions.append(PauseAction(m.queue, m.interface, m.agent, True, want,
                                               f"now on a call on {node}"))
        elif held:
            actions.append(PauseAction(m.queue, m.interface, m.agent, False, "",
                                       f"free again (was {m.reason[len(ev.PAUSED_ELSEWHERE):]})"))
    released = frozenset(k for k in ours if k in seen and k not in now_ours and k not in {
        a.key for a in actions if not a.paused})
    return PausePlan(tuple(actions), frozenset(now_ours), frozenset(adopted), released)
