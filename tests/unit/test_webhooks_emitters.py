"""The features publish their events through the ``Events`` they are given (by constructor): refunds, callbacks
made or given up, campaign contacts closed, feedback items. (call.finished and the end-to-end path:
tests/integration/test_webhooks_stack.py.)"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Mapping

import pytest

from ivr.app.config_load import from_mapping
from ivr.campaigns import dialer as dialer_module
from ivr.campaigns.dialer import Dialer
from ivr.outcomes.service import Outcomes
from ivr.prompts.library import PromptLibrary
from ivr.refunds.service import RefundService

from .test_menu_engine import P, PLAYED, ScriptedAsterisk, bye, engine_for, gd, key, menu, prompts  # noqa: F401
from .test_menu_engine import run_call, sf
from .test_menu_transcripts import FakeOutbound, World
from .test_outbound import CALLER, CB_MENU, dispatcher


class Recorded:
    """An ``Events`` stand-in that keeps what was published."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def publish(self, event_type: str, data: Mapping[str, Any]) -> None:
        self.events.append((event_type, dict(data)))

    def types(self) -> list[str]:
        return [t for t, _ in self.events]


class RefundDb:
    def __init__(self) -> None:
        self.recs: dict[str, dict[str, Any]] = {}

    async def create(self, booking: str, **kw: Any) -> dict[str, Any]:
        ref = f"R{len(self.recs) + 1:06d}"
        self.recs[ref] = {"reference": ref, "booking": booking, "status": "received", **kw}
        return dict(self.recs[ref])

    async def get(self, ref: str) -> dict[str, Any] | None:
        return dict(self.recs[ref]) if ref in self.recs else None

    async def set_status(self, ref: str, status: str, *, by: str, note: str = "") -> dict[str, Any]:
        self.recs[ref]["status"] = status
        return dict(self.recs[ref])


async def test_refunds_publish_requested_and_decided() -> None:
    events = Recorded()
    store = SimpleNamespace(refunds=RefundDb(), audit=lambda *a, **k: _noop())
    cfg = from_mapping({"refunds": {"notify": []}}, {})
    service = RefundService(cfg, store, None, str, guard=SimpleNamespace(), events=events)  # type: ignore[arg-type]  # fakes: only what is called
    rec = await service.create("123456", amount="20")
    await service.decide(rec["reference"], "approved", by="sup", note="ok")
    assert events.types() == ["refund.requested", "refund.decided"]
    assert events.events[0][1]["booking"] == "123456"
    assert {k: events.events[1][1][k] for k in ("status", "previous_status", "decided_by", "note")} == {
        "status": "approved", "previous_status": "received", "decided_by": "sup", "note": "ok"}


async def _noop() -> None:
    return None


async def test_a_callback_made_or_given_up_publishes_callback_done() -> None:
    d, _, _ = dispatcher("442079460000")
    d.events = Recorded()   # type: ignore[assignment]  # a recording stand-in for Events
    await d.dispatch("7", "support")
    (kind, data), = d.events.events   # type: ignore[attr-defined]  # the stand-in's record
    assert kind == "callback.done" and data["status"] == "done" and data["outcome"] == "answered"
    assert data["id"] == "7" and data["call_uid"] == "u9" and data["attempts"] == 1
    d, _, _ = dispatcher("881612345678")                                     # refused for good
    d.events = Recorded()   # type: ignore[assignment]  # a recording stand-in for Events
    await d.dispatch("7", "support")
    done = [(t, e["status"]) for t, e in d.events.events]   # type: ignore[attr-defined]  # the stand-in's record
    assert done == [("callback.done", "refused")]
    d, _, _ = dispatcher("442079460000", answer="cap_number")               # tried again later: not done
    d.events = Recorded()   # type: ignore[assignment]  # a recording stand-in for Events
    await d.dispatch("7", "support")
    assert d.events.events == []   # type: ignore[attr-defined]  # the stand-in's record


async def test_a_closed_campaign_contact_publishes_contact_done(monkeypatch: pytest.MonkeyPatch) -> None:
    async def set_status(*args: Any, **kw: Any) -> None:
        return None

    monkeypatch.setattr(dialer_module.contacts, "set_status", set_status)
    events = Recorded()
    db = SimpleNamespace(unschedule=lambda cid, n: _noop())
    d = Dialer(from_mapping({}, {}), SimpleNamespace(campaigns=db), None, SimpleNamespace(),  # type: ignore[arg-type]  # fakes
               events=events)  # type: ignore[arg-type]  # fakes: only what is called
    await d._close("spring-notice", "12", "done", last_outcome="answered")
    assert events.events == [("campaign.contact_done", {"campaign": "spring-notice", "contact": "12",
                                                         "status": "done", "last_outcome": "answered"})]


async def test_a_feedback_item_publishes_feedback_recorded() -> None:
    class Db:
        async def new_feedback_id(self) -> str:
            return "41"

        async def add_feedback(self, item: Mapping[str, Any], now: float) -> None:
            self.item = dict(item)

    events = Recorded()
    o = Outcomes(from_mapping({}, {}), SimpleNamespace(outcomes=Db()), None, events=events)  # type: ignore[arg-type]  # fakes: only what is called
    item = await o.add_feedback(kind="survey", uid="u1", reason="refund_status", score=1)
    assert events.events == [("feedback.recorded", item)]
    assert item["team"] == "refunds" and item["id"] == "41"


async def test_a_callback_booked_in_the_menu_publishes_callback_requested(prompts: PromptLibrary, P: str) -> None:
    world, events = World(outbound=FakeOutbound(refuse={CALLER})), Recorded()
    fake = ScriptedAsterisk([
        (gd(P, "enter-number", 10000, 15), "200 result=442079460000"),
        (sf(P, "callback-number-is", "12"), PLAYED),
        ('SAY DIGITS "442079460000" "12"', key("1")),
        bye(P, "callback-booked")])
    await run_call(engine_for(menu(CB_MENU), prompts, world, events=events), fake)
    assert fake.commands == fake.expected
    (kind, data), = events.events
    assert kind == "callback.requested" and data["number"] == "442079460000" and data["source"] == "menu"
