"""Escalation with 0, call reasons, the survey's feedback step, dispositions and reports by reason, with a
scripted Asterisk and in-memory fakes (the real thing: tests/integration/test_outcomes.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ivr.app.config import ConfigError

from ivr.app.config_load import from_mapping
from ivr.menu.schema import MenuError
from ivr.outcomes.service import Outcomes, summarise_dispositions
from ivr.prompts.library import PromptLibrary
from ivr.reports.service import build_reasons

from .test_menu_engine import P, prompts  # noqa: F401 (fixtures)
from .test_menu_engine import (EXEC_OK, PLAYED, TIMEOUT, ScriptedAsterisk, engine_for, gd, key, menu, record_of,
                               run_call, sf)
from .test_menu_transcripts import FakeRefunds, World

ESCALATING = """\
name: t
start: ask
escalate: agents
nodes:
  ask:
    type: collect
    reason: refund_status
    prompts: [enter-booking]
    min: 6
    max: 6
    timeout: 8
    validate: booking
    save_as: booking
    next: look
  look:
    type: lookup
    backend: refunds
    operation: status
    params: {booking: "{booking}"}
    say: [{prompt: refund-status-intro}, {prompt: "status-{status}"}]
    found: bye
    not_found: bye
  bye: {type: hangup, outcome: self_service}
  agents: {type: queue, queue: refunds}
"""


async def test_zero_instead_of_a_booking_number_goes_to_a_human_with_the_context(prompts: PromptLibrary,
                                                                                 P: str) -> None:
    fake = ScriptedAsterisk([
        (gd(P, "enter-booking", 8000, 6), "200 result=0"),
        ('EXEC "MSet" "__IVR_ESCALATED_FROM=ask,__IVR_PATH=ask>escalated"', EXEC_OK),
        ('SET VARIABLE "CALLERID(name)" "0 ask"', "200 result=1"),
        ('EXEC "MSet" "IVR_QUEUE=refunds,IVR_PRIORITY=0,IVR_NEXT=queue,IVR_PLAY="', EXEC_OK)])
    world = World()
    await run_call(engine_for(menu(ESCALATING), prompts, world), fake)
    assert fake.commands == fake.expected
    rec = record_of(world)
    assert rec["path"] == ["ask", "escalated", "agents"]
    assert (rec["escalated_from"], rec["reason"], rec["vars"]) == ("ask", "refund_status", {"escalated_from": "ask"})


async def test_zero_while_the_result_is_read_out_escalates_with_what_was_said(prompts: PromptLibrary, P: str) -> None:
    world = World(refunds=FakeRefunds({"314150": {"reference": "1000042", "status": "rejected"}}))
    fake = ScriptedAsterisk([
        (gd(P, "enter-booking", 8000, 6), "200 result=314150"),
        (sf(P, "refund-status-intro", "0"), PLAYED),
        (sf(P, "status-rejected", "0"), key("0")),
        ('EXEC "MSet" "__IVR_ESCALATED_FROM=look,__IVR_PATH=ask>look>escalated,__IVR_BOOKING=314150,'
         '__IVR_SAID=look:rejected"', EXEC_OK),
        ('SET VARIABLE "CALLERID(name)" "0 look 314150"', "200 result=1"),
        ('EXEC "MSet" "IVR_QUEUE=refunds,IVR_PRIORITY=0,IVR_NEXT=queue,IVR_PLAY="', EXEC_OK)])
    await run_call(engine_for(menu(ESCALATING), prompts, world), fake)
    assert fake.commands == fake.expected
    rec = record_of(world)
    assert rec["escalated_from"] == "look" and rec["vars"]["said"] == "look:rejected"


async def test_zero_means_nothing_where_no_escalation_is_set(prompts: PromptLibrary, P: str) -> None:
    text = ESCALATING.replace("escalate: agents\n", "")
    fake = ScriptedAsterisk([(gd(P, "enter-booking", 8000, 6), "200 result=0"), (sf(P, "invalid"), PLAYED),
                             (gd(P, "enter-booking", 8000, 6), TIMEOUT), (sf(P, "no-input"), PLAYED),
                             (gd(P, "enter-booking", 8000, 6), TIMEOUT)])
    world = World()
    await run_call(engine_for(menu(text), prompts, world), fake)
    assert fake.commands == fake.expected
    assert record_of(world)["path"] == ["ask", "retries-exhausted"]


SURVEY = """\
name: t
start: q
survey: s
nodes:
  q: {type: queue, queue: support}
  s: {type: survey, feedback: f}
  f: {type: feedback, max_seconds: 30}
"""


def test_schema_checks_escalation_reasons_and_feedback() -> None:
    with pytest.raises(MenuError, match="escalate must name a queue node, got 'bye'"):
        menu(ESCALATING.replace("escalate: agents", "escalate: bye"))
    with pytest.raises(MenuError, match="reason must be a lower-case name"):
        menu(ESCALATING.replace("reason: refund_status", "reason: Refund Status"))
    with pytest.raises(MenuError, match="feedback must name a feedback node, got 'q'"):
        menu(SURVEY.replace("feedback: f", "feedback: q"))
    with pytest.raises(MenuError, match="max_seconds must be a number from 5 to 300"):
        menu(SURVEY.replace("max_seconds: 30", "max_seconds: 1000"))


class FakeOutcomes:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.items: list[dict[str, Any]] = []
        self.attached: list[tuple[str, str]] = []
        self.context: dict[str, dict[str, Any]] = {}

    async def survey_answered(self, uid: str, score: int, lang: str) -> dict[str, Any] | None:
        if score > 2:
            return None
        item = {"id": str(len(self.items) + 1), "reason": "rebooking", "score": score}
        self.items.append(item)
        return item

    def recording_path(self, uid: str) -> Path:
        return self.tmp / "rec"

    async def attach_recording(self, item_id: str, file: str, seconds: float) -> None:
        self.attached.append((item_id, file))

    async def add_feedback(self, **kw: Any) -> dict[str, Any]:
        self.items.append(kw)
        return {"id": "9"}




@pytest.mark.parametrize("score", ["1", "4"])
async def test_a_poor_survey_asks_for_a_recorded_message(score: str, prompts: PromptLibrary, P: str,
                                                         tmp_path: Path) -> None:
    out = FakeOutcomes(tmp_path)
    script: list[tuple[str, Any]] = [('GET VARIABLE "IVR_QUEUE"', "200 result=1 (support)"),
                                     (gd(P, "survey-intro", 6000, 1), f"200 result={score}")]
    if score == "1":
        def record(cmd: str) -> str:           # Asterisk writes the file, then answers
            (tmp_path / "rec.wav").write_bytes(b"RIFF" + b"\0" * 4000)
            return "200 result=0 endpos=40000"
        script += [(sf(P, "feedback-intro"), PLAYED)]
        fake = ScriptedAsterisk(script, responder=lambda cmd: record(cmd) if cmd.startswith("RECORD FILE") else PLAYED)
    else:
        script += [(sf(P, "survey-thanks"), PLAYED)]
        fake = ScriptedAsterisk(script)
    world = World()
    engine = engine_for(menu(SURVEY), prompts, world, outcomes=out)
    from .test_menu_engine import make_session
    await engine.run_survey(make_session(fake, "survey/t"))
    if score == "1":
        assert fake.commands[3] == f'RECORD FILE "{tmp_path}/rec" "wav" "#" "30000" "0" "BEEP" "s=3"'
        assert fake.commands[4] == sf(P, "feedback-thanks")
        assert out.attached == [("1", "rec.wav")]
    else:
        assert fake.commands == fake.expected and out.items == [] and out.attached == []


def test_dispositions_config_is_checked() -> None:
    cfg = from_mapping({"dispositions": {"1": "sorted", "22": "refund_sent"}}, env={})
    assert dict(cfg.dispositions) == {"1": "sorted", "22": "refund_sent"}
    for bad, why in (({"1234": "x"}, "codes are 1-3 digits"), ({"1": "Not OK"}, "names are lower-case"),
                     ({"1": "a", "2": "a"}, "each name once")):
        with pytest.raises(ConfigError, match=why):
            from_mapping({"dispositions": bad}, env={})


def test_codes_and_names_resolve_and_unknown_ones_are_named() -> None:
    o = Outcomes(from_mapping({}, env={}), _Store(), None)  # type: ignore[arg-type]
    assert o.resolve("2") == ("2", "refund_requested") and o.resolve("rebooked") == ("3", "rebooked")
    with pytest.raises(ValueError, match=r"unknown code or name '77' \(known: 1 resolved, 2 refund_requested"):
        o.resolve("77")
    assert o.team_for("refund_status") == "refunds" and o.team_for("nonsense") == "support"


def test_report_by_reason_counts_outcomes_escalations_and_the_last_disposition() -> None:
    recs = [{"uniqueid": "a", "ended_at": "100", "reason": "refund_status", "outcome": "self_service", "menu": "main"},
            {"uniqueid": "b", "ended_at": "101", "reason": "refund_status", "outcome": "answered", "menu": "main",
             "escalated_from": "ask"},
            {"uniqueid": "c", "ended_at": "102", "reason": "rebooking", "outcome": "abandoned", "menu": "main"},
            {"uniqueid": "d", "ended_at": "500", "reason": "rebooking", "outcome": "answered", "menu": "main"},
            {"uniqueid": "e", "ended_at": "103", "outcome": "answered", "campaign": "x", "menu": "notice:x"}]
    disp = [{"uid": "b", "name": "refund_requested"}, {"uid": "b", "name": "other"}]
    rows = build_reasons(recs, disp, start=0, end=200)
    assert rows == [
        {"reason": "refund_status", "calls": 2, "self_service": 1, "answered": 1, "abandoned": 0,
         "callbacks_requested": 0, "escalated": 1, "dispositions": {"other": 1}},
        {"reason": "rebooking", "calls": 1, "self_service": 0, "answered": 0, "abandoned": 1,
         "callbacks_requested": 0, "escalated": 0, "dispositions": {}}]
    assert summarise_dispositions([{"uid": "b", "reason": "x", "name": "a"}, {"uid": "b", "reason": "x", "name": "b"}]) \
        == {"x": {"b": 1}}


class _Store:
    class keys:
        prefix = "t"
    redis: Any = None
