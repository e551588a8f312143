"""The outbound guard (ivr/campaigns/outbound.py): the pure verdict, its config, and every place that must ask it
before the line calls a number (the menu's callback node, the callback dispatcher, agents' mobiles)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import pytest

from ivr.balance.loop import BalanceLoop
from ivr.callbacks.service import CallbackDispatcher
from ivr.campaigns.model import MAX_HOURLY_CAP, CampaignError, campaign_from_dict, parse_campaign
from ivr.app.config import AgentConfig, ConfigError
from ivr.app.config_load import from_mapping
from ivr.app.metrics import Metrics
from ivr.campaigns.outbound import OutboundGuard, Policy, Verdict, internal_channel, judge, mask
from ivr.prompts.library import PromptLibrary
from ivr.agents.roster import Roster, RosterError
from ivr.store.errors import StoreUnavailable
from ivr.asterisk.state import CallCenterState

from .test_menu_engine import (CALLER, EXEC_OK, PLAYED, TIMEOUT, ScriptedAsterisk, bye, engine_for, gd,  # noqa: F401
                               handed_back, key, menu, prompts, P, record_of, run_call, sf)
from .test_menu_transcripts import FakeOutbound, World

UK = Policy(("+44",), frozenset({"fixed_line", "mobile", "fixed_line_or_mobile"}))
EVERYWHERE = Policy(("+1", "+3", "+4", "+8"), frozenset({"fixed_line", "mobile", "fixed_line_or_mobile"}))


# ================================================================ the pure verdict
def test_nothing_is_allowed_without_prefixes() -> None:
    v = judge("+442079460000", Policy())
    assert (v.ok, v.reason, v.number) == (False, "not_allowed_prefix", "+442079460000")


@pytest.mark.parametrize(("number", "ok", "reason", "kind"), [
    ("+442079460000", True, "", "fixed_line"),
    ("442079460000", True, "", "fixed_line"),                 # international digits without +
    ("+447911123456", True, "", "mobile"),
    ("+12025550123", False, "not_allowed_prefix", ""),        # another country
    ("+449012345678", False, "type_premium_rate", "premium_rate"),     # 09xx: premium rate
    ("+447012345678", False, "type_personal_number", "personal_number"),   # 070: "personal" numbers
    ("+448001234567", False, "type_toll_free", "toll_free"),
    ("+441632960000", False, "invalid", "unknown"),             # Ofcom's drama range: not a real number
    ("+44123", False, "invalid", "unknown"),
    ("", False, "invalid", ""),
    ("anonymous", False, "invalid", ""),
    ("+44 20 7946 0000", False, "invalid", ""),                 # only digits reach the guard
])
def test_uk_only(number: str, ok: bool, reason: str, kind: str) -> None:
    v = judge(number, UK)
    assert (v.ok, v.reason, v.kind) == (ok, reason, kind)


@pytest.mark.parametrize(("number", "reason"), [
    ("+881612345678", "type_satellite"),             # Iridium
    ("+870301234567", "type_satellite"),             # Inmarsat (phonenumbers calls it a mobile)
    ("+8823421234", "type_international_network"),
    ("+80812345678", "type_shared_cost"),            # international shared cost
    ("+34901123456", "type_shared_cost"),            # Spain 901
    ("+19005550199", "type_premium_rate"),           # US 900
    ("+43900123456", "type_premium_rate"),           # Austria 900
    ("+5557123", "not_allowed_prefix"),
])
def test_costly_types_are_refused_even_inside_the_prefixes(number: str, reason: str) -> None:
    assert judge(number, EVERYWHERE).reason == reason


def test_a_type_may_be_allowed_explicitly() -> None:
    policy = dataclasses.replace(UK, allowed_types=UK.allowed_types | {"premium_rate"})
    assert judge("+449012345678", policy).ok
    assert judge("+881612345678", dataclasses.replace(EVERYWHERE, allowed_types=frozenset({"satellite"}))).ok


def test_narrower_prefixes_of_a_campaign_only_narrow() -> None:
    assert judge("+442079460000", UK, ("+4420",)).ok
    assert judge("+447911123456", UK, ("+4420",)).reason == "not_allowed_prefix"
    assert judge("+12025550123", UK, ("+1",)).reason == "not_allowed_prefix"     # never widens


def test_a_region_reads_national_numbers() -> None:
    gb = dataclasses.replace(UK, region="GB")
    assert judge("02079460000", gb).number == "+442079460000" and judge("02079460000", gb).ok
    assert judge("00442079460000", gb).ok
    assert judge("09012345678", gb).reason == "type_premium_rate"
    assert judge("00881612345678", gb).reason == "not_allowed_prefix"
    assert judge("09012345678", UK).reason == "invalid"       # no region: "+0901..." is no number


def test_verdict_helpers() -> None:
    assert Verdict(True, "+442079460000").digits == "442079460000"
    assert Verdict(False, "+44", "cap_number").retry_later and not Verdict(False, "+44", "dnc").retry_later
    assert mask("+442079460000") == "+********0000" and mask("12") == "12"


def test_internal_channel_is_an_agents_own_phone() -> None:
    assert internal_channel(AgentConfig("1001")) == "PJSIP/1001"
    with pytest.raises(ValueError):
        internal_channel(AgentConfig("trunk/sip:449012345678@x"))


# ======================================================================= config
def test_no_outbound_section_dials_nothing() -> None:
    cfg = from_mapping({}, {})
    assert cfg.outbound.allowed_prefixes == ()
    assert not judge("+442079460000", Policy.from_config(cfg)).ok
    assert "NOTHING is dialled out" in OutboundGuard(cfg, None).describe()


def test_outbound_section_is_typed_and_the_region_falls_back_to_continuitys() -> None:
    cfg = from_mapping({"outbound": {"allowed_prefixes": ["+44", "+1202"], "allowed_types": ["mobile"],
                                     "per_number_hourly": 2, "global_hourly": 50},
                        "continuity": {"region": "GB"}}, {})
    assert cfg.outbound.allowed_prefixes == ("+44", "+1202") and cfg.outbound.per_number_hourly == 2
    p = Policy.from_config(cfg)
    assert p.region == "GB" and p.allowed_types == frozenset({"mobile"})
    assert "+44, +1202" in OutboundGuard(cfg, None).describe()
    env = from_mapping({}, {"IVR_OUTBOUND_ALLOWED_PREFIXES": "+44,+353"})
    assert env.outbound.allowed_prefixes == ("+44", "+353")


@pytest.mark.parametrize(("section", "message"), [
    ({"allowed_prefixes": ["44"]}, "outbound.allowed_prefixes[0]: expected an E.164 prefix"),
    ({"allowed_prefixes": ["+44", "+0"]}, "outbound.allowed_prefixes[1]:"),
    ({"allowed_types": ["mobile", "premium"]}, "outbound.allowed_types[1]: expected one of"),
    ({"per_number_hourly": 0}, "outbound.per_number_hourly: expected 1 to 100"),
    ({"global_hourly": 0}, "outbound.global_hourly: expected 1 to 1000000"),
    ({"default_region": "XX"}, "outbound.default_region: unknown region"),
    ({"allowed": ["+44"]}, "outbound.allowed: unknown key"),
])
def test_outbound_config_errors_name_the_key(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        from_mapping({"outbound": section}, {})


def test_campaign_hourly_cap_has_a_sane_ceiling() -> None:
    with pytest.raises(CampaignError, match="hourly_cap"):
        parse_campaign({"id": "c", "hourly_cap": 100_000})
    assert parse_campaign({"id": "c", "hourly_cap": MAX_HOURLY_CAP}).hourly_cap == MAX_HOURLY_CAP
    stored = {**parse_campaign({"id": "c"}).to_dict(), "hourly_cap": 100_000}   # stored before the ceiling
    assert campaign_from_dict(stored).hourly_cap == MAX_HOURLY_CAP


# ============================================================== the guard object
class FakeOutboundStore:
    def __init__(self, answer: str = "", fail: Exception | None = None) -> None:
        self.answer, self.fail = answer, fail
        self.asked: list[tuple[str, bool]] = []

    async def admit(self, number: str, *, per_number: int, global_cap: int, count: bool = True) -> str:
        self.asked.append((number, count))
        if self.fail is not None:
            raise self.fail
        return self.answer


class FakeStore:
    def __init__(self, answer: str = "", fail: Exception | None = None) -> None:
        self.outbound = FakeOutboundStore(answer, fail)
        self.audits: list[tuple[Any, ...]] = []

    async def audit(self, *args: Any) -> None:
        self.audits.append(args)


def guard_for(answer: str = "", fail: Exception | None = None, **outbound: Any) -> OutboundGuard:
    cfg = from_mapping({"outbound": {"allowed_prefixes": ["+44"], **outbound},
                        "asterisk": {"trunk_uri": "sip:198.51.100.7:5060"}}, {})
    return OutboundGuard(cfg, FakeStore(answer, fail), Metrics())


def refused_metric(guard: OutboundGuard, purpose: str, reason: str) -> float:
    value = guard.metrics.registry.get_sample_value("ivr_outbound_refused_total",
                                                    {"purpose": purpose, "reason": reason})
    return value or 0.0


async def test_a_refusal_is_logged_counted_and_audited(caplog: pytest.LogCaptureFixture) -> None:
    guard = guard_for()
    v = await guard.check("449012345678", "callback", ref="callback 7")
    assert (v.ok, v.reason) == (False, "type_premium_rate")
    assert guard.store.outbound.asked == []                  # refused before Redis is asked
    assert refused_metric(guard, "callback", "type_premium_rate") == 1
    (who, action, target, old, new), = guard.store.audits
    assert (who, action, target, new) == ("outbound-guard", "outbound.refused", "+449012345678",
                                         {"purpose": "callback", "reason": "type_premium_rate", "ref": "callback 7"})
    assert "outbound callback callback 7 to +********5678 refused: type_premium_rate" in caplog.text
    assert "449012345678" not in caplog.text
    assert b'ivr_outbound_refused_total{purpose="callback",reason="type_premium_rate"} 1.0' in guard.metrics.render()


async def test_the_shared_side_decides_dnc_and_caps() -> None:
    guard = guard_for("cap_global")
    v = await guard.check("442079460000", "campaign")
    assert (v.ok, v.reason, v.retry_later) == (False, "cap_global", True)
    assert guard.store.outbound.asked == [("+442079460000", True)]
    ok = guard_for("")
    assert (await ok.check("442079460000", "callback", count=False)).ok
    assert ok.store.outbound.asked == [("+442079460000", False)] and ok.store.audits == []


async def test_redis_down_is_a_refusal() -> None:
    guard = guard_for(fail=StoreUnavailable("down"))
    v = await guard.check("442079460000", "callback")
    assert (v.ok, v.reason, v.retry_later) == (False, "unavailable", True)
    assert guard.store.audits == [] and refused_metric(guard, "callback", "unavailable") == 1


# ===================================================================== the menu
CB_MENU = """\
name: t
start: cb
nodes:
  cb: {type: callback}
"""
SUPPORT = "IVR_QUEUE=support,IVR_PRIORITY=0,IVR_NEXT=queue"
PREMIUM = "449012345678"


async def test_9_then_2_a_typed_number_the_guard_refuses_is_never_stored(prompts: PromptLibrary, P: str) -> None:
    """The caller rejects their own number (2), types a premium number: refused with a prompt, their own
    number is offered again, and only that can be stored."""
    world = World(outbound=FakeOutbound(refuse={PREMIUM}))
    fake = ScriptedAsterisk([
        (sf(P, "callback-number-is", "12"), key("2")),
        (gd(P, "enter-number", 10000, 15), f"200 result={PREMIUM}"),
        (sf(P, "callback-number-refused"), PLAYED),
        (sf(P, "callback-number-is", "12"), PLAYED),
        (f'SAY DIGITS "{CALLER}" "12"', EXEC_OK),
        (gd(P, "callback-confirm", 5000, 1), "200 result=1"),
        bye(P, "callback-booked")])
    await run_call(engine_for(menu(CB_MENU), prompts, world), fake)
    assert fake.commands == fake.expected
    assert [cb["number"] for cb in world.callbacks.requests] == [CALLER]
    assert (PREMIUM, "callback", False) in world.outbound.checks      # asked, without using up the caps
    assert record_of(world)["path"] == ["cb", "callback-number-refused"]


async def test_an_anonymous_caller_whose_typed_number_is_refused_goes_to_the_queue(prompts: PromptLibrary,
                                                                                   P: str) -> None:
    world = World(outbound=FakeOutbound(refuse={PREMIUM}))
    fake = ScriptedAsterisk([
        (gd(P, "enter-number", 10000, 15), f"200 result={PREMIUM}"),
        (sf(P, "callback-number-refused"), PLAYED),
        handed_back(SUPPORT)])
    await run_call(engine_for(menu(CB_MENU), prompts, world), fake, callerid="anonymous")
    assert fake.commands == fake.expected
    assert world.callbacks.requests == []
    rec = record_of(world)
    assert rec["path"] == ["cb", "callback-number-refused", "callback-not-confirmed"]
    assert rec["ivr_outcome"] == "queued"


async def test_a_caller_id_the_guard_refuses_is_not_offered(prompts: PromptLibrary, P: str) -> None:
    world = World(outbound=FakeOutbound(refuse={CALLER}))
    fake = ScriptedAsterisk([
        (gd(P, "enter-number", 10000, 15), "200 result=442079460000"),
        (sf(P, "callback-number-is", "12"), PLAYED),
        ('SAY DIGITS "442079460000" "12"', key("1")),
        bye(P, "callback-booked")])
    await run_call(engine_for(menu(CB_MENU), prompts, world), fake)
    assert fake.commands == fake.expected
    assert [cb["number"] for cb in world.callbacks.requests] == ["442079460000"]


async def test_without_a_guard_no_callback_is_taken(prompts: PromptLibrary, P: str) -> None:
    world = World()
    fake = ScriptedAsterisk([handed_back(SUPPORT)])
    await run_call(engine_for(menu(CB_MENU), prompts, world, outbound=None), fake)
    assert fake.commands == fake.expected and world.callbacks.requests == []


# ======================================================== the callback dispatcher
class FakeAmi:
    def __init__(self) -> None:
        self.actions: list[tuple[str, dict[str, Any]]] = []

    async def action(self, name: str, fields: dict[str, Any], **kw: Any) -> Any:
        self.actions.append((name, fields))
        return [{"Response": "Success"}, {"Event": "OriginateResponse", "Response": "Success", "Uniqueid": "u9"}]


class FakeCallbackStore:
    def __init__(self, number: str, attempts: int = 0) -> None:
        self.rec = {"id": "7", "number": number, "queue": "support", "lang": "en", "attempts": str(attempts),
                    "status": "pending"}
        self.events: list[tuple[Any, ...]] = []

    async def claim(self, cb_id: str, node: str = "") -> dict[str, Any]:
        return dict(self.rec)

    async def close(self, cb_id: str, status: str, why: str) -> None:
        self.events.append(("close", status, why))

    async def finish(self, cb_id: str, outcome: str, *, retry_at: float | None = None,
                     extra: dict[str, str] | None = None) -> None:
        self.events.append(("finish", outcome, retry_at is not None))
        self.extra = dict(extra or {})

    async def mark_call(self, uid: str, cb_id: str, kept: str = "") -> None:
        self.events.append(("mark_call", uid))


def dispatcher(number: str, answer: str = "", attempts: int = 0) -> tuple[CallbackDispatcher, FakeAmi,
                                                                         FakeCallbackStore]:
    guard = guard_for(answer)
    ami, store = FakeAmi(), FakeCallbackStore(number, attempts)
    prompts = SimpleNamespace(path=lambda lang, name: None)
    d = CallbackDispatcher(_cfg(), ami, store, prompts, guard)  # type: ignore[arg-type]
    return d, ami, store


def _cfg() -> Any:
    return from_mapping({"outbound": {"allowed_prefixes": ["+44"]},
                         "asterisk": {"trunk_uri": "sip:198.51.100.7:5060"}}, {})


async def test_the_dispatcher_never_dials_a_refused_number_and_closes_it() -> None:
    d, ami, store = dispatcher("881612345678")
    await d.dispatch("7", "support")
    assert ami.actions == []
    assert store.events == [("close", "refused", "refused: not_allowed_prefix")]
    assert d.refused == 1 and d.dialled == 0


async def test_the_dispatcher_tries_again_later_after_a_cap_but_not_forever() -> None:
    d, ami, store = dispatcher("442079460000", answer="cap_number")
    await d.dispatch("7", "support")
    assert ami.actions == [] and store.events == [("finish", "refused: cap_number", True)]
    d, ami, store = dispatcher("442079460000", answer="cap_number", attempts=2)    # the last attempt
    await d.dispatch("7", "support")
    assert ami.actions == [] and store.events == [("finish", "refused: cap_number", False)]


async def test_the_dispatcher_dials_an_allowed_number_in_its_e164_digits() -> None:
    d, ami, store = dispatcher("442079460000")
    await d.dispatch("7", "support")
    (name, fields), = ami.actions
    assert name == "Originate" and fields["Channel"] == "PJSIP/trunk/sip:442079460000@198.51.100.7:5060"
    assert ("finish", "answered", False) in store.events


# ============================================================== agents' mobiles
async def test_a_mobile_the_guard_refuses_is_refused_at_set_time() -> None:
    guard = guard_for()
    roster = Roster(_cfg(), guard.store, guard)  # type: ignore[arg-type]
    with pytest.raises(RosterError, match=r"mobile: refused by the outbound guard \(type_premium_rate\)"):
        await roster.add({"name": "Vol", "mobile": PREMIUM})
    with pytest.raises(RosterError, match=r"\(not_allowed_prefix\)"):
        await roster._check_mobile("12025550311", "7001")
    await roster._check_mobile("447911123456", "7001")          # allowed: no error


async def test_a_refused_mobile_never_becomes_a_queue_member() -> None:
    guard = guard_for()
    cfg = dataclasses.replace(_cfg(), agents=(AgentConfig("1001", queues=("support",), mobile=PREMIUM),
                                              AgentConfig("1002", queues=("support",), mobile="447911123456")))
    roster = SimpleNamespace(agents={a.id: a for a in cfg.agents}, logged_in={"1001": True, "1002": True})
    loop = BalanceLoop(cfg, CallCenterState(), SimpleNamespace(connected=True), roster, guard=guard)  # type: ignore[arg-type]  # stand-ins
    assert loop.snapshot(0.0).agents["1002"].fallback_interface == ""       # not asked yet: not a member
    await loop.check_mobiles(100.0)
    agents = loop.snapshot(100.0).agents
    assert agents["1001"].fallback_interface == ""
    assert agents["1002"].fallback_interface == "Local/447911123456@agent-mobile/n"
    assert refused_metric(guard, "agent_mobile", "type_premium_rate") == 1
    await loop.check_mobiles(130.0)                                          # cached: not asked or reported again
    await loop.check_mobiles(200.0)                                          # asked again, still refused: once
    assert refused_metric(guard, "agent_mobile", "type_premium_rate") == 1
    no_guard = BalanceLoop(cfg, CallCenterState(), SimpleNamespace(connected=True), roster)  # type: ignore[arg-type]  # stand-ins
    await no_guard.check_mobiles(0.0)
    assert no_guard.snapshot(0.0).agents["1002"].fallback_interface == ""
