"""Tests for ivr.balance.policy: the pure balancing step ``decide(Snapshot, Policy)``.

Waits are crafted through the Erlang estimate: a queue with nobody waiting, no
free agent and one serving agent has an estimated wait of exactly ``aht``
seconds for the next caller, so ``_busy(name, wait)`` pins the figure.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr.balance.erlang import estimate_wait
from ivr.balance.policy import (
    SKILL_EXPERIENCED,
    SKILL_NOVICE,
    TIER_CORE,
    TIER_VOLUNTEER,
    AgentView,
    CallbackView,
    Decision,
    Policy,
    QueueView,
    Snapshot,
    TierState,
    decide,
)

NOW = 10_000.0
P = Policy()
MEMBER_KINDS = ("add_member", "remove_member", "set_penalty")
TIER_KINDS = ("open_tier", "close_tier")


# ---------------------------------------------------------------- helpers

def _agent(aid: str, *queues: str, **kw) -> AgentView:
    kw.setdefault("logged_in", True)
    return AgentView(id=aid, interface=f"PJSIP/{aid}", queues=tuple(queues), **kw)


def _calm(name: str, **kw) -> QueueView:
    """A queue with an idle agent and nobody waiting: estimated wait 0."""
    kw.setdefault("free", 1)
    kw.setdefault("serving", 1)
    return QueueView(name=name, **kw)


def _busy(name: str, wait: float, **kw) -> QueueView:
    """One caller waiting, one serving agent, none free: the next caller waits ``wait`` s."""
    kw.setdefault("waiting", 1)
    return QueueView(name=name, free=0, serving=1, aht=wait / (kw["waiting"] + 1), **kw)


def _snap(queues, agents=(), now: float = NOW, **kw) -> Snapshot:
    return Snapshot(now=now, queues={q.name: q for q in queues}, agents={a.id: a for a in agents}, **kw)


def _kinds(d: Decision, *kinds: str):
    return [a for a in d.actions if a.kind in kinds]


def _open_since(t: float) -> dict[str, TierState]:
    return {"support": TierState(True, t)}


# ---------------------------------------------------------------- estimates

def test_estimate_is_the_erlang_wait_of_the_next_caller():
    q = QueueView("support", waiting=2, free=0, serving=3, aht=90.0)
    d = decide(_snap([q]))
    assert d.estimates["support"] == pytest.approx(estimate_wait(3, 3, 0, 90.0).seconds)
    assert d.estimates["support"] == pytest.approx(90.0)   # 3 completions at 3/90 per s


def test_estimate_is_zero_when_a_free_agent_takes_the_next_caller():
    d = decide(_snap([QueueView("support", waiting=1, free=2, serving=2)]))
    assert d.estimates["support"] == 0.0


def test_queue_without_serving_agents_has_infinite_estimate_and_opens_with_no_agents():
    d = decide(_snap([QueueView("support", waiting=1, free=0, serving=0)]))
    assert math.isinf(d.estimates["support"])
    (act,) = _kinds(d, *TIER_KINDS)
    assert act.kind == "open_tier" and act.queue == "support"
    assert "no agents" in act.reason
    assert d.tiers["support"] == TierState(True, NOW)


# ---------------------------------------------------------------- tier opening

def test_tier_opens_when_estimated_wait_exceeds_open_wait():
    d = decide(_snap([_busy("support", 46.0)]))
    (act,) = _kinds(d, *TIER_KINDS)
    assert act.kind == "open_tier" and act.queue == "support"
    assert "estimated wait 46s" in act.reason and "45s" in act.reason
    assert d.tiers["support"] == TierState(True, NOW)


@pytest.mark.parametrize("wait", [0.0, 30.0, 45.0])
def test_tier_stays_closed_while_wait_at_or_below_open_wait(wait):
    q = _calm("support") if wait == 0 else _busy("support", wait)
    d = decide(_snap([q]))
    assert _kinds(d, *TIER_KINDS) == []
    assert d.tiers["support"].open is False


def test_tier_opens_on_low_service_level_and_names_it():
    d = decide(_snap([_calm("support", answered=20, answered_in_target=10)]))
    (act,) = _kinds(d, *TIER_KINDS)
    assert act.kind == "open_tier"
    assert "service level 50%" in act.reason and "70%" in act.reason
    assert d.tiers["support"].open


def test_low_service_level_ignored_below_sl_min_calls():
    d = decide(_snap([_calm("support", answered=9, answered_in_target=0)]))
    assert _kinds(d, *TIER_KINDS) == []
    assert not d.tiers["support"].open


def test_service_level_counts_from_exactly_sl_min_calls():
    d = decide(_snap([_calm("support", answered=10, answered_in_target=6)]))
    assert [a.kind for a in _kinds(d, *TIER_KINDS)] == ["open_tier"]
    custom = Policy(sl_min_calls=3)
    d = decide(_snap([_calm("support", answered=3, answered_in_target=1)]), custom)
    assert [a.kind for a in _kinds(d, *TIER_KINDS)] == ["open_tier"]


def test_service_level_exactly_open_sl_does_not_open():
    d = decide(_snap([_calm("support", answered=10, answered_in_target=7)]))
    assert _kinds(d, *TIER_KINDS) == []


def test_tiers_are_decided_per_queue():
    d = decide(_snap([_busy("support", 60.0), _calm("refunds")]))
    assert d.tiers["support"].open and not d.tiers["refunds"].open
    assert [(a.kind, a.queue) for a in _kinds(d, *TIER_KINDS)] == [("open_tier", "support")]


# ---------------------------------------------------------------- hysteresis

def test_open_tier_does_not_close_before_min_open_s_even_when_calm():
    d = decide(_snap([_calm("support")], tiers=_open_since(NOW - 119.0)))
    assert _kinds(d, *TIER_KINDS) == []
    assert d.tiers["support"] == TierState(True, NOW - 119.0)


def test_open_tier_closes_when_calm_and_min_open_s_passed():
    d = decide(_snap([_calm("support")], tiers=_open_since(NOW - 120.0)))
    (act,) = _kinds(d, *TIER_KINDS)
    assert act.kind == "close_tier" and act.queue == "support"
    assert "estimated wait 0s < 15s" in act.reason and "for 120s" in act.reason
    assert d.tiers["support"] == TierState(False, NOW)


def test_open_tier_does_not_close_while_callers_wait():
    q = QueueView("support", waiting=1, free=3, serving=3)        # estimate 0, but someone queued
    d = decide(_snap([q], tiers=_open_since(NOW - 500.0)))
    assert d.estimates["support"] == 0.0
    assert _kinds(d, *TIER_KINDS) == [] and d.tiers["support"].open


def test_open_tier_does_not_close_while_service_level_below_close_sl():
    q = _calm("support", answered=20, answered_in_target=16)      # 80% < 85%
    d = decide(_snap([q], tiers=_open_since(NOW - 500.0)))
    assert _kinds(d, *TIER_KINDS) == [] and d.tiers["support"].open
    q = _calm("support", answered=20, answered_in_target=17)      # 85%: good enough
    d = decide(_snap([q], tiers=_open_since(NOW - 500.0)))
    assert [a.kind for a in _kinds(d, *TIER_KINDS)] == ["close_tier"]


@pytest.mark.parametrize("wait", [15.0, 20.0, 44.0])
def test_open_tier_does_not_close_while_wait_not_below_close_wait(wait):
    d = decide(_snap([_busy("support", wait)], tiers=_open_since(NOW - 500.0)))
    assert _kinds(d, *TIER_KINDS) == [] and d.tiers["support"].open


def _simulate(make_queue, ticks=100, step=5.0, start_open=False, policy=P):
    """Run ``ticks`` decisions, feeding each Decision's tiers into the next snapshot."""
    tiers = {"support": TierState(start_open, 0.0)}
    changes = []
    for i in range(ticks):
        now = 1000.0 + i * step
        d = decide(_snap([make_queue(i)], now=now, tiers=tiers), policy)
        if d.tiers["support"].open != tiers["support"].open:
            changes.append((now, d.tiers["support"].open))
        assert len(_kinds(d, *TIER_KINDS)) == (1 if d.tiers["support"] != tiers["support"] else 0)
        tiers = d.tiers
    return changes


def test_no_flapping_around_open_wait():
    changes = _simulate(lambda i: _busy("support", 46.0 if i % 2 == 0 else 44.0))
    assert changes == [(1000.0, True)]


def test_no_flapping_around_close_wait():
    changes = _simulate(lambda i: _busy("support", 16.0 if i % 2 == 0 else 14.0, waiting=0), start_open=True)
    assert len(changes) == 1 and changes[0][1] is False


def test_no_flapping_around_service_level_thresholds():
    open_band = _simulate(lambda i: _calm("support", answered=100, answered_in_target=69 if i % 2 == 0 else 71))
    assert open_band == [(1000.0, True)]
    close_band = _simulate(lambda i: _calm("support", answered=100, answered_in_target=84 if i % 2 else 86),
                           start_open=True)
    assert len(close_band) == 1 and close_band[0][1] is False


def test_wide_swings_keep_each_open_period_at_least_min_open_s():
    changes = _simulate(lambda i: _busy("support", 46.0) if (i // 3) % 2 == 0 else _busy("support", 14.0, waiting=0))
    opened_at = None
    for now, is_open in changes:
        if is_open:
            opened_at = now
        else:
            assert now - opened_at >= P.min_open_s
    # 100 ticks of 5 s = 495 s: at most 4 open periods of >= 120 s, so at most 8 changes
    assert 2 <= len(changes) <= 8


# ---------------------------------------------------------------- volunteers

def test_volunteer_not_a_member_while_tier_closed():
    vol = _agent("3001", "support", tier=TIER_VOLUNTEER)
    d = decide(_snap([_calm("support")], [vol]))
    assert "PJSIP/3001" not in d.desired["support"]
    assert _kinds(d, *MEMBER_KINDS) == []


def test_volunteer_added_with_volunteer_penalty_when_tier_opens():
    vol = _agent("3001", "support", tier=TIER_VOLUNTEER)
    core = _agent("2001", "support")
    q = _busy("support", 60.0, members={"PJSIP/2001": 0})
    d = decide(_snap([q], [vol, core]), Policy(volunteer_penalty=4))
    assert d.desired["support"] == {"PJSIP/2001": 0, "PJSIP/3001": 4}
    (add,) = _kinds(d, "add_member")
    assert (add.queue, add.interface, add.penalty) == ("support", "PJSIP/3001", 4)
    assert "volunteer overflow open on support" in add.reason


def test_volunteer_only_joins_queues_whose_tier_is_open():
    vol = _agent("3001", "support", "refunds", tier=TIER_VOLUNTEER)
    d = decide(_snap([_busy("support", 60.0), _calm("refunds")], [vol]))
    assert d.desired["support"] == {"PJSIP/3001": P.volunteer_penalty}
    assert d.desired["refunds"] == {}
    assert [(a.kind, a.queue) for a in _kinds(d, *MEMBER_KINDS)] == [("add_member", "support")]


def test_closing_tier_removes_volunteers_with_reason_and_keeps_core():
    vol = _agent("3001", "support", tier=TIER_VOLUNTEER)
    core = _agent("2001", "support")
    q = _calm("support", members={"PJSIP/2001": 0, "PJSIP/3001": 2})
    d = decide(_snap([q], [vol, core], tiers=_open_since(NOW - 300.0)))
    assert [a.kind for a in _kinds(d, *TIER_KINDS)] == ["close_tier"]
    (rm,) = _kinds(d, *MEMBER_KINDS)
    assert (rm.kind, rm.queue, rm.interface) == ("remove_member", "support", "PJSIP/3001")
    assert rm.reason == "volunteer overflow closed on support"


def test_volunteer_stays_while_tier_held_open_by_min_open_s():
    vol = _agent("3001", "support", tier=TIER_VOLUNTEER)
    q = _calm("support", members={"PJSIP/3001": 2})
    d = decide(_snap([q], [vol], tiers=_open_since(NOW - 60.0)))
    assert d.desired["support"] == {"PJSIP/3001": 2}
    assert _kinds(d, *MEMBER_KINDS) == []


# ---------------------------------------------------------------- novices and coaching

def _novice(aid="2002", *queues, team="a", **kw):
    return _agent(aid, *(queues or ("refunds",)), skill=SKILL_NOVICE, team=team, **kw)


def _coach(aid="2001", *queues, team="a", **kw):
    return _agent(aid, *(queues or ("support",)), skill=SKILL_EXPERIENCED, team=team, **kw)


def test_novice_joins_simple_queue_while_coached():
    d = decide(_snap([_calm("refunds"), _calm("support")], [_novice(), _coach()]))
    assert d.desired["refunds"] == {"PJSIP/2002": P.novice_penalty}
    add = next(a for a in _kinds(d, "add_member") if a.interface == "PJSIP/2002")
    assert add.queue == "refunds" and add.penalty == P.novice_penalty
    assert "coached by team a" in add.reason


def test_novice_never_on_complex_queue_and_is_removed_from_it():
    nov = _novice("2002", "refunds", "support")
    q = _calm("support", members={"PJSIP/2002": 0})
    d = decide(_snap([_calm("refunds"), q], [nov, _coach()]))
    assert "PJSIP/2002" not in d.desired["support"]
    assert "PJSIP/2002" in d.desired["refunds"]
    (rm,) = _kinds(d, "remove_member")
    assert (rm.queue, rm.interface, rm.reason) == ("support", "PJSIP/2002", "complex queue")


def test_novice_needs_a_coach_from_the_same_team():
    d = decide(_snap([_calm("refunds"), _calm("support")], [_novice(team="a"), _coach(team="b")]))
    assert d.desired["refunds"] == {}
    assert not [a for a in d.actions if a.interface == "PJSIP/2002"]


def test_another_novice_is_not_a_coach():
    d = decide(_snap([_calm("refunds")], [_novice("2002"), _novice("2003")]))
    assert d.desired["refunds"] == {}


@pytest.mark.parametrize("change", [
    {"logged_in": False},
    {"paused": True},
    {"reachable": False},
])
def test_novice_removed_when_last_coach_goes_off_duty(change):
    coach = _coach(**change)
    q = _calm("refunds", members={"PJSIP/2002": 0})
    d = decide(_snap([q, _calm("support")], [_novice(), coach]))
    assert d.desired["refunds"] == {}
    rm = [a for a in _kinds(d, "remove_member") if a.interface == "PJSIP/2002"]
    assert len(rm) == 1 and rm[0].queue == "refunds"
    assert rm[0].reason == "novice without an experienced teammate on duty"


def test_novice_stays_while_a_second_coach_is_on_duty():
    coaches = [_coach("2001", paused=True), _coach("2005")]
    q = _calm("refunds", members={"PJSIP/2002": 0})
    d = decide(_snap([q, _calm("support")], [_novice(), *coaches]))
    assert d.desired["refunds"]["PJSIP/2002"] == 0
    assert not [a for a in d.actions if a.interface == "PJSIP/2002"]


def test_logged_out_novice_is_not_desired():
    d = decide(_snap([_calm("refunds")], [_novice(logged_in=False), _coach()]))
    assert d.desired["refunds"] == {}


def test_penalties_on_simple_and_complex_queues():
    pol = Policy(novice_penalty=3, experienced_penalty_on_simple=5)
    agents = [_novice("2002", "refunds"), _coach("2001", "support", "refunds")]
    d = decide(_snap([_calm("refunds"), _calm("support")], agents), pol)
    assert d.desired["refunds"] == {"PJSIP/2002": 3, "PJSIP/2001": 5}
    assert d.desired["support"] == {"PJSIP/2001": 0}
    d = decide(_snap([_calm("refunds"), _calm("support")], agents))
    assert d.desired["refunds"] == {"PJSIP/2002": 0, "PJSIP/2001": 1}


def test_simple_queues_come_from_the_policy():
    agents = [_novice("2002", "support"), _coach("2001", "support")]
    d = decide(_snap([_calm("support")], agents), Policy(simple_queues=("support",)))
    assert d.desired["support"] == {"PJSIP/2002": 0, "PJSIP/2001": 1}
    d = decide(_snap([_calm("support")], agents), Policy(simple_queues=()))
    assert d.desired["support"] == {"PJSIP/2001": 0}


# ---------------------------------------------------------------- idempotence and member actions

def _roster():
    return [
        _coach("2001", "support", "refunds"),
        _novice("2002", "refunds"),
        _agent("2003", "support"),
        _agent("3001", "support", "refunds", tier=TIER_VOLUNTEER),
        _agent("2004", "support", logged_in=False),
    ]


def test_no_member_actions_when_members_equal_desired():
    queues = [_busy("support", 60.0), _calm("refunds")]
    first = decide(_snap(queues, _roster()))
    assert _kinds(first, "add_member")
    settled = [dataclasses.replace(q, members=dict(first.desired[q.name])) for q in queues]
    second = decide(_snap(settled, _roster(), now=NOW + 1, tiers=first.tiers))
    assert _kinds(second, *MEMBER_KINDS) == []
    assert second.desired == first.desired


def test_member_already_present_is_not_added_again():
    a = _agent("2001", "support", "support")           # queue listed twice
    d = decide(_snap([_calm("support", members={"PJSIP/2001": 0})], [a]))
    assert _kinds(d, *MEMBER_KINDS) == []
    d = decide(_snap([_calm("support")], [a]))
    assert [(x.kind, x.interface) for x in _kinds(d, *MEMBER_KINDS)] == [("add_member", "PJSIP/2001")]


def test_penalty_mismatch_yields_exactly_one_set_penalty():
    a = _agent("2001", "refunds")
    d = decide(_snap([_calm("refunds", members={"PJSIP/2001": 0})], [a]))
    acts = _kinds(d, *MEMBER_KINDS)
    assert len(acts) == 1
    (sp,) = acts
    assert (sp.kind, sp.queue, sp.interface, sp.penalty) == ("set_penalty", "refunds", "PJSIP/2001", 1)
    assert sp.reason == "penalty 0 -> 1"


def test_logged_out_agent_removed_with_reason():
    a = _agent("2001", "support", logged_in=False)
    d = decide(_snap([_calm("support", members={"PJSIP/2001": 0})], [a]))
    (rm,) = _kinds(d, *MEMBER_KINDS)
    assert (rm.kind, rm.interface, rm.reason) == ("remove_member", "PJSIP/2001", "logged out")


def test_agent_not_assigned_to_queue_removed_with_reason():
    a = _agent("2001", "refunds")
    d = decide(_snap([_calm("support", members={"PJSIP/2001": 0}), _calm("refunds", members={"PJSIP/2001": 1})],
                     [a]))
    (rm,) = _kinds(d, *MEMBER_KINDS)
    assert (rm.kind, rm.queue, rm.reason) == ("remove_member", "support", "not assigned to support")


def test_unmanaged_members_are_never_removed():
    members = {"PJSIP/9999": 0, "Local/ext@ctx": 7, "SIP/legacy": 3}
    q = _busy("support", 60.0, members=members)
    d = decide(_snap([q], [_agent("2001", "support")], tiers=_open_since(NOW - 1000)))
    assert not [a for a in d.actions if a.interface in members]
    # not even when the roster is empty
    d = decide(_snap([_calm("support", members=members)], []))
    assert _kinds(d, *MEMBER_KINDS) == []


def test_queue_unknown_to_the_snapshot_gets_no_members():
    d = decide(_snap([_calm("support")], [_agent("2001", "support", "nowhere")]))
    assert set(d.desired) == {"support"}
    assert all(a.queue == "support" for a in _kinds(d, *MEMBER_KINDS))


# ---------------------------------------------------------------- callbacks

def _cb(cid, queue="support", place=0.0, not_before=0.0):
    return CallbackView(cid, queue, place, not_before)


def _dispatched(d):
    return [a.callback_id for a in _kinds(d, "dispatch_callback")]


def test_callbacks_dispatched_oldest_place_first_into_spare_capacity():
    cbs = (_cb("c", place=300.0), _cb("a", place=100.0), _cb("b", place=200.0))
    d = decide(_snap([_calm("support", free=2, serving=2)], callbacks=cbs))
    assert _dispatched(d) == ["a", "b"]
    act = _kinds(d, "dispatch_callback")[0]
    assert act.queue == "support" and "waiting since 100" in act.reason


@pytest.mark.parametrize("free,waiting,expected", [(3, 2, 1), (2, 2, 0), (1, 3, 0), (4, 0, 3)])
def test_callbacks_only_use_free_minus_waiting(free, waiting, expected):
    cbs = tuple(_cb(f"c{i}", place=float(i)) for i in range(3))
    q = QueueView("support", waiting=waiting, free=free, serving=max(free, 1))
    d = decide(_snap([q], callbacks=cbs))
    assert len(_dispatched(d)) == expected


@pytest.mark.parametrize("in_progress,expected", [(0, 5), (3, 2), (5, 0), (7, 0)])
def test_callbacks_never_exceed_the_in_flight_budget(in_progress, expected):
    cbs = tuple(_cb(f"c{i}", place=float(i)) for i in range(10))
    d = decide(_snap([_calm("support", free=20, serving=20)], callbacks=cbs, callbacks_in_progress=in_progress))
    assert _dispatched(d) == [f"c{i}" for i in range(expected)]


def test_callbacks_wait_for_not_before():
    cbs = (_cb("old", place=1.0, not_before=NOW + 1), _cb("due", place=2.0, not_before=NOW),
           _cb("young", place=3.0))
    d = decide(_snap([_calm("support", free=2, serving=2)], callbacks=cbs))
    assert _dispatched(d) == ["due", "young"]


def test_callbacks_only_go_to_their_own_queue():
    cbs = (_cb("r1", queue="refunds", place=1.0), _cb("x1", queue="ghost", place=2.0),
           _cb("s1", queue="support", place=3.0), _cb("s2", queue="support", place=4.0))
    queues = [_calm("support", free=5, serving=5), QueueView("refunds", free=0, serving=1)]
    d = decide(_snap(queues, callbacks=cbs))
    assert [(a.callback_id, a.queue) for a in _kinds(d, "dispatch_callback")] == [("s1", "support"), ("s2", "support")]


# ---------------------------------------------------------------- campaign pace

@pytest.mark.parametrize("wait,pace", [
    (0.0, 1.0), (30.0, 1.0), (31.0, 0.5), (90.0, 0.5), (91.0, 0.0), (math.inf, 0.0),
])
def test_campaign_pace_follows_worst_estimated_wait(wait, pace):
    if wait == 0:
        q = _calm("support")
    elif math.isinf(wait):
        q = QueueView("support", serving=0, free=0, waiting=1)   # callers waiting, nobody to answer
    else:
        q = _busy("support", wait)
    d = decide(_snap([q, _calm("refunds")], campaigns=("flood", "survey")))
    acts = _kinds(d, "campaign_pace")
    assert [(a.campaign, a.pace) for a in acts] == [("flood", pace), ("survey", pace)]
    assert all(a.reason for a in acts)


def test_campaign_pace_uses_the_worst_queue():
    d = decide(_snap([_calm("support"), _busy("refunds", 60.0), _busy("rebooking", 20.0)], campaigns=("c",)))
    (act,) = _kinds(d, "campaign_pace")
    assert act.pace == 0.5 and "60s" in act.reason


def test_an_unstaffed_empty_queue_does_not_stop_outbound():
    d = decide(_snap([QueueView("rebooking", serving=0, waiting=0), _calm("support")], campaigns=("c",)))
    (act,) = _kinds(d, "campaign_pace")
    assert act.pace == 1.0


def test_no_campaign_actions_without_campaigns():
    d = decide(_snap([QueueView("support", serving=0)]))
    assert _kinds(d, "campaign_pace") == []


# ---------------------------------------------------------------- purity

def _rich_snapshot() -> Snapshot:
    queues = [
        _busy("support", 60.0, members={"PJSIP/2003": 0, "PJSIP/9999": 0, "PJSIP/2004": 0},
              answered=12, answered_in_target=5),
        _calm("refunds", free=3, serving=3, members={"PJSIP/2001": 0}),
    ]
    return _snap(queues, _roster(), tiers={"refunds": TierState(True, NOW - 500)},
                 callbacks=(_cb("c1", "refunds", 5.0), _cb("c2", "refunds", 1.0)),
                 callbacks_in_progress=1, campaigns=("flood",))


def test_decide_is_deterministic():
    snap = _rich_snapshot()
    assert decide(snap) == decide(snap)
    assert decide(snap) == decide(_rich_snapshot())


def test_decide_does_not_mutate_the_snapshot():
    snap = _rich_snapshot()
    before = copy.deepcopy(snap)
    d = decide(snap)
    assert snap == before
    assert snap.queues["support"].members == {"PJSIP/2003": 0, "PJSIP/9999": 0, "PJSIP/2004": 0}
    assert snap.tiers == {"refunds": TierState(True, NOW - 500)}
    # the decision does not alias the snapshot's mappings
    assert d.tiers is not snap.tiers
    assert all(d.desired[n] is not snap.queues[n].members for n in snap.queues)


def test_every_action_carries_a_reason():
    d = decide(_rich_snapshot())
    kinds = {a.kind for a in d.actions}
    assert {"open_tier", "close_tier", "add_member", "remove_member", "set_penalty",
            "dispatch_callback", "campaign_pace"} <= kinds
    assert all(a.reason for a in d.actions)


# ---------------------------------------------------------------- property

QUEUE_NAMES = ("support", "refunds", "rebooking")

_agents_st = st.lists(
    st.builds(
        lambda n, skill, team, tier, queues, logged_in, paused, reachable: AgentView(
            id=f"{n}", interface=f"PJSIP/{n}", skill=skill, team=team, tier=tier, queues=tuple(queues),
            logged_in=logged_in, paused=paused, reachable=reachable),
        st.integers(2000, 2015),
        st.sampled_from([SKILL_EXPERIENCED, SKILL_NOVICE]),
        st.sampled_from(["", "a", "b"]),
        st.sampled_from([TIER_CORE, TIER_VOLUNTEER]),
        st.lists(st.sampled_from(QUEUE_NAMES + ("ghost",)), max_size=3),
        st.booleans(), st.booleans(), st.booleans(),
    ),
    max_size=8, unique_by=lambda a: a.id,
)


@st.composite
def _snapshots(draw):
    agents = draw(_agents_st)
    pool = [a.interface for a in agents] + ["PJSIP/9999", "Local/x@ctx"]
    queues = {}
    for name in draw(st.lists(st.sampled_from(QUEUE_NAMES), min_size=1, max_size=3, unique=True)):
        answered = draw(st.integers(0, 30))
        queues[name] = QueueView(
            name=name, waiting=draw(st.integers(0, 5)), longest_wait=0.0, answered=answered,
            answered_in_target=draw(st.integers(0, answered)), aht=draw(st.floats(10.0, 600.0)),
            members=draw(st.dictionaries(st.sampled_from(pool), st.integers(0, 3), max_size=5)),
            free=draw(st.integers(0, 3)), serving=draw(st.integers(0, 4)))
    tiers = {n: TierState(draw(st.booleans()), NOW - draw(st.floats(0.0, 400.0))) for n in queues}
    return Snapshot(now=NOW, queues=queues, agents={a.id: a for a in agents}, tiers=tiers,
                    campaigns=draw(st.lists(st.sampled_from(["c1", "c2"]), max_size=2, unique=True)))


@settings(max_examples=300, deadline=None)
@given(_snapshots())
def test_member_actions_only_touch_logged_in_assigned_or_managed_interfaces(snap):
    d = decide(snap)
    managed = {a.interface for a in snap.agents.values()}
    for act in d.actions:
        if act.kind in ("add_member", "set_penalty"):
            assert any(a.interface == act.interface and a.logged_in and act.queue in a.queues
                       for a in snap.agents.values()), act
            assert d.desired[act.queue][act.interface] == act.penalty
            assert (act.kind == "add_member") == (act.interface not in snap.queues[act.queue].members)
        elif act.kind == "remove_member":
            assert act.interface in managed, act
            assert act.interface in snap.queues[act.queue].members
        if act.kind in MEMBER_KINDS:
            assert act.reason
    # applying the actions converges: the next tick has nothing left to change
    members = {n: dict(q.members) for n, q in snap.queues.items()}
    for act in d.actions:
        if act.kind in ("add_member", "set_penalty"):
            members[act.queue][act.interface] = act.penalty
        elif act.kind == "remove_member":
            del members[act.queue][act.interface]
    queues = {n: dataclasses.replace(q, members=members[n]) for n, q in snap.queues.items()}
    again = decide(Snapshot(now=snap.now, queues=queues, agents=snap.agents, tiers=d.tiers))
    if {n: t.open for n, t in again.tiers.items()} == {n: t.open for n, t in d.tiers.items()}:
        # (a tier that opens or closes because the new members changed the estimate legitimately acts again)
        assert _kinds(again, *MEMBER_KINDS) == []


def test_an_idle_agent_in_two_queues_gets_one_callback_not_two() -> None:
    from ivr.balance.policy import CallbackView, Policy, QueueView, Snapshot, decide

    idle = frozenset({"PJSIP/1"})
    queues = {name: QueueView(name=name, free=1, serving=1, members={"PJSIP/1": 0}, idle=idle)
              for name in ("support", "refunds")}
    snap = Snapshot(now=100.0, queues=queues, agents={},
                    callbacks=(CallbackView("1", "support", 10.0), CallbackView("2", "refunds", 20.0)))
    dispatched = [a for a in decide(snap, Policy()).actions if a.kind == "dispatch_callback"]
    assert [a.callback_id for a in dispatched] == ["1"]


# ------------------------------------------------------------ mobile fallback

MOBILE = "Local/15550001@agent-mobile/n"


def test_unreachable_device_is_swapped_for_the_mobile_and_back() -> None:
    down = _agent("2001", "support", reachable=False, fallback_interface=MOBILE)
    d = decide(_snap([_calm("support", members={"PJSIP/2001": 0})], [down]))
    acts = {(a.kind, a.interface) for a in _kinds(d, *MEMBER_KINDS)}
    assert acts == {("add_member", MOBILE), ("remove_member", "PJSIP/2001")}
    assert d.desired["support"] == {MOBILE: 0}
    assert "mobile" in next(a.reason for a in d.actions if a.kind == "add_member")

    back = dataclasses.replace(down, reachable=True)
    d = decide(_snap([_calm("support", members={MOBILE: 0})], [back]))
    acts = {(a.kind, a.interface) for a in _kinds(d, *MEMBER_KINDS)}
    assert acts == {("add_member", "PJSIP/2001"), ("remove_member", MOBILE)}
    assert "device back" in next(a.reason for a in d.actions if a.kind == "remove_member")


def test_without_a_mobile_an_unreachable_agent_stays_on_the_device() -> None:
    down = _agent("2001", "support", reachable=False)
    d = decide(_snap([_calm("support", members={"PJSIP/2001": 0})], [down]))
    assert _kinds(d, *MEMBER_KINDS) == []


def test_the_mobile_of_a_logged_out_agent_leaves_the_queue() -> None:
    gone = _agent("2001", "support", reachable=False, fallback_interface=MOBILE, logged_in=False)
    d = decide(_snap([_calm("support", members={MOBILE: 0})], [gone]))
    assert [(a.kind, a.interface) for a in _kinds(d, *MEMBER_KINDS)] == [("remove_member", MOBILE)]


def test_base_penalty_is_added_to_the_policy_penalty() -> None:
    vol = _agent("2002", "support", tier="volunteer", penalty=5)
    d = decide(_snap([_calm("support")], [vol], tiers={"support": TierState(True, NOW - 10)}))
    assert d.desired["support"] == {"PJSIP/2002": Policy().volunteer_penalty + 5}
