"""Keep Asterisk's queue membership equal to the roster (desired state).

Each pass compares the desired members (agents logged in, per queue) with the
live state and sends only the difference (QueueAdd / QueueRemove). It runs only
while AMI is connected and resynced, so it never acts on a stale picture, and
it is idempotent: a member that is already there is never added twice.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from .ami import names as ev
from .ami.client import AmiClient, AmiError
from .config import Config
from .state import CallCenterState

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DesiredMember:
    queue: str
    interface: str
    name: str
    penalty: int


class RosterReconciler:
    """Applies the roster to app_queue, about once a second."""

    def __init__(self, cfg: Config, state: CallCenterState, ami: AmiClient) -> None:
        self.cfg = cfg
        self.state = state
        self.ami = ami
        self.interval = cfg.balance.interval
        self.logged_in: dict[str, bool] = {a.id: a.logged_in for a in cfg.agents}
        self.actions_sent = 0
        self.errors = 0
        self._wake = asyncio.Event()

    def set_logged_in(self, agent_id: str, logged_in: bool) -> None:
        """Log an agent in or out; the next pass (woken now) applies it."""
        if agent_id not in self.logged_in:
            raise KeyError(agent_id)
        self.logged_in[agent_id] = logged_in
        self._wake.set()

    def agents(self) -> list[dict[str, object]]:
        return [{"id": a.id, "name": a.name, "skill": a.skill, "team": a.team, "queues": list(a.queues),
                 "languages": list(a.languages), "logged_in": self.logged_in.get(a.id, False)}
                for a in self.cfg.agents]

    def desired(self) -> set[DesiredMember]:
        out = set()
        for agent in self.cfg.agents:
            if not self.logged_in.get(agent.id):
                continue
            for q in agent.queues:
                out.add(DesiredMember(q, agent.interface, agent.name or agent.id, agent.penalty))
        return out

    async def reconcile_once(self) -> int:
        """One pass; returns the number of actions sent."""
        if not self.ami.connected:
            return 0
        sent = 0
        managed = {a.interface for a in self.cfg.agents}
        desired = self.desired()
        wanted = {(d.queue, d.interface) for d in desired}
        for d in sorted(desired, key=lambda d: (d.queue, d.interface)):
            q = self.state.queues.get(d.queue)
            if q is not None and d.interface in q.members:
                continue
            try:
                await self.ami.action(ev.QUEUE_ADD, {
                    "Queue": d.queue, "Interface": d.interface, "MemberName": d.name,
                    "StateInterface": d.interface, "Penalty": d.penalty, "Paused": "false"})
                log.info("roster: added %s to %s", d.interface, d.queue)
            except AmiError as exc:
                if "already there" not in str(exc).lower():
                    self.errors += 1
                    log.warning("roster: QueueAdd %s to %s failed: %s", d.interface, d.queue, exc)
            sent += 1
        for qname, q in list(self.state.queues.items()):
            for interface in list(q.members):
                if interface in managed and (qname, interface) not in wanted:
                    try:
                        await self.ami.action(ev.QUEUE_REMOVE, {"Queue": qname, "Interface": interface})
                        log.info("roster: removed %s from %s", interface, qname)
                    except AmiError as exc:
                        self.errors += 1
                        log.warning("roster: QueueRemove %s from %s failed: %s", interface, qname, exc)
                    sent += 1
        self.actions_sent += sent
        return sent

    async def run(self) -> None:
        while True:
            try:
                await self.ami.ready.wait()
                await self.reconcile_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("roster: reconcile pass failed")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except asyncio.TimeoutError:
                pass
