"""Agents and the roster as the supervisor sees them: add, change, remove, log in or out, pause, coach.

``AgentService`` is what the HTTP layer (``ivr/api/routes_agents.py``) calls: it owns the roster changes, the
SIP account check, the AMI actions that go with them (QueueRemove of a removed agent, QueuePause, the coach's
Originate) and their audit lines. Refusals are ``ivr.core.service_errors`` (404 / 400 / 409 / 503 over HTTP).
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Mapping, Protocol

from ..app.config import AgentConfig, AsteriskConfig
from ..asterisk.ami_client import AmiError
from ..asterisk.provision import ProvisionError, phone_configs
from ..campaigns.outbound import internal_channel
from ..core import names as ev
from ..core.service_errors import Conflict, Invalid, NotFound, Unavailable
from .roster import Roster, RosterError

log = logging.getLogger(__name__)

# ChanSpy options: q no beep or name, E ends when the agent's call does; w the agent hears the coach and the
# caller does not; B the coach speaks to both. Fixed sets: nothing from the request reaches the dialplan.
COACH_MODES = {"listen": "qE", "whisper": "qEw", "barge": "qEB"}


class AmiActions(Protocol):
    """The one AMI call the service makes."""
    async def action(self, name: str, fields: Mapping[str, Any] | None = None, *,
                     timeout: float | None = None) -> Any: ...


class QueueMembership(Protocol):
    """What the live call-centre state tells about an agent's phone (``CallCenterState``)."""
    @property
    def queues(self) -> Mapping[str, Any]: ...

    def on_a_call(self, interface: str) -> bool: ...


class Waker(Protocol):
    """The balancing loop: woken after a roster change so it acts now, not at its next tick."""
    def wake(self) -> None: ...


class AccountCheck(Protocol):
    """The SIP provisioner: raises ``ProvisionError`` when accounts cannot be added at run time."""
    def check(self) -> None: ...


class Auditor(Protocol):
    async def audit(self, who: str, action: str, target: str, old: Any, new: Any) -> None: ...


class AgentService:
    """The supervisor's actions on agents, with the AMI actions they need."""

    def __init__(self, roster: Roster, state: QueueMembership, ami: AmiActions, balance: Waker,
                 provisioner: AccountCheck, audit: Auditor, asterisk: AsteriskConfig) -> None:
        self._roster = roster
        self._state = state
        self._ami = ami
        self._balance = balance
        self._provisioner = provisioner
        self._audit = audit
        self._asterisk = asterisk

    # ----------------------------------------------------------------- reading
    def describe(self) -> list[dict[str, Any]]:
        return self._roster.describe()

    def one(self, agent_id: str) -> dict[str, Any]:
        return next(a for a in self._roster.describe() if a["id"] == agent_id)

    def get(self, agent_id: str) -> AgentConfig:
        agent = self._roster.agents.get(agent_id)
        if agent is None:
            raise NotFound(f"no agent {agent_id!r}")
        return agent

    # ---------------------------------------------------------------- changing
    async def add(self, fields: Mapping[str, Any], by: str) -> dict[str, Any]:
        """Add an agent with a new SIP account; the answer carries the password, shown once."""
        try:
            self._provisioner.check()
        except ProvisionError as exc:
            raise Conflict(str(exc)) from None
        try:
            agent, password = await self._roster.add(fields, by=by)
        except RosterError as exc:
            raise (Conflict if "exists already" in str(exc) else Invalid)(str(exc)) from None
        except ProvisionError as exc:
            log.error("API: agent added but its SIP account is not applied yet: %s", exc)
            raise Unavailable(str(exc)) from None
        a = self._asterisk
        log.info("API: agent %s (%s, %s) added by %s", agent.id, agent.skill, agent.tier, by)
        return {
            "agent": self.one(agent.id),
            "sip": {"server": a.sip_host, "port": a.sip_port, "transport": "udp", "username": agent.id,
                    "password": password, "realm": "asterisk"},
            "phone_configs": phone_configs(a.sip_host, a.sip_port, agent.id, password, agent.name or agent.id),
            "note": "the password is shown once; it is stored only as a digest",
        }

    async def update(self, agent_id: str, changes: Mapping[str, Any], by: str) -> dict[str, Any]:
        await _roster_change(agent_id, self._roster.update(agent_id, changes, by=by))
        self._balance.wake()
        return self.one(agent_id)

    async def set_pin(self, agent_id: str, pin: str, by: str) -> None:
        await _roster_change(agent_id, self._roster.set_pin(agent_id, pin, by=by))

    async def set_logged_in(self, agent_id: str, logged_in: bool, by: str) -> None:
        await _roster_change(agent_id, self._roster.set_logged_in(agent_id, logged_in, by=by))
        self._balance.wake()
        log.info("API: agent %s logged %s by %s", agent_id, "in" if logged_in else "out", by)

    async def remove(self, agent_id: str, by: str) -> None:
        """Remove an agent added at run time, its SIP account, and its phone from every queue."""
        agent = self._roster.agents.get(agent_id)
        try:
            await self._roster.remove(agent_id, by=by)
        except KeyError:
            raise NotFound(f"no agent {agent_id!r}") from None
        except RosterError as exc:
            raise Conflict(str(exc)) from None
        except ProvisionError as exc:
            raise Unavailable(str(exc)) from None
        if agent is not None:   # out of every queue now: the balancing loop only manages agents on the roster
            for qname, q in list(self._state.queues.items()):
                for iface in agent.interfaces:
                    if iface in q.members:
                        try:
                            await self._ami.action("QueueRemove", {"Queue": qname, "Interface": iface})
                        except AmiError as exc:
                            log.warning("API: removing %s from %s: %s", iface, qname, exc)
        self._balance.wake()

    async def set_paused(self, agent_id: str, paused: bool, reason: str, by: str) -> None:
        """Pause or unpause the agent's phone in every queue (QueuePause), with an optional reason."""
        agent = self.get(agent_id)
        if any(c in reason for c in "\r\n"):
            raise Invalid("reason: no line breaks")
        if reason.startswith(ev.PAUSED_ELSEWHERE):   # a pause the cluster would take for its own and undo
            raise Invalid(f"reason: {ev.PAUSED_ELSEWHERE!r} starts the pauses of agents busy on another node")
        fields = {"Interface": agent.interface, "Paused": "true" if paused else "false"}
        if reason:
            fields["Reason"] = reason
        try:
            await self._ami.action("QueuePause", fields)
        except AmiError as exc:
            # the phone is in no queue (the agent is logged out): a state to change first, not an outage
            kind = Conflict if any(m in str(exc).lower() for m in ("not there", "not found")) else Unavailable
            raise kind(f"QueuePause: {exc}") from None
        await self._audit.audit(by, "agent.pause" if paused else "agent.unpause", agent_id, None, reason or paused)

    async def coach(self, agent_id: str, coach_id: str, mode: str, by: str) -> dict[str, Any]:
        """Ring the coach's phone into the agent's call (ChanSpy in ``mode``)."""
        agent, coach = self._roster.agents.get(agent_id), self._roster.agents.get(coach_id)
        if agent is None:
            raise NotFound(f"no agent {agent_id[:20]!r}")
        if coach_id == agent_id:
            raise Conflict(f"coach: an agent cannot coach themselves ({agent_id})")
        if coach is None:
            raise NotFound(f"coach: no agent {coach_id[:20]!r}")
        if mode not in COACH_MODES:
            raise Invalid(f"mode: expected one of {', '.join(COACH_MODES)}, got {mode[:20]!r}")
        if not self._state.on_a_call(agent.interface):
            raise Conflict(f"agent {agent_id} is not on a call: there is nothing to coach")
        if self._state.on_a_call(coach.interface):
            raise Conflict(f"coach {coach_id} is on a call of their own")
        try:   # the coach's own phone: an endpoint of ours, never the trunk (no outbound guard needed)
            await self._ami.action(ev.ORIGINATE, {
                "Channel": internal_channel(coach), "Context": "ivr-coach", "Exten": "s", "Priority": 1,
                "Async": "true", "Timeout": 30000, "CallerID": f"Coach {agent_id} <{agent_id}>",
                "Variable": [f"IVR_SPY={agent.interface}", f"IVR_SPY_OPTS={COACH_MODES[mode]}"]}, timeout=10)
        except AmiError as exc:
            raise Unavailable(f"the coach's phone could not be rung: {exc}") from None
        await self._audit.audit(by, "agent.coach", agent_id, None, {"coach": coach_id, "mode": mode})
        log.info("API: %s asked %s to %s agent %s", by, coach_id, mode, agent_id)
        return {"agent": agent_id, "coach": coach_id, "mode": mode, "ringing": coach.interface}


async def _roster_change(agent_id: str, change: Awaitable[Any]) -> None:
    """Await a roster change: no such agent is ``NotFound``, a refused change ``Invalid``."""
    try:
        await change
    except KeyError:
        raise NotFound(f"no agent {agent_id!r}") from None
    except RosterError as exc:
        raise Invalid(str(exc)) from None
