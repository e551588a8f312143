"""The agent roster: who may serve which queue, with skill, team, tier and penalty, and who is logged in.

Agents come from two places:

* the config file (``agents:``): their SIP accounts are rendered into
  ``pjsip.conf`` by ``ivr asterisk-conf render`` / ``ivr up``;
* added at run time by a supervisor (API ``POST /api/v1/agents``, typically
  volunteers pulled in for a surge): kept in Redis (``{p}:agents:added``), their
  SIP accounts written to ``pjsip_volunteers.conf`` and applied with a res_pjsip
  reload (see ``ivr/asterisk/provision.py``).

A supervisor may change any agent's name, skill, team, tier, queues, languages
and base penalty; changes to config agents are kept in Redis as overrides
(``{p}:agent:{id}`` field ``profile``) and win over the file until removed.
Whether each agent is logged in lives in the same hash, so it survives a
controller restart and is shared by every controller node. The balancing loop
reads the roster every tick; nothing here talks to Asterisk.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping

from ..app.config import SKILLS, AgentConfig, Config
from ..campaigns.outbound import OutboundGuard
from ..store.redis_store import Store

if TYPE_CHECKING:
    from ..store.agents import AgentStore

log = logging.getLogger(__name__)

SIP_REALM = "asterisk"
FIRST_RUNTIME_ID = 7001
_ID_RE = re.compile(r"^[0-9]{2,20}$")
_LANG_RE = re.compile(r"^[a-z]{2,3}$")
EDITABLE = ("name", "skill", "team", "tier", "queues", "languages", "penalty", "mobile")


PIN_ROUNDS = 100_000
PIN_TRIES = 5          # wrong PINs before phone login is refused ...
PIN_LOCK_S = 600       # ... for this long
PIN_HASH_THREADS = 2   # PINs hashed at once (each in a worker thread): a flood of *81 tries waits its turn


def pin_digest(pin: str, salt: bytes, rounds: int = PIN_ROUNDS) -> bytes:
    """PBKDF2-SHA256 of a PIN: tens of milliseconds of CPU, on purpose (run it off the event loop)."""
    return hashlib.pbkdf2_hmac("sha256", pin.encode(), salt, rounds)


class RosterError(ValueError):
    """A roster change is refused; the message names the field."""


def md5_cred(agent_id: str, password: str, realm: str = SIP_REALM) -> str:
    """The digest credential Asterisk checks (``auth_type = md5``): the password itself is never stored."""
    return hashlib.md5(f"{agent_id}:{realm}:{password}".encode()).hexdigest()  # noqa: S324 (SIP digest)


def check_profile(cfg: Config, data: Mapping[str, Any], *, partial: bool) -> dict[str, Any]:
    """Validate the editable fields of an agent; returns them normalised. Raises RosterError naming the field."""
    unknown = sorted(set(data) - set(EDITABLE) - ({"id"} if not partial else set()))
    if unknown:
        raise RosterError(f"unknown field {unknown[0]!r} (expected: {', '.join(EDITABLE)})")
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "id":
            continue
        if key in ("name", "team"):
            if not isinstance(value, str) or len(value) > 40 or any(c in value for c in "\r\n\"<>;[]"):
                raise RosterError(f"{key}: expected text of at most 40 characters, without quotes, brackets or ;")
            out[key] = value.strip()
        elif key == "skill":
            if value not in SKILLS:
                raise RosterError(f"skill: expected one of {', '.join(SKILLS)}, got {value!r}")
            out[key] = value
        elif key == "tier":
            if value not in ("core", "volunteer"):
                raise RosterError(f"tier: expected core or volunteer, got {value!r}")
            out[key] = value
        elif key == "queues":
            if not isinstance(value, list) or not all(isinstance(q, str) for q in value):
                raise RosterError("queues: expected a list of queue names")
            bad = [q for q in value if q not in cfg.queue_names()]
            if bad:
                raise RosterError(f"queues: unknown queue {bad[0]!r} (queues: {', '.join(cfg.queue_names())})")
            out[key] = tuple(dict.fromkeys(value))
        elif key == "languages":
            if not isinstance(value, list) or not all(isinstance(x, str) and _LANG_RE.fullmatch(x) for x in value):
                raise RosterError("languages: expected a list of language codes like 'en'")
            out[key] = tuple(dict.fromkeys(value))
        elif key == "mobile":
            if not isinstance(value, str) or (value and not re.fullmatch(r"[0-9]{3,20}", value)):
                raise RosterError("mobile: digits only, as the trunk dials it (empty to remove)")
            out[key] = value
        elif key == "penalty":
            if isinstance(value, float) and value.is_integer():   # JSON 77.0 is the whole number 77
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
                raise RosterError(f"penalty: expected a whole number 0-100, got {value!r}")
            out[key] = value
    return out


class Roster:
    """Agents from the config and from Redis, login state from Redis (cached; written through)."""

    def __init__(self, cfg: Config, store: Store, guard: OutboundGuard | None = None, *,
                 on_accounts_changed: Callable[[], Awaitable[None]] | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.guard = guard or OutboundGuard(cfg, store)   # an agent's mobile is a call out through the trunk
        self.configured: dict[str, AgentConfig] = {a.id: a for a in cfg.agents}
        self.agents: dict[str, AgentConfig] = dict(self.configured)
        self.logged_in: dict[str, bool] = {a.id: a.logged_in for a in cfg.agents}
        self.added: dict[str, str] = {}          # runtime agent id -> md5 digest credential
        self.changed_at = 0.0
        # called after an agent is added or removed (writes the SIP accounts, reloads res_pjsip)
        self.on_accounts_changed = on_accounts_changed
        self._hashing = asyncio.Semaphore(PIN_HASH_THREADS)

    @property
    def db(self) -> "AgentStore":
        """The store's agents part: everything this class keeps in Redis goes through it."""
        return self.store.agents

    async def load(self) -> None:
        """Read runtime agents, overrides and login state from Redis; config agents not there yet are seeded."""
        agents = dict(self.configured)
        added: dict[str, str] = {}
        for agent_id, raw in (await self.db.added()).items():
            try:
                data = json.loads(raw)
                profile: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data["profile"].items()}
                agents[agent_id] = AgentConfig(id=agent_id, **profile)
                added[agent_id] = str(data["md5_cred"])
            except (ValueError, KeyError, TypeError) as exc:
                log.error("roster: runtime agent %s in Redis is damaged (%s); skipped", agent_id, exc)
        for agent_id, agent in list(agents.items()):
            h = await self.db.state(agent_id)
            if "logged_in" not in h:
                await self.db.set_state(agent_id, {
                    "logged_in": "1" if agent.logged_in else "0", "updated": str(time.time()), "by": "config"})
                self.logged_in[agent_id] = agent.logged_in
            else:
                self.logged_in[agent_id] = h["logged_in"] == "1"
            if h.get("profile"):
                try:
                    override = check_profile(self.cfg, json.loads(h["profile"]), partial=True)
                    agents[agent_id] = dataclasses.replace(agent, **override)
                except (ValueError, TypeError) as exc:
                    log.error("roster: override for agent %s in Redis is invalid (%s); using the config", agent_id, exc)
        self.agents, self.added = agents, added
        self.changed_at = time.time()

    async def set_logged_in(self, agent_id: str, logged_in: bool, by: str = "") -> None:
        """Log an agent in or out (API, phone feature code); the next balancing tick applies it."""
        if agent_id not in self.agents:
            raise KeyError(agent_id)
        old = self.logged_in.get(agent_id, False)
        await self.db.set_state(agent_id, {
            "logged_in": "1" if logged_in else "0", "updated": str(time.time()), "by": by or "api"})
        self.logged_in[agent_id] = logged_in
        self.changed_at = time.time()
        if old != logged_in:
            await self.store.audit(by or "api", "agent.login" if logged_in else "agent.logout", agent_id, old, logged_in)

    # ------------------------------------------------------------ PINs (phone login)
    async def set_pin(self, agent_id: str, pin: str, by: str = "") -> None:
        """Store an agent's phone-login PIN (4-8 digits) as a salted PBKDF2 hash; the PIN itself is not kept."""
        if agent_id not in self.agents:
            raise KeyError(agent_id)
        if not (pin.isascii() and pin.isdigit() and 4 <= len(pin) <= 8):
            raise RosterError("pin: 4-8 digits")
        salt = os.urandom(16)
        digest = await self._pin_digest(pin, salt, PIN_ROUNDS)
        await self.db.set_state(agent_id, {"pin": f"pbkdf2${PIN_ROUNDS}${salt.hex()}${digest.hex()}"})
        await self.store.audit(by or "api", "agent.pin", agent_id, None, "set")

    async def check_pin(self, agent_id: str, pin: str) -> bool | None:
        """True/False, or None when the agent has no PIN. Wrong tries are counted: after PIN_TRIES within
        PIN_LOCK_S the PIN is refused whatever it is (guessing over the phone is throttled)."""
        stored = await self.db.pin(agent_id)
        if not stored:
            return None
        if await self.db.pin_fails(agent_id) >= PIN_TRIES:
            return False
        _, rounds, salt, digest = stored.split("$")
        ok = hmac.compare_digest((await self._pin_digest(pin, bytes.fromhex(salt), int(rounds))).hex(), digest)
        if ok:
            await self.db.clear_pin_fails(agent_id)
        else:
            await self.db.pin_failed(agent_id, PIN_LOCK_S)
        return ok

    async def _pin_digest(self, pin: str, salt: bytes, rounds: int) -> bytes:
        """pin_digest in a worker thread (hashlib lets go of the GIL meanwhile): the event loop, and every call
        it carries, goes on while a PIN is hashed."""
        async with self._hashing:
            return await asyncio.to_thread(pin_digest, pin, salt, rounds)

    # ------------------------------------------------------------ supervisor changes
    async def add(self, data: Mapping[str, Any], by: str = "") -> tuple[AgentConfig, str]:
        """Add an agent (a volunteer unless ``tier`` says otherwise) with a new SIP account.

        Returns the agent and its SIP password, which is shown once and never stored
        (Redis keeps only the digest credential).
        """
        profile = check_profile(self.cfg, data, partial=False)
        await self._check_mobile(profile.get("mobile", ""), str(data.get("id", "new agent")))
        profile.setdefault("tier", "volunteer")
        profile.setdefault("skill", "novice")
        profile.setdefault("queues", tuple(self.cfg.queue_names()))
        agent_id = data.get("id")
        if agent_id is None:
            agent_id = await self._next_id()
        agent_id = str(agent_id)
        if not _ID_RE.fullmatch(agent_id):
            raise RosterError(f"id: 2-20 digits (the SIP user name), got {agent_id!r}")
        if agent_id in self.agents:
            raise RosterError(f"id: agent {agent_id} exists already")
        password = secrets.token_urlsafe(18)
        cred = md5_cred(agent_id, password)
        stored = {"profile": {k: list(v) if isinstance(v, tuple) else v for k, v in profile.items()},
                  "md5_cred": cred, "added_at": time.time(), "by": by or "api"}
        if not await self.db.add(agent_id, json.dumps(stored), {
                "logged_in": "0", "updated": str(time.time()), "by": by or "api"}):
            raise RosterError(f"id: agent {agent_id} exists already")
        agent = AgentConfig(id=agent_id, **profile)
        self.agents[agent_id], self.added[agent_id], self.logged_in[agent_id] = agent, cred, False
        self.changed_at = time.time()
        await self.store.audit(by or "api", "agent.add", agent_id, None, stored["profile"])
        await self._accounts_changed()
        return agent, password

    async def update(self, agent_id: str, changes: Mapping[str, Any], by: str = "") -> AgentConfig:
        if agent_id not in self.agents:
            raise KeyError(agent_id)
        fields = check_profile(self.cfg, changes, partial=True)
        if not fields:
            raise RosterError(f"nothing to change (fields: {', '.join(EDITABLE)})")
        await self._check_mobile(fields.get("mobile", ""), agent_id)
        old = self.agents[agent_id]
        new = dataclasses.replace(old, **fields)
        profile = {k: list(getattr(new, k)) if isinstance(getattr(new, k), tuple) else getattr(new, k)
                   for k in EDITABLE}
        if agent_id in self.added:
            raw = await self.db.added_one(agent_id)
            stored = json.loads(raw) if raw else {"md5_cred": self.added[agent_id]}
            stored["profile"] = profile
            await self.db.replace_added(agent_id, json.dumps(stored))
        else:
            await self.db.set_state(agent_id, {"profile": json.dumps(profile)})
        self.agents[agent_id] = new
        self.changed_at = time.time()
        await self.store.audit(by or "api", "agent.update", agent_id,
                               {k: _plain(getattr(old, k)) for k in fields}, {k: _plain(v) for k, v in fields.items()})
        return new

    async def _check_mobile(self, mobile: str, agent_id: str) -> None:
        """A mobile the outbound guard refuses is refused here, at set time (400 from the API)."""
        if mobile:
            verdict = await self.guard.check(mobile, "agent_mobile", count=False, ref=f"agent {agent_id}")
            if not verdict.ok:
                raise RosterError(f"mobile: refused by the outbound guard ({verdict.reason}): see outbound.* in "
                                  "the configuration")

    async def remove(self, agent_id: str, by: str = "") -> None:
        """Remove an agent added at run time, with its SIP account (config agents: edit the file)."""
        if agent_id not in self.agents:
            raise KeyError(agent_id)
        if agent_id not in self.added:
            raise RosterError(f"agent {agent_id} is defined in the config file: remove it there")
        old = self.agents.pop(agent_id)
        del self.added[agent_id]
        self.logged_in.pop(agent_id, None)
        await self.db.remove(agent_id)
        self.changed_at = time.time()
        await self.store.audit(by or "api", "agent.remove", agent_id, {"name": old.name, "team": old.team}, None)
        await self._accounts_changed()

    async def _next_id(self) -> str:
        while True:
            n = await self.db.next_seq()
            agent_id = str(FIRST_RUNTIME_ID - 1 + int(n))
            if agent_id not in self.agents:
                return agent_id

    async def _accounts_changed(self) -> None:
        if self.on_accounts_changed is not None:
            await self.on_accounts_changed()

    def runtime_accounts(self) -> list[dict[str, Any]]:
        """What pjsip_volunteers.conf holds: one account per agent added at run time."""
        from ..asterisk.conf import device_options
        out = []
        for agent_id in sorted(self.added, key=lambda i: (len(i), i)):
            a = self.agents[agent_id]
            out.append({"id": agent_id, "display": (a.name or f"Agent {agent_id}")[:40], "contact": "",
                        "md5_cred": self.added[agent_id], "realm": SIP_REALM, "password": "",
                        **device_options(self.cfg, "", agent_id)})
        return out

    def describe(self) -> list[dict[str, Any]]:
        return [{"id": a.id, "name": a.name, "skill": a.skill, "team": a.team, "tier": a.tier,
                 "queues": list(a.queues), "languages": list(a.languages), "penalty": a.penalty,
                 "mobile": a.mobile,
                 "source": "api" if a.id in self.added else "config",
                 "logged_in": self.logged_in.get(a.id, False)} for a in self.agents.values()]


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v
