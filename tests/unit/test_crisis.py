"""The crisis-hour replay's pure parts: the trace from the simulator's callers, the scaled menu, the SIPp
scenarios it writes, and the figures from call records."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import yaml

from ivr.devtools import crisis, crisis_report
from ivr.devtools.sim_model import load_profile, make_callers
from ivr.app.config import PROJECT_ROOT

PROFILE = PROJECT_ROOT / "profiles" / "default.yaml"


def test_trace_is_the_simulators_callers_compressed() -> None:
    p = load_profile(PROFILE)
    hour = crisis.peak_hour(p)
    callers = make_callers(p, 7, hour, hour + 1)
    trace = crisis.build_trace(p, 7, hour, 10.0, 0.2)
    assert len(trace) == len(callers) and hour == 10
    for c, t in zip(callers, trace):
        assert abs(t.t - (c.t - hour * 3600) / 10) < 1e-9 and t.queue == c.queue
        assert abs(t.handle - c.handle / 10) < 1e-9 and t.patience == max(1.0, c.patience / 10)
        assert t.accept_cb == (c.u_cb < p.callback_accept)
        assert crisis.BRANCH_QUEUE[t.branch] == c.queue
    assert max(t.t for t in trace) < 360
    assert len({t.number for t in trace}) == len(trace)
    assert all(len(t.number) == 11 and t.number.startswith("12022") and t.number[-1] in "0123" for t in trace)
    # the same seed gives the same trace; press0 only on self-service callers
    assert crisis.build_trace(p, 7, hour, 10.0, 0.2) == trace
    assert all(not t.press0 for t in trace if t.branch not in crisis.SELF_SERVICE)
    assert 0 < sum(t.press0 for t in trace) < sum(t.branch in crisis.SELF_SERVICE for t in trace)
    assert crisis.build_trace(p, 7, hour, 10.0, 0.2, window_s=30) == [t for t in trace if t.t < 30]


def test_a_branch_from_the_simulator_wins_over_the_queue() -> None:
    import random
    rng = random.Random(1)
    for raw, want in (("refund_status", "refund_status"), ("refund-request", "refund_request"),
                      ("q_support", "q_support"), ("rebooking", "q_rebooking")):
        assert crisis._branch(SimpleNamespace(branch=raw, queue="refunds"), rng) == want
    assert crisis._branch(SimpleNamespace(queue="support"), rng) == "q_support"
    assert crisis._branch(SimpleNamespace(queue="refunds"), rng) in crisis.SELF_SERVICE


def test_roster_of_the_hour_and_scaled_constants() -> None:
    p = load_profile(PROFILE)
    roster = crisis.roster_at(p, 10)
    assert sum(a.tier == "core" for a in roster) == 3 and sum(a.tier == "volunteer" for a in roster) == 10
    s = crisis.Scaled.of(p, 10.0)
    assert (s.callback_over, s.open_wait_s, s.close_wait_s, s.min_open_s, s.servicelevel, s.promise_s) == \
        (30.0, 4.5, 1.5, 12.0, 2, 720.0)
    menu = yaml.safe_load(crisis.scaled_menu((PROJECT_ROOT / "dialplans" / "main.yaml").read_text(), 30.0))
    queues = [n for n in menu["nodes"].values() if n.get("type") == "queue"]
    assert queues and all(n["callback_over"] == 30.0 for n in queues)
    assert menu["nodes"]["main"]["timeout"] == 5     # key timeouts are not scaled


def test_caller_and_agent_scenarios(tmp_path: Path) -> None:
    trace = crisis.build_trace(load_profile(PROFILE), 7, 10, 10.0, 1.0)
    c = next(t for t in trace if t.branch == "refund_status" and t.accept_cb)
    steps = crisis.key_steps(c)
    keys = [v for k, v in steps if k == "dtmf"]
    assert keys[2] == "1" and keys[3] == crisis.BOOKINGS["refund_status"] and keys[4:] == ["0", "1", "1"]
    q = next(t for t in trace if t.branch == "q_rebooking" and not t.accept_cb)
    assert [v for k, v in crisis.key_steps(q) if k == "dtmf"][2:] == ["3", "2"]
    xml = crisis.caller_scenario(steps, tmp_path, 600_000)
    assert xml.index('<pause variable="arrms"/>') < xml.index("INVITE sip:[field1]@")
    assert "X-Patience: [field3]" in xml and "[caller]" not in xml and "[service]" not in xml
    agent = crisis.agent_scenario(tmp_path / "handles.csv", 17100, 1.3)
    assert 'file="handles.csv"' in agent and '<multiply assign_to="talkms" value="1.3"/>' in agent
    assert '<pause variable="talkms"/>' in agent
    assert "531" in crisis.static_context() and "AGI(" not in crisis.static_context()
    assert "IVR_QUEUE_TIMEOUT" in crisis.controller_context()


def test_summary_from_records_and_agreement() -> None:
    trace = crisis.build_trace(load_profile(PROFILE), 7, 10, 10.0, 0.2)[:4]
    n = [t.number for t in trace]
    calls = [{"caller": n[0], "queue": "refunds", "outcome": "answered", "joined_at": 10.0, "answered_at": 14.0},
             {"caller": n[1], "queue": "support", "outcome": "left_queue"},
             {"caller": n[2], "outcome": "self_service"},
             {"caller": n[3], "queue": "support", "outcome": "answered", "wait": "2"},
             {"caller": n[0], "queue": "refunds", "outcome": "answered", "kind": "callback"},
             {"caller": "5550100", "queue": "support", "outcome": "answered"}]
    s = crisis_report.summarise_records(calls, trace)
    assert (s["records"], s["queued"], s["answered"], s["abandoned"], s["self_service"]) == (4, 3, 2, 1, 1)
    assert s["asa_s"] == 3.0 and s["abandoned_pct"] == 25.0 and s["self_service_pct"] == 25.0
    assert crisis_report.ratio(2.0, 4.0) == 0.5 and crisis_report.ratio(1.0, 0) is None
    assert crisis_report.agreement(0.5, 0.6) is True and crisis_report.agreement(0.5, 1.0) is False
    assert crisis_report.agreement(None, 1.0) is None
