"""The crisis-day model: callers walk the real menu, self-service, notices, forecast promises (fast runs)."""
from __future__ import annotations

from typing import Any

import pytest

from ivr.balance.menu_mix import CALLBACK, QUEUE, SELF_SERVICE, branch_routes, check_shares, load_routes
from ivr.devtools.sim_engine import Simulation
from ivr.devtools.sim_model import ROOT, Profile, apply_variant, load_profile, make_callers
from ivr.menu.schema import parse_menu

ALL = ["refunds", "rebooking", "support"]
BRANCHES = {"refund_status": 0.35, "refund_request": 0.30, "q_rebooking": 0.25, "q_support": 0.10}


def menu_profile(arrivals: list[float], core: int = 3, **kw: Any) -> Profile:
    d: dict[str, Any] = {
        "name": "menu", "seed": 5, "arrivals_per_hour": arrivals + [0] * (24 - len(arrivals)),
        "menu": {"file": "dialplans/main.yaml", "branches": dict(BRANCHES),
                 "self_service": {"refund_status": 0.6, "refund_request": 0.5}},
        "roster": {"core": [{"name": "core", "count": core, "start": 0, "end": 24, "queues": ALL}]},
        "tick_s": 2,
    }
    d.update(kw)
    return Profile.from_dict(d)


def test_the_default_menu_is_walked_to_where_each_choice_ends() -> None:
    routes = load_routes(ROOT / "dialplans" / "main.yaml")
    assert routes["refund_status"].kind == SELF_SERVICE and routes["refund_status"].queue == "refunds"
    assert routes["refund_status"].path == ("refund_status", "refund_status_lookup", "goodbye_self_service")
    assert routes["refund_request"].kind == SELF_SERVICE
    assert (routes["q_rebooking"].kind, routes["q_rebooking"].queue) == (QUEUE, "rebooking")
    assert routes["q_rebooking"].callback_over is not None           # the queue node offers a callback
    assert (routes["callback"].kind, routes["callback"].key) == (CALLBACK, "9")


def test_a_branch_that_ends_nowhere_is_named() -> None:
    text = """
name: t
start: main
nodes:
  main: {type: menu, prompts: [main-menu], options: {"1": info, "2": q}}
  info: {type: play, prompts: [goodbye], next: bye}
  bye: {type: hangup, prompts: [goodbye]}
  q: {type: queue, queue: support}
"""
    with pytest.raises(ValueError, match="branch 'info' stops at 'bye'"):
        branch_routes(parse_menu(text, "t.yaml"))


def test_branch_shares_must_name_options_and_sum_to_one() -> None:
    routes = load_routes(ROOT / "dialplans" / "main.yaml")
    with pytest.raises(ValueError, match=r"\['refunds_by_mail'\] are not options"):
        check_shares(routes, {"refunds_by_mail": 1.0})
    with pytest.raises(ValueError, match="sum to 0.900"):
        check_shares(routes, {"refund_status": 0.5, "q_support": 0.4})


@pytest.mark.parametrize("change, message", [
    ({"menu": {"file": "dialplans/main.yaml", "branches": dict(BRANCHES), "self_service": {"q_support": 0.5}}},
     r"menu.self_service: \['q_support'\] are not self-service branches"),
    ({"callback": {"threshold_s": "soon"}}, "callback.threshold_s: a number of seconds or 'auto'"),
    ({"callback": {"forecast": "crystal-ball"}}, "callback.forecast: plan or live"),
    ({"notices": {"enabled": True, "queue": "sales", "per_hour": 10}}, "notices.queue: 'sales' is not a queue"),
])
def test_bad_profiles_are_refused_with_the_key_named(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        menu_profile([10], **change)


def test_callers_choose_branches_in_the_profile_shares_and_are_the_same_in_both_modes() -> None:
    p = menu_profile([3000])
    callers = make_callers(p, 5, 0, 1)
    n = len(callers)
    for branch, share in BRANCHES.items():
        assert sum(c.branch == branch for c in callers) / n == pytest.approx(share, abs=0.03)
    assert all(c.queue == "refunds" for c in callers if c.branch.startswith("refund_"))
    again = make_callers(p, 5, 0, 1)
    assert [(c.t, c.branch, c.u_ss) for c in again] == [(c.t, c.branch, c.u_ss) for c in callers]


def test_self_service_finishes_the_expected_share_in_the_menu_and_never_in_static() -> None:
    p = menu_profile([400, 0], core=8)
    ctrl = Simulation(p, "balanced", hours=(0, 2)).run().summary()
    static = Simulation(p, "static", hours=(0, 2)).run().summary()
    assert p.self_service_share() == pytest.approx(0.35 * 0.6 + 0.30 * 0.5)
    assert ctrl["self_service"] / ctrl["offered"] == pytest.approx(p.self_service_share(), abs=0.05)
    assert static["self_service"] == 0 and static["answered"] > ctrl["answered"]
    for s in (ctrl, static):      # every call is accounted for
        assert s["offered"] == (s["answered"] + s["abandoned"] + s["waiting_end"] + s["cb_requested"]
                                + s["self_service"])
        assert s["served"] == s["answered"] + s["self_service"] + s["cb_made"]


def test_self_service_off_sends_those_callers_to_their_queue() -> None:
    p = apply_variant(menu_profile([400, 0], core=8), self_service=False)
    s = Simulation(p, "balanced", hours=(0, 2)).run().summary()
    assert s["self_service"] == 0 and s["answered"] > 0


def test_notices_stop_calls_and_never_exceed_the_transfer_cap() -> None:
    p = menu_profile([0, 0, 300, 0], core=4, notices={
        "enabled": True, "contacts": 400, "reach": 1.0, "start": 0, "end": 4, "per_hour": 3600, "answer": 1.0,
        "no_call": 1.0, "agent": 0.3, "queue": "refunds", "max_transfers": 2})
    sim = Simulation(p, "balanced", hours=(0, 4))
    seen = []
    tick = sim._tick

    def spy(now: float) -> None:
        tick(now)
        seen.append(sim.transfers_in_flight)
    sim._tick = spy  # type: ignore[method-assign]
    s = sim.run().summary()
    assert s["notified_no_call"] > 150 and s["transfers"] > 0
    assert max(seen) == 2 and min(seen) >= 0
    assert s["cb_requested"] > 0          # a transfer over the cap became a callback
    off = Simulation(apply_variant(menu_profile([0, 0, 300, 0], core=4), notices=False), "balanced",
                     hours=(0, 4)).run().summary()
    assert off["notified_no_call"] == 0 and off["offered"] > s["offered"]


def test_forecast_promises_are_kept_and_pending_callbacks_are_reported() -> None:
    # a surge hour then quiet hours: callbacks offered in the surge are made once it passes
    p = menu_profile([250, 30, 30, 30], core=4, callback={"threshold_s": "auto", "accept": 1.0},
                     patience={"mean_s": 900})
    s = Simulation(p, "balanced", hours=(0, 4)).run().summary()
    assert s["cb_requested"] > 10
    assert s["cb_made"] + s["cb_pending_end"] == s["cb_requested"]
    assert s["cb_kept"] / s["cb_made"] >= 0.95 and s["cb_promise_avg_s"] >= 900
    # without the plan (the live picture held) the overloaded hour can promise nothing, so fewer callers
    # are offered one, and they wait longer
    live = menu_profile([250, 30, 30, 30], core=4, callback={"threshold_s": "auto", "accept": 1.0,
                                                              "forecast": "live"}, patience={"mean_s": 900})
    held = Simulation(live, "balanced", hours=(0, 4)).run().summary()
    assert held["cb_requested"] < s["cb_requested"] / 2 and held["asa_s"] > s["asa_s"]


def test_apply_variant_scales_the_self_service_share() -> None:
    p = apply_variant(menu_profile([10]), self_service_share=0.2)
    assert p.self_service_share() == pytest.approx(0.2)
    with pytest.raises(ValueError, match="above 100 %"):
        apply_variant(menu_profile([10]), self_service_share=0.9)
    with pytest.raises(ValueError, match="between 0 and 1"):
        apply_variant(menu_profile([10]), accept=1.5)


def test_the_crisis_day_profile_loads_and_its_static_line_is_the_calibrated_one() -> None:
    p = load_profile(ROOT / "profiles" / "crisis-day.yaml")
    assert sum(p.arrivals_per_hour) == 3807 and max(p.arrivals_per_hour) == 499
    assert p.handle_mean_s == 171
    days = [Simulation(p, "static", seed).run().summary() for seed in range(1, 6)]   # the calibration's seeds
    assert all(s["self_service"] == 0 and s["cb_offered"] == 0 and s["notified_no_call"] == 0 for s in days)
    assert 3807 * 0.95 <= sum(s["answered"] for s in days) / 5 <= 3807 * 1.05
    assert 171 * 0.85 <= sum(s["asa_s"] for s in days) / 5 <= 171 * 1.15


def test_connect_time_is_added_to_every_answered_call() -> None:
    # app_queue's turn and the ring come on every call, also when an agent is free at once (measured)
    calm, calm_slow = menu_profile([60, 0], core=20), menu_profile([60, 0], core=20, connect_s=6.0)
    assert Simulation(calm, "static", hours=(0, 2)).run().summary()["asa_s"] == 0.0
    assert Simulation(calm_slow, "static", hours=(0, 2)).run().summary()["asa_s"] == pytest.approx(6.0)
    busy, slow = menu_profile([300, 0], core=4), menu_profile([300, 0], core=4, connect_s=6.0)
    a, b = (Simulation(p, "static", hours=(0, 2)).run().summary() for p in (busy, slow))
    assert b["asa_s"] > a["asa_s"]
