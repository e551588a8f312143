"""Caller continuity without Redis: number matching, rejoin positions, history summaries, and the
``continuity`` menu node over a scripted Asterisk (the Redis side is tested in
tests/integration/test_continuity.py against a real Redis and Asterisk)."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest
import redis.exceptions

from ivr.app.config import ConfigError

from ivr.app.config_load import from_mapping
from ivr.continuity.records import caller_key, summarise
from ivr.continuity.service import Continuity, Recognised
from ivr.app.config import ContinuityConfig
from ivr.menu.schema import MenuError, parse_menu
from ivr.prompts.library import PromptLibrary

from .test_menu_engine import P, prompts  # noqa: F401 (fixtures)
from .test_menu_engine import EXEC_OK, ScriptedAsterisk, engine_for, menu, record_of, run_call
from .test_menu_transcripts import LANGUAGES, QUEUES, World


# ============================================================ numbers
@pytest.mark.parametrize(("raw", "region", "expected"), [
    ("442079460000", "", "+442079460000"),
    ("+442079460000", "", "+442079460000"),
    ("02079460000", "GB", "+442079460000"),       # national, with the region
    ("00442079460000", "GB", "+442079460000"),    # the international prefix dialled from the UK
    ("442079460000", "GB", "+442079460000"),      # already international digits: the leading 44 is kept
    ("15551234567", "", "+15551234567"),
    ("5557123", "", "+5557123"),                  # short lab numbers still key (digits kept as they are)
    ("", "", ""), ("anonymous", "", ""), ("12345", "", ""), ("1234567890123456", "", ""),
    ("٥٥٥١٢٣٤٥٦٧", "", ""),                        # non-ASCII digits never reach Redis keys
])
def test_caller_key(raw: str, region: str, expected: str) -> None:
    assert caller_key(raw, region) == expected


def test_region_is_checked_in_the_config() -> None:
    assert from_mapping({"continuity": {"region": "GB"}}, env={}).continuity.region == "GB"
    with pytest.raises(ConfigError, match="continuity.region: unknown region 'XX'"):
        from_mapping({"continuity": {"region": "XX"}}, env={})
    with pytest.raises(ConfigError, match="continuity.window: expected 0 to 86400"):
        from_mapping({"continuity": {"window": -1}}, env={})


# ============================================================ positions
def test_a_returning_caller_goes_behind_only_those_whose_place_is_older() -> None:
    c = Continuity(ContinuityConfig(), store=_NoStore())  # type: ignore[arg-type]
    waiting = [("a", 100.0), ("b", 130.0), ("c", 160.0)]
    assert c.queue_position(waiting, 120.0) == 2      # behind a only
    assert c.queue_position(waiting, 50.0) == 1       # first in line
    assert c.queue_position(waiting, 500.0) == 4      # behind everyone: the end, as a new caller
    c.place_since["c"] = 90.0                         # c is itself a returning caller whose place is older
    assert c.queue_position(waiting, 120.0) == 3


def test_summary_keeps_what_the_agent_needs() -> None:
    record = {"uniqueid": "1.1", "started_at": "100.5", "outcome": "answered", "queue": "refunds", "agent": "Agent 1",
              "wait": "30", "talk": "120", "language": "fa", "menu": "main",
              "path": ["recognise", "notified", "notified_refund", "refund_create", "goodbye_self_service"],
              "vars": json.dumps({"booking": "314159", "refund_reference": "1000007", "notice_action": "callback",
                                  "place_since": "90.0"}), "channel": "PJSIP/trunk-1", "hangup_cause": "Normal"}
    s = summarise(record)
    assert s == {"uid": "1.1", "at": 100.5, "outcome": "answered", "queue": "refunds", "agent": "Agent 1",
                 "wait": "30", "talk": "120", "language": "fa", "menu": "main",
                 "path": record["path"], "refund": "1000007", "booking": "314159", "notice": "callback",
                 "returning": True}
    notice = summarise({"uniqueid": "2.2", "started_at": "5", "campaign": "storm", "keypress": "1",
                        "outcome": "notice_refund", "path": "not json"})
    assert notice == {"uid": "2.2", "at": 5.0, "campaign": "storm", "keypress": "1", "outcome": "notice_refund",
                      "kind": "notice"}


# ================================================================ schema
def test_schema_checks_the_continuity_node() -> None:
    good = """\
    name: t
    start: r
    nodes:
      r: {type: continuity, notified: n, next: m, welcome_back: [welcome-back]}
      n: {type: hangup}
      m: {type: hangup}
    """
    assert parse_menu(textwrap.dedent(good), "t.yaml", QUEUES, LANGUAGES).nodes["r"].get("notified") == "n"
    with pytest.raises(MenuError, match="node 'r' .*notified goes to unknown node 'nope'"):
        parse_menu(textwrap.dedent(good.replace("notified: n", "notified: nope")), "t.yaml", QUEUES, LANGUAGES)
    with pytest.raises(MenuError, match="rejoin must be true or false"):
        parse_menu(textwrap.dedent(good.replace("next: m", "next: m, rejoin: maybe")), "t.yaml", QUEUES, LANGUAGES)
    with pytest.raises(MenuError, match="missing field 'next' for a continuity node"):
        parse_menu(textwrap.dedent(good.replace(", next: m", "")), "t.yaml", QUEUES, LANGUAGES)


# ================================================================== node
NODE_MENU = """\
name: t
start: r
languages: [en, fa, zh]
nodes:
  r: {type: continuity, notified: n, next: fresh, welcome_back: [welcome-back]}
  n: {type: hangup, outcome: notified}
  fresh: {type: queue, queue: support}
"""


class FakeContinuity:
    def __init__(self, found: Recognised | BaseException, groups: dict[str, int] | None = None) -> None:
        self.found = found
        self.asked: list[tuple[str, str]] = []
        self.groups = groups or {}

    def group_priority(self, group: str) -> int:
        return self.groups.get(group, 0)

    async def recognise(self, uid: str, callerid: str) -> Recognised:
        self.asked.append((uid, callerid))
        if isinstance(self.found, BaseException):
            raise self.found
        return self.found


async def test_a_returning_caller_rejoins_their_queue_at_their_place(prompts: PromptLibrary, P: str) -> None:
    found = Recognised(number="+5551234", dropped={"queue": "refunds", "lang": "fa", "place_since": 1000.0,
                                                   "dropped_at": 1100.0, "waited": 95.0})
    positions: list[tuple[str, float]] = []
    fake = ScriptedAsterisk([
        ('SET VARIABLE "CHANNEL(language)" "fa"', "200 result=1"),
        ('SET VARIABLE "IVR_RETURNING" "1"', "200 result=1"),
        # welcome-back is played by the dialplan, just before Queue()
        (f'EXEC "MSet" "IVR_QUEUE=refunds,IVR_PRIORITY=0,IVR_POSITION=3,IVR_NEXT=queue,IVR_PLAY={P}/fa/welcome-back"',
         EXEC_OK)])
    world = World()
    cont = FakeContinuity(found)
    engine = engine_for(menu(NODE_MENU), prompts, world, continuity=cont,
                        queue_position=lambda q, since: positions.append((q, since)) or 3)
    await run_call(engine, fake)
    assert fake.commands == fake.expected
    assert positions == [("refunds", 1000.0)]
    rec = record_of(world)
    assert rec["path"] == ["r", "returning"] and rec["language"] == "fa"
    assert (rec["ivr_outcome"], rec["ivr_queue"], rec["vars"]["place_since"]) == ("queued", "refunds", "1000.000")
    assert cont.asked == [("1795700000.7", "5551234")]


async def test_a_drop_from_a_queue_no_longer_configured_starts_afresh(prompts: PromptLibrary, P: str) -> None:
    found = Recognised(number="+5551234", dropped={"queue": "gone", "lang": "en", "place_since": 1.0})
    fake = ScriptedAsterisk([('EXEC "MSet" "IVR_QUEUE=support,IVR_PRIORITY=0,IVR_NEXT=queue,IVR_PLAY="', EXEC_OK)])
    world = World()
    m = menu(NODE_MENU)
    from ivr.menu.engine import MenuEngine
    from ivr.menu.schema import MenuSet
    menus = MenuSet("/nonexistent", QUEUES, LANGUAGES)
    menus.menus = {m.name: m}  # type: ignore[assignment]
    engine = MenuEngine(menus, prompts, world.sink, "en", world.services(continuity=FakeContinuity(found)))
    await run_call(engine, fake)
    assert fake.commands == fake.expected
    assert record_of(world)["path"] == ["r", "fresh"]


async def test_a_notified_caller_takes_the_short_path_with_the_notice_on_the_channel(prompts: PromptLibrary,
                                                                                      P: str) -> None:
    found = Recognised(number="+5551234", notice={"campaign": "storm-1", "action": "refund", "lang": "zh",
                                                  "booking": "314159", "reference": "1000042", "at": "1"})
    fake = ScriptedAsterisk([
        ('SET VARIABLE "CHANNEL(language)" "zh"', "200 result=1"),
        ('EXEC "MSet" "IVR_NOTICE_CAMPAIGN=storm-1,IVR_NOTICE_ACTION=refund,IVR_NOTICE_REF=1000042,'
         'IVR_BOOKING=314159"', EXEC_OK),
        ('EXEC "MSet" "IVR_NEXT=hangup,IVR_PLAY="', EXEC_OK)])
    world = World()
    await run_call(engine_for(menu(NODE_MENU), prompts, world, continuity=FakeContinuity(found)), fake)
    assert fake.commands == fake.expected
    rec = record_of(world)
    assert rec["path"] == ["r", "n"] and rec["ivr_outcome"] == "notified" and rec["language"] == "zh"
    assert rec["vars"] == {"notice_campaign": "storm-1", "notice_action": "refund", "booking": "314159",
                           "notice_refund": "1000042"}


async def test_notice_values_that_could_reach_the_dialplan_are_not_set(prompts: PromptLibrary) -> None:
    found = Recognised(number="+5551234", notice={"campaign": "x,IVR_NEXT=hangup", "action": "${EVIL}",
                                                  "booking": "31;4159", "lang": "en"})
    fake = ScriptedAsterisk([('EXEC "MSet" "IVR_NEXT=hangup,IVR_PLAY="', EXEC_OK)])
    world = World()
    await run_call(engine_for(menu(NODE_MENU), prompts, world, continuity=FakeContinuity(found)), fake)
    assert fake.commands == fake.expected            # no MSet at all: every value was refused
    assert "booking" not in record_of(world)["vars"]


@pytest.mark.parametrize("failure", [redis.exceptions.ConnectionError("down"), TimeoutError()])
async def test_without_caller_history_the_caller_is_served_as_new(failure: BaseException,
                                                                  prompts: PromptLibrary) -> None:
    fake = ScriptedAsterisk([('EXEC "MSet" "IVR_QUEUE=support,IVR_PRIORITY=0,IVR_NEXT=queue,IVR_PLAY="', EXEC_OK)])
    world = World()
    await run_call(engine_for(menu(NODE_MENU), prompts, world, continuity=FakeContinuity(failure)), fake)
    assert fake.commands == fake.expected
    assert record_of(world)["path"] == ["r", "fresh"]


async def test_repeat_callers_get_the_configured_priority(prompts: PromptLibrary) -> None:
    found = Recognised(number="+5551234", repeat=True)
    fake = ScriptedAsterisk([('EXEC "MSet" "IVR_QUEUE=support,IVR_PRIORITY=4,IVR_NEXT=queue,IVR_PLAY="', EXEC_OK)])
    world = World()
    await run_call(engine_for(menu(NODE_MENU), prompts, world, continuity=FakeContinuity(found),
                              repeat_priority=4), fake)
    assert fake.commands == fake.expected
    assert record_of(world)["vars"] == {"repeat": "1"}
    # without the policy, a repeat caller queues like anyone else
    fake = ScriptedAsterisk([('EXEC "MSet" "IVR_QUEUE=support,IVR_PRIORITY=0,IVR_NEXT=queue,IVR_PLAY="', EXEC_OK)])
    await run_call(engine_for(menu(NODE_MENU), prompts, World(), continuity=FakeContinuity(found)), fake)
    assert fake.commands == fake.expected


async def test_a_withheld_number_is_not_looked_up(prompts: PromptLibrary) -> None:
    cont = FakeContinuity(Recognised())
    fake = ScriptedAsterisk([('EXEC "MSet" "IVR_QUEUE=support,IVR_PRIORITY=0,IVR_NEXT=queue,IVR_PLAY="', EXEC_OK)])
    await run_call(engine_for(menu(NODE_MENU), prompts, World(), continuity=cont), fake, callerid="anonymous")
    assert fake.commands == fake.expected and cont.asked == []


class _NoStore:
    class keys:
        prefix = "t"
    redis: Any = None


async def test_a_flagged_caller_queues_with_their_groups_priority(prompts: PromptLibrary) -> None:
    found = Recognised(number="+5551234", group="medical", repeat=True)
    fake = ScriptedAsterisk([('EXEC "MSet" "IVR_QUEUE=support,IVR_PRIORITY=8,IVR_NEXT=queue,IVR_PLAY="', EXEC_OK)])
    world = World()
    cont = FakeContinuity(found, groups={"medical": 8})
    await run_call(engine_for(menu(NODE_MENU), prompts, world, continuity=cont, repeat_priority=4), fake)
    assert fake.commands == fake.expected            # the higher of the group's 8 and the repeat caller's 4
    assert record_of(world)["vars"] == {"repeat": "1", "priority_group": "medical"}


def test_priority_groups_are_checked_in_the_config() -> None:
    cfg = from_mapping({"continuity": {"priority_groups": {"medical": 8, "disability": "9"}}}, env={})
    assert cfg.continuity.priority_groups == {"medical": 8, "disability": 9}
    with pytest.raises(ConfigError, match="continuity.priority_groups.vip: expected 1 to 100, got 0"):
        from_mapping({"continuity": {"priority_groups": {"vip": 0}}}, env={})
    with pytest.raises(ConfigError, match="group names are lower-case"):
        from_mapping({"continuity": {"priority_groups": {"VIP group": 5}}}, env={})
    with pytest.raises(ConfigError, match="continuity.priority_groups: expected a mapping"):
        from_mapping({"continuity": {"priority_groups": ["medical"]}}, env={})
    with pytest.raises(ConfigError, match="continuity.priority_groups.medical: expected an integer"):
        from_mapping({"continuity": {"priority_groups": {"medical": "high"}}}, env={})


def test_a_flag_counts_while_it_lasts_and_its_group_is_configured() -> None:
    c = Continuity(ContinuityConfig(priority_groups={"medical": 8}), store=_NoStore())  # type: ignore[arg-type]
    assert c._current_flag({"group": "medical", "until": 200.0}, now=100.0)
    assert c._current_flag({"group": "medical", "until": 50.0}, now=100.0) is None    # ended
    assert c._current_flag({"group": "vip", "until": 200.0}, now=100.0) is None       # group since removed
    assert c._current_flag(None, now=100.0) is None
    assert c.group_priority("medical") == 8 and c.group_priority("") == 0 and c.group_priority("vip") == 0
