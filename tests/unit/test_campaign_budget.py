"""One capacity budget for inbound, callbacks and campaigns: the pace rules of the pure policy
(``_campaign_pace``) and the split of the pace by campaign priority."""

from __future__ import annotations

import math

import pytest

from ivr.balance.policy import CallbackView, CampaignView, Decision, Policy, QueueView, Snapshot, decide

NOW = 10_000.0
P = Policy()


def _snap(queues, **kw) -> Snapshot:
    return Snapshot(now=NOW, queues={q.name: q for q in queues}, agents={}, **kw)


def _paces(d: Decision) -> dict[str, float]:
    return {a.campaign: a.pace for a in d.actions if a.kind == "campaign_pace"}


def _reasons(d: Decision) -> dict[str, str]:
    return {a.campaign: a.reason for a in d.actions if a.kind == "campaign_pace"}


def _idle(name: str, n: int = 1, waiting: int = 0) -> QueueView:
    """``n`` idle agents (``<name>-<i>``), ``waiting`` callers; short calls: the inbound wait stays calm."""
    return QueueView(name, waiting=waiting, free=n, serving=max(n, 1), aht=10.0,
                     idle=frozenset(f"PJSIP/{name}-{i}" for i in range(n)))


def _busy(name: str, wait: float) -> QueueView:
    """One caller waiting, one serving agent, none free: the next caller waits ``wait`` s."""
    return QueueView(name, waiting=1, free=0, serving=1, aht=wait / 2)


def _cb(cid: str, queue: str = "support", due: float = math.inf, not_before: float = 0.0) -> CallbackView:
    return CallbackView(cid, queue, place=1.0, not_before=not_before, due=due)


# ---------------------------------------------------------------- callbacks owed

def test_a_callback_about_to_run_out_pauses_outbound_even_with_idle_agents() -> None:
    d = decide(_snap([_idle("support", 3)], callbacks=(_cb("a", due=NOW + 600),), campaigns=("c",)))
    assert _paces(d) == {"c": 0.0}
    assert "due within 900s (first in 600s): outbound paused" in _reasons(d)["c"]


def test_the_urgent_window_is_the_policys_callback_urgent_s() -> None:
    cbs = (_cb("a", due=NOW + P.callback_urgent_s + 1),)
    assert _paces(decide(_snap([_idle("support", 3)], callbacks=cbs, campaigns=("c",)))) == {"c": 1.0}
    cbs = (_cb("a", due=NOW + P.callback_urgent_s),)
    assert _paces(decide(_snap([_idle("support", 3)], callbacks=cbs, campaigns=("c",)))) == {"c": 0.0}


def test_a_callback_past_its_promise_or_in_back_off_still_pauses() -> None:
    for cb in (_cb("late", due=NOW - 60), _cb("retry", due=NOW + 60, not_before=NOW + 120)):
        d = decide(_snap([_idle("support", 3)], callbacks=(cb,), campaigns=("c",)))
        assert _paces(d) == {"c": 0.0}, cb
        assert "first in 0s" in _reasons(d)["c"] or "first in 60s" in _reasons(d)["c"]


@pytest.mark.parametrize("owed,idle,waiting,pace", [
    (1, 1, 0, 1.0),     # one idle agent takes the one callback
    (2, 1, 0, 0.5),     # one more than the idle agents can take
    (1, 2, 1, 1.0),     # two idle, one of them for the waiting caller, one for the callback
    (1, 1, 1, 0.5),     # the only idle agent is the waiting caller's
    (3, 0, 0, 0.5),     # nobody idle
])
def test_callbacks_beyond_what_idle_agents_can_take_slow_outbound(owed, idle, waiting, pace) -> None:
    cbs = tuple(_cb(f"c{i}") for i in range(owed))
    q = _idle("support", idle, waiting) if idle else QueueView("support", free=0, serving=2, aht=10.0)
    d = decide(_snap([q], callbacks=cbs, campaigns=("c",)))
    assert _paces(d) == {"c": pace}
    if pace == 0.5:
        assert f"{owed} callback(s) owed, idle agents can take {max(0, idle - waiting)}: outbound at half pace" \
            in _reasons(d)["c"]
    else:
        assert "outbound at full pace" in _reasons(d)["c"]


def test_idle_agents_of_another_queue_do_not_take_a_queues_callbacks() -> None:
    d = decide(_snap([QueueView("support", free=0, serving=1, aht=10.0), _idle("refunds", 3)],
                     callbacks=(_cb("a", "support"),), campaigns=("c",)))
    assert _paces(d) == {"c": 0.5}


def test_an_agent_idle_in_two_queues_counts_once() -> None:
    shared = frozenset({"PJSIP/1001"})
    queues = [QueueView("support", free=1, serving=1, idle=shared), QueueView("refunds", free=1, serving=1, idle=shared)]
    d = decide(_snap(queues, callbacks=(_cb("a", "support"), _cb("b", "refunds")), campaigns=("c",)))
    assert _paces(d) == {"c": 0.5}
    assert "2 callback(s) owed, idle agents can take 1" in _reasons(d)["c"]


def test_the_tightest_rule_wins_and_keeps_its_reason() -> None:
    # a 60 s inbound wait (half) and an urgent callback (pause): paused, for the callback
    d = decide(_snap([_busy("support", 60.0)], callbacks=(_cb("a", due=NOW + 10),), campaigns=("c",)))
    assert _paces(d) == {"c": 0.0}
    assert "due within" in _reasons(d)["c"] and "inbound wait" not in _reasons(d)["c"]
    # a 60 s inbound wait and callbacks beyond idle agents: both say half pace, both reasons kept
    d = decide(_snap([_busy("support", 60.0)], callbacks=(_cb("a"),), campaigns=("c",)))
    assert _paces(d) == {"c": 0.5}
    assert "inbound wait 60s > 30s" in _reasons(d)["c"] and "1 callback(s) owed" in _reasons(d)["c"]
    # inbound over the pause threshold: paused whatever the callbacks
    d = decide(_snap([_busy("support", 120.0)], callbacks=(_cb("a"),), campaigns=("c",)))
    assert _paces(d) == {"c": 0.0} and "inbound wait 120s > 90s" in _reasons(d)["c"]


def test_todays_inbound_rules_hold_without_callbacks() -> None:
    assert _paces(decide(_snap([_idle("support")], campaigns=("c",)))) == {"c": 1.0}
    assert _paces(decide(_snap([_busy("support", 45.0)], campaigns=("c",)))) == {"c": 0.5}
    assert _paces(decide(_snap([_busy("support", 95.0)], campaigns=("c",)))) == {"c": 0.0}
    assert _reasons(decide(_snap([_idle("support")], campaigns=("c",)))) == {"c": "inbound calm: outbound at full pace"}


def test_callback_actions_are_unchanged_by_the_budget() -> None:
    """The budget only reads the callbacks: the dispatch decisions are the same with or without campaigns."""
    snap = _snap([_idle("support", 2)], callbacks=(_cb("a", due=NOW + 60), _cb("b")))
    with_campaigns = _snap([_idle("support", 2)], callbacks=(_cb("a", due=NOW + 60), _cb("b")), campaigns=("c",))
    cb = [a for a in decide(snap).actions if a.kind == "dispatch_callback"]
    assert cb == [a for a in decide(with_campaigns).actions if a.kind == "dispatch_callback"] and len(cb) == 2


# ---------------------------------------------------------------- priority split

def _views(*vs: CampaignView) -> dict[str, CampaignView]:
    return {v.id: v for v in vs}


def test_a_full_budget_gives_everyone_full_pace_whatever_the_priority() -> None:
    views = _views(CampaignView("hi", 10, 2.0), CampaignView("lo", 0, 2.0))
    d = decide(_snap([_idle("support")], campaigns=("hi", "lo"), campaign_views=views))
    assert _paces(d) == {"hi": 1.0, "lo": 1.0}


def test_a_half_budget_goes_to_the_higher_priority_first() -> None:
    # budget: half of 2 + 2 calls/s = 2 calls/s: all of it to "hi", none left for "lo"
    views = _views(CampaignView("hi", 10, 2.0), CampaignView("lo", 0, 2.0))
    d = decide(_snap([_busy("support", 60.0)], campaigns=("lo", "hi"), campaign_views=views))
    assert _paces(d) == {"hi": 1.0, "lo": 0.0}
    r = _reasons(d)
    assert "inbound wait 60s > 30s" in r["hi"] and "priority 10 first: full pace" in r["hi"]
    assert "priority 0: paused, higher priorities take the budget" in r["lo"]


def test_the_lower_priority_gets_what_the_higher_one_leaves() -> None:
    # budget: half of 1 + 3 = 2 calls/s; "hi" takes its 1, "lo" gets 1 of its 3 (a third of its pace)
    views = _views(CampaignView("hi", 5, 1.0), CampaignView("lo", 1, 3.0))
    d = decide(_snap([_busy("support", 60.0)], campaigns=("hi", "lo"), campaign_views=views))
    assert _paces(d) == {"hi": 1.0, "lo": pytest.approx(1 / 3, abs=1e-3)}
    assert "priority 1: 33% pace" in _reasons(d)["lo"]


def test_equal_priorities_share_alike() -> None:
    # budget: half of 1 + 1 + 2 = 2 calls/s; "top" takes 1; "a" and "b" (same priority) share the other 1 of 3
    views = _views(CampaignView("top", 9, 1.0), CampaignView("a", 2, 1.0), CampaignView("b", 2, 2.0))
    d = decide(_snap([_busy("support", 60.0)], campaigns=("a", "b", "top"), campaign_views=views))
    p = _paces(d)
    assert p["top"] == 1.0 and p["a"] == p["b"] == pytest.approx(1 / 3, abs=1e-3)
    # everyone of one priority: the plain pace, as before
    views = _views(CampaignView("a", 2, 1.0), CampaignView("b", 2, 2.0))
    assert _paces(decide(_snap([_busy("support", 60.0)], campaigns=("a", "b"), campaign_views=views))) == \
        {"a": 0.5, "b": 0.5}


def test_a_held_campaign_takes_no_share() -> None:
    """A higher-priority campaign held at its transfer cap dials nothing: its share goes to the next."""
    views = _views(CampaignView("hi", 10, 2.0, held=True), CampaignView("lo", 0, 2.0))
    d = decide(_snap([_busy("support", 60.0)], campaigns=("hi", "lo"), campaign_views=views))
    # budget: half of the 2 calls/s of the one campaign that dials (not of 4: "hi" would take it all)
    assert _paces(d) == {"hi": 1.0, "lo": 0.5}


def test_a_paused_budget_pauses_every_priority() -> None:
    views = _views(CampaignView("hi", 10, 2.0), CampaignView("lo", 0, 2.0))
    d = decide(_snap([_idle("support")], callbacks=(_cb("x", due=NOW),), campaigns=("hi", "lo"),
                     campaign_views=views))
    assert _paces(d) == {"hi": 0.0, "lo": 0.0} and all("outbound paused" in r for r in _reasons(d).values())


def test_campaigns_without_a_view_are_priority_0_at_one_call_a_second() -> None:
    views = _views(CampaignView("hi", 3, 1.0))
    d = decide(_snap([_busy("support", 60.0)], campaigns=("hi", "plain"), campaign_views=views))
    assert _paces(d) == {"hi": 1.0, "plain": 0.0}
