"""The services in front of the adapters: what they send to Asterisk, what they refuse and how the HTTP layer
answers a refusal; and the HTTP layer never imports the composition root."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace
from typing import Any, Mapping

import pytest
from aiohttp.test_utils import TestClient, TestServer

from ivr.agents.service import AgentService
from ivr.api.access import AccessService, TokenAdmin
from ivr.api.app import build_app
from ivr.api.services import Services
from ivr.app.config import AgentConfig
from ivr.app.config_load import from_mapping
from ivr.asterisk.ami_client import AmiError
from ivr.core.service_errors import Conflict, Invalid, NotFound, Unavailable


class Ami:
    def __init__(self, fail: str = "") -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.fail = fail

    async def action(self, name: str, fields: Mapping[str, Any] | None = None, *,
                     timeout: float | None = None) -> Any:
        self.sent.append((name, dict(fields or {})))
        if self.fail:
            raise AmiError(self.fail)
        return {"Response": "Success"}


class Audit:
    def __init__(self) -> None:
        self.lines: list[tuple[Any, ...]] = []

    async def audit(self, who: str, action: str, target: str, old: Any, new: Any) -> None:
        self.lines.append((who, action, target, old, new))


class Roster:
    def __init__(self, *agents: AgentConfig) -> None:
        self.agents = {a.id: a for a in agents}
        self.removed: list[str] = []

    async def remove(self, agent_id: str, by: str = "") -> None:
        if agent_id not in self.agents:
            raise KeyError(agent_id)
        self.removed.append(agent_id)
        del self.agents[agent_id]


class State:
    def __init__(self, members: dict[str, set[str]], talking: frozenset[str] = frozenset()) -> None:
        self.queues = {q: SimpleNamespace(members=dict.fromkeys(ifaces)) for q, ifaces in members.items()}
        self.talking = talking

    def on_a_call(self, interface: str) -> bool:
        return interface in self.talking


def service(ami: Ami, state: State, *agents: AgentConfig) -> tuple[AgentService, Audit, list[int]]:
    audit, wakes = Audit(), []
    balance = SimpleNamespace(wake=lambda: wakes.append(1))
    cfg = from_mapping({}, env={})
    roster: Any = Roster(*agents)
    return AgentService(roster, state, ami, balance, SimpleNamespace(check=lambda: None), audit,
                        cfg.asterisk), audit, wakes


A, B = AgentConfig(id="1001"), AgentConfig(id="1002", mobile="15551234567")


async def test_pause_sends_queuepause_with_the_reason_and_audits_it() -> None:
    ami = Ami()
    agents, audit, _ = service(ami, State({}), A)
    await agents.set_paused("1001", True, "lunch", by="sup")
    assert ami.sent == [("QueuePause", {"Interface": "PJSIP/1001", "Paused": "true", "Reason": "lunch"})]
    assert audit.lines == [("sup", "agent.pause", "1001", None, "lunch")]


@pytest.mark.parametrize("error,kind", [("Interface not there", Conflict), ("QueuePause failed: Interface not found", Conflict),
                                        ("timeout", Unavailable)])
async def test_a_failed_queuepause_is_a_conflict_or_unavailable(error: str, kind: type) -> None:
    agents, audit, _ = service(Ami(fail=error), State({}), A)
    with pytest.raises(kind, match="QueuePause: "):
        await agents.set_paused("1001", False, "", by="sup")
    assert audit.lines == []


async def test_pause_refuses_unknown_agents_and_line_breaks() -> None:
    agents, _, _ = service(Ami(), State({}), A)
    with pytest.raises(NotFound):
        await agents.set_paused("9999", True, "", by="sup")
    with pytest.raises(Invalid, match="no line breaks"):
        await agents.set_paused("1001", True, "a\r\nAction: Originate", by="sup")


async def test_pause_refuses_the_reason_kept_for_agents_busy_on_another_node() -> None:
    ami = Ami()
    agents, audit, _ = service(ami, State({}), A)
    with pytest.raises(Invalid, match="busy@"):
        await agents.set_paused("1001", True, "busy@b", by="sup")
    assert ami.sent == [] and audit.lines == []


async def test_remove_takes_every_interface_of_the_agent_out_of_its_queues() -> None:
    ami = Ami()
    state = State({"support": {"PJSIP/1002", "PJSIP/1001"}, "sales": {B.mobile_interface}, "other": set()})
    agents, _, wakes = service(ami, state, A, B)
    await agents.remove("1002", by="sup")
    assert sorted((n, f["Queue"], f["Interface"]) for n, f in ami.sent) == [
        ("QueueRemove", "sales", B.mobile_interface), ("QueueRemove", "support", "PJSIP/1002")]
    assert wakes == [1]
    with pytest.raises(NotFound):
        await agents.remove("1002", by="sup")


async def test_coach_rings_the_coach_into_a_call_in_progress_only() -> None:
    ami = Ami()
    agents, audit, _ = service(ami, State({}, talking=frozenset({"PJSIP/1001"})), A, B)
    with pytest.raises(Invalid, match="mode"):
        await agents.coach("1001", "1002", "shout", by="sup")
    with pytest.raises(Conflict, match="coach themselves"):
        await agents.coach("1001", "1001", "whisper", by="sup")
    with pytest.raises(NotFound, match="coach: no agent"):
        await agents.coach("1001", "1999", "whisper", by="sup")
    with pytest.raises(Conflict, match="not on a call"):
        await agents.coach("1002", "1001", "whisper", by="sup")
    out = await agents.coach("1001", "1002", "whisper", by="sup")
    assert out == {"agent": "1001", "coach": "1002", "mode": "whisper", "ringing": "PJSIP/1002"}
    ((name, fields),) = ami.sent
    assert name == "Originate" and fields["Channel"] == "PJSIP/1002"
    assert fields["Variable"] == ["IVR_SPY=PJSIP/1001", "IVR_SPY_OPTS=qEw"]
    assert audit.lines == [("sup", "agent.coach", "1001", None, {"coach": "1002", "mode": "whisper"})]


async def test_a_service_refusal_is_answered_with_its_status_and_message() -> None:
    async def verify(token: str) -> dict[str, str] | None:
        return {"name": "sup", "role": "supervisor"} if token == "t" else None
    store: Any = SimpleNamespace(verify_token=verify)
    agents, _, _ = service(Ami(fail="Interface not there"), State({}), A)
    app = build_app(Services(access=AccessService(store, store, fail_limit=5, fail_window=60), agents=agents))
    headers = {"Authorization": "Bearer t"}
    async with TestClient(TestServer(app)) as client:
        async with client.post("/api/v1/agents/9999/pause", headers=headers) as resp:
            assert resp.status == 404 and await resp.json() == {"error": "no agent '9999'", "status": 404}
        async with client.post("/api/v1/agents/1001/pause", headers=headers) as resp:
            assert resp.status == 409 and (await resp.json())["error"].startswith("QueuePause: ")
        async with client.post("/api/v1/agents/1001/pause", headers=headers, data=b"not json") as resp:
            assert resp.status == 400 and (await resp.json())["error"] == "the body must be JSON"


async def test_token_admin_checks_the_role_and_audits_changes() -> None:
    made: list[tuple[str, str]] = []
    audit = Audit()

    async def create_token(name: str, role: str) -> str:
        made.append((name, role))
        return "secret"

    async def revoke_token(name: str) -> int:
        return 2
    book: Any = SimpleNamespace(create_token=create_token, revoke_token=revoke_token, audit=audit.audit)
    tokens = TokenAdmin(book)
    with pytest.raises(Invalid, match="--role"):
        await tokens.create("wall", "boss", by="cli")
    assert await tokens.create("wall", "viewer", by="cli") == "secret"
    assert await tokens.revoke("wall", by="cli") == 2
    assert made == [("wall", "viewer")]
    assert [line[1] for line in audit.lines] == ["token.create", "token.revoke"]


def test_the_http_layer_does_not_import_the_composition_root() -> None:
    code = ("import sys, ivr.api.app, ivr.api.openapi, ivr.campaigns.routes; "
            "print('ivr.app.controller' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
