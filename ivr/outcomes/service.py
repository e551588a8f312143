"""Call outcomes: agents' dispositions (wrap-up codes) and callers' feedback routed to the teams.

* **Dispositions.** When a call ends the agent sets a code from ``dispositions`` in ivr.yaml, through
  the API (``POST /api/v1/calls/{uid}/disposition``) or from their phone: dialling ``*7<code>`` (e.g.
  ``*72``) during wrap-up sets it on the last call their phone was connected to (the controller keeps
  interface -> last call from AMI's AgentConnect, in memory and in Redis). Each disposition goes on the
  call record and into the ``dispositions`` stream that the reports read; a change is audited.
* **Feedback.** A ``feedback`` menu node records a short spoken message (Asterisk writes the file;
  ``feedback_dir``); post-call surveys of 1 or 2 out of 5 are feedback too. Each item is routed by the
  call's reason (``feedback_teams``) to a team's queue of items that the team works through the API
  (list, listen, mark done).

Redis keys:

| key                          | type   | what                                                        |
|------------------------------|--------|-------------------------------------------------------------|
| {p}:dispositions             | stream | uid, code, name, by, source, reason, agent, at              |
| {p}:agents:last_call         | hash   | queue member interface -> Uniqueid of the last caller bridged |
| {p}:feedback:seq             | string | last feedback item id                                       |
| {p}:feedback:{id}            | hash   | kind (recording / survey), team, reason, uid, caller, score, file, status |
| {p}:feedback:team:{team}     | zset   | open items of a team -> time                                |
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ..asterisk.agi_server import AgiSession
from ..app.config import Config
from ..prompts.library import PromptLibrary
from ..store.redis_store import Store
from ..webhooks.events import Events

if TYPE_CHECKING:
    from ..store.outcomes import OutcomeStore

log = logging.getLogger(__name__)

_ENDPOINT_RE = re.compile(r"^PJSIP/([A-Za-z0-9_.-]{1,40})-[0-9a-f]+$")
POOR_SURVEY = 2          # a survey score at or under this becomes a feedback item


class Outcomes:
    def __init__(self, cfg: Config, store: Store, prompts: PromptLibrary, events: Events | None = None) -> None:
        self.cfg = cfg
        self.events = events or Events.disabled()   # feedback.recorded
        self.store = store
        self.prompts = prompts
        self.codes = dict(cfg.dispositions)
        self.names = {name: code for code, name in cfg.dispositions}
        self.teams = dict(cfg.feedback_teams)
        self.last_call: dict[str, str] = {}
        self.feedback_dir = Path(cfg.feedback_dir or Path(cfg.workdir or ".") / "feedback")
        self.set_by_phone = 0

    @property
    def db(self) -> "OutcomeStore":
        """The store's outcomes part: everything this class keeps in Redis goes through it."""
        return self.store.outcomes

    # ------------------------------------------------------------ dispositions
    def agent_connected(self, interface: str, uid: str) -> None:
        self.last_call[interface] = uid

    async def remember_connect(self, interface: str, uid: str) -> None:
        await self.db.remember_connect(interface, uid)

    def resolve(self, value: str) -> tuple[str, str]:
        """(code, name) from a code or a name; ValueError names the known ones."""
        value = str(value).strip()
        if value in self.codes:
            return value, self.codes[value]
        if value in self.names:
            return self.names[value], value
        known = ", ".join(f"{c} {n}" for c, n in self.codes.items())
        raise ValueError(f"disposition: unknown code or name {value[:20]!r} (known: {known})")

    async def set_disposition(self, uid: str, value: str, *, by: str, source: str, note: str = "") -> dict[str, Any]:
        code, name = self.resolve(value)
        if len(note) > 500 or any(c in note for c in "\r\n\x00"):
            raise ValueError("note: at most 500 characters on one line")
        record = await self.store.call_get(uid)
        if not record:
            raise KeyError(uid)
        now = time.time()
        fields = {"disposition": name, "disposition_code": code, "disposition_by": by, "disposition_at": f"{now:.3f}"}
        if note:
            fields["disposition_note"] = note
        await self.store.call_disposition(uid, fields, {
            "uid": uid, "code": code, "name": name, "by": by, "source": source, "reason": record.get("reason", ""),
            "agent": record.get("agent", ""), "at": f"{now:.3f}"})
        if record.get("disposition"):
            await self.store.audit(by, "call.disposition", uid, record.get("disposition"), name)
        log.info("call %s: disposition %s (%s) set by %s via %s", uid, name, code, by, source)
        return {**record, **fields}

    async def by_phone(self, s: AgiSession) -> None:
        """AGI ``disposition/<code>``: an agent dialled *7<code> from their phone."""
        code = s.route_arg
        m = _ENDPOINT_RE.fullmatch(s.env.channel)
        lang = self.cfg.languages[0] if self.cfg.languages else "en"
        saved = False
        try:
            if m is None:
                raise LookupError(f"channel {s.env.channel!r} is not an agent's phone")
            interface = f"PJSIP/{m.group(1)}"
            uid = self.last_call.get(interface) or await self.db.last_call(interface)
            if not uid:
                raise LookupError(f"{interface} has taken no call to set a disposition on")
            await self.set_disposition(uid, code, by=f"agent {m.group(1)}", source="phone")
            saved = True
            self.set_by_phone += 1
        except (LookupError, ValueError) as exc:
            log.warning("disposition by phone refused: %s", exc)
        prompt = self.prompts.path(lang, "disposition-saved" if saved else "disposition-invalid")
        if prompt:
            await s.stream_file(prompt)

    # ---------------------------------------------------------------- feedback
    def team_for(self, reason: str) -> str:
        return self.teams.get(reason) or self.teams.get("other") or "support"

    async def add_feedback(self, *, kind: str, uid: str, reason: str, caller: str = "", lang: str = "",
                           score: int | None = None, file: str = "", seconds: float = 0.0) -> dict[str, Any]:
        team = self.team_for(reason or "other")
        item_id = await self.db.new_feedback_id()
        now = time.time()
        item = {"id": item_id, "kind": kind, "team": team, "reason": reason or "none", "uid": uid, "caller": caller,
                "lang": lang, "score": "" if score is None else str(score), "file": file,
                "seconds": f"{seconds:.1f}", "status": "open", "created": f"{now:.3f}"}
        await self.db.add_feedback(item, now)
        self.events.publish("feedback.recorded", item)
        log.info("call %s: %s feedback %s for team %s (reason %s)", uid, kind, item_id, team, reason or "none")
        return item

    async def survey_answered(self, uid: str, score: int, lang: str) -> dict[str, Any] | None:
        """A poor score (1-2) becomes an item for the team of the call's reason; returns it (None: no item)."""
        if score > POOR_SURVEY:
            return None
        record = await self.store.call_get(uid)
        return await self.add_feedback(kind="survey", uid=uid, reason=record.get("reason", ""),
                                       caller=record.get("caller", ""), lang=lang, score=score)

    async def attach_recording(self, item_id: str, file: str, seconds: float) -> None:
        await self.db.update_feedback(item_id, {"file": file, "seconds": f"{seconds:.1f}", "kind": "survey+recording"})

    async def feedback_items(self, team: str, count: int = 100) -> list[dict[str, Any]]:
        return await self.db.feedback_items(team, count)

    async def feedback_counts(self) -> dict[str, int]:
        """Open items per team."""
        return await self.db.feedback_counts(self.teams_known())

    async def feedback_get(self, item_id: str) -> dict[str, Any] | None:
        return await self.db.feedback(item_id)

    async def feedback_done(self, item_id: str, by: str, note: str = "") -> dict[str, Any]:
        item = await self.feedback_get(item_id)
        if item is None:
            raise KeyError(item_id)
        await self.db.close_feedback(item_id, item["team"], {"status": "done", "done_by": by,
                                                             "done_at": f"{time.time():.3f}", "note": note[:500]})
        await self.store.audit(by, "feedback.done", item_id, "open", "done")
        return {**item, "status": "done", "done_by": by}

    def recording_path(self, uid: str) -> Path:
        safe = re.sub(r"[^0-9A-Za-z]", "_", uid)[:40]
        self.feedback_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.feedback_dir, 0o770)
        return self.feedback_dir / f"{safe}-{int(time.time())}"

    def teams_known(self) -> list[str]:
        return sorted(set(self.teams.values()) | {"support"})


def summarise_dispositions(entries: list[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """reason -> disposition name -> count (the last disposition of each call)."""
    last: dict[str, Mapping[str, Any]] = {}
    for e in entries:
        last[str(e.get("uid"))] = e
    out: dict[str, dict[str, int]] = {}
    for e in last.values():
        r = out.setdefault(str(e.get("reason") or "none"), {})
        r[str(e.get("name"))] = r.get(str(e.get("name")), 0) + 1
    return out


class PhoneLogin:
    """AGI ``agent/login`` and ``agent/logout``: an agent dials *81 / *82 from their phone and keys in their
    PIN. The phone's SIP account says who they are; the PIN (set with ``PUT /api/v1/agents/{id}/pin``) proves
    it is them at that phone. The next balancing tick adds them to (or removes them from) their queues."""

    def __init__(self, cfg: Config, roster: Any, prompts: PromptLibrary, wake: Any = None) -> None:
        self.cfg = cfg
        self.roster = roster
        self.prompts = prompts
        self.wake = wake or (lambda: None)

    async def run(self, s: AgiSession) -> None:
        action = s.route_arg
        m = _ENDPOINT_RE.fullmatch(s.env.channel)
        agent_id = m.group(1) if m else ""
        agent = self.roster.agents.get(agent_id)
        langs = [x for x in (agent.languages if agent else ()) if x in self.cfg.languages]
        lang = langs[0] if langs else (self.cfg.languages[0] if self.cfg.languages else "en")
        if action not in ("login", "logout") or agent is None:
            log.warning("phone login: %s from %r refused (not an agent's phone or unknown action)", action,
                        s.env.channel)
            return await self._say(s, lang, "agent-pin-wrong")
        for _ in range(3):
            digits, _ = await s.get_data(self.prompts.path(lang, "agent-pin") or "beep", 8000, 8)
            ok = await self.roster.check_pin(agent_id, digits) if digits else False
            if ok is None:
                log.warning("phone login: agent %s has no PIN; a supervisor sets one first", agent_id)
                return await self._say(s, lang, "agent-no-pin")
            if ok:
                await self.roster.set_logged_in(agent_id, action == "login", by=f"phone {agent_id}")
                self.wake()
                log.info("phone login: agent %s logged %s from their phone", agent_id,
                         "in" if action == "login" else "out")
                return await self._say(s, lang, "agent-logged-in" if action == "login" else "agent-logged-out")
            log.warning("phone login: agent %s: wrong PIN from %s", agent_id, s.env.channel)
            await self._say(s, lang, "agent-pin-wrong")
        return None

    async def _say(self, s: AgiSession, lang: str, name: str) -> None:
        path = self.prompts.path(lang, name)
        if path:
            await s.stream_file(path)
