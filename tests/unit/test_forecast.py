"""The callback promise and the callback offer (ivr/balance/forecast.py): pure, so the figures are exact."""
import math

import pytest

from ivr.balance.forecast import (Interval, Promise, callback_promise, clear_time, free_rate, offer_callback,
                                  outlook_from_hours)


def test_free_rate_is_what_the_inbound_load_leaves():
    # 10 agents at 85 %: 8.5 agent-seconds a second; 120 calls an hour of 180 s need 6
    assert free_rate(10, 120 / 3600, 180) == pytest.approx(2.5)
    assert free_rate(10, 200 / 3600, 180) == 0.0          # overload: nothing left
    with pytest.raises(ValueError, match="aht"):
        free_rate(10, 0.01, 0)


def test_clear_time_walks_the_intervals():
    ivs = [Interval(3600, 10, 200 / 3600), Interval(3600, 10, 0.0)]   # overloaded hour, then a quiet one
    # 3 x 180 s of work: nothing free in the first hour, 8.5 agent-s/s in the second
    assert clear_time(540, ivs, 180) == pytest.approx(3600 + 540 / 8.5)
    assert clear_time(540, ivs, 180, horizon=3600) is None


def test_promise_from_the_live_picture_alone_is_rounded_up_with_a_margin():
    p = callback_promise(waiting=4, callbacks_ahead=5, aht=180, agents=10, arrivals_per_s=120 / 3600)
    # (4 + 5 + 1) x 180 = 1800 agent-s at 2.5 agent-s/s = 720 s; x 1.2 = 864 s -> 15 min (the floor)
    assert p.forecast_s == pytest.approx(720)
    assert p.seconds == 900
    p = callback_promise(waiting=20, callbacks_ahead=40, aht=180, agents=10, arrivals_per_s=120 / 3600)
    assert p.forecast_s == pytest.approx(61 * 180 / 2.5)           # 4392 s
    assert p.seconds == math.ceil(4392 * 1.2 / 300) * 300           # 5400 s: "within 90 minutes"


def test_an_overloaded_line_without_an_outlook_promises_nothing():
    p = callback_promise(waiting=30, callbacks_ahead=0, aht=180, agents=10, arrivals_per_s=250 / 3600)
    assert p.seconds is None and p.forecast_s is None
    assert "no free capacity" in p.why


def test_an_outlook_lets_an_overloaded_line_promise_the_quiet_hours():
    outlook = [Interval(1800, 10, 250 / 3600), Interval(3600, 10, 250 / 3600), Interval(3600, 10, 60 / 3600)]
    p = callback_promise(waiting=30, callbacks_ahead=10, aht=180, agents=10, arrivals_per_s=250 / 3600,
                         outlook=outlook)
    # nothing free for 1.5 h, then 8.5 - 3 = 5.5 agent-s/s: 41 x 180 / 5.5 = 1342 s later
    assert p.forecast_s == pytest.approx(5400 + 41 * 180 / 5.5)
    assert p.seconds == math.ceil(p.forecast_s * 1.2 / 300) * 300
    # past the 4 h ceiling: no promise
    far = callback_promise(waiting=30, callbacks_ahead=500, aht=180, agents=10, arrivals_per_s=250 / 3600,
                           outlook=outlook)
    assert far.seconds is None


def test_bad_counts_are_refused():
    with pytest.raises(ValueError):
        callback_promise(waiting=-1, callbacks_ahead=0, aht=180, agents=1, arrivals_per_s=0)


def test_offer_fixed_threshold_needs_a_promise():
    kept = Promise(1800.0, 1200.0, "")
    assert offer_callback(301, kept, 300) and not offer_callback(299, kept, 300)
    assert not offer_callback(3000, Promise(None, None, ""), 300)      # a promise that cannot be kept: no offer
    assert not offer_callback(3000, kept, None) and not offer_callback(None, kept, 300)


def test_auto_offer_threshold_grows_with_the_promise():
    short, long = Promise(900.0, 600.0, ""), Promise(7200.0, 6000.0, "")
    assert offer_callback(91, short, "auto") and not offer_callback(89, short, "auto")   # max(60, 0.1 x 900)
    assert not offer_callback(61, long, "auto")           # a 2 h promise is offered from a 12 min wait
    assert offer_callback(721, long, "auto") and not offer_callback(719, long, "auto")


def test_outlook_from_hours_starts_with_the_rest_of_this_hour():
    agents = [2.0] * 24
    arrivals = [float(h) for h in range(24)]
    out = outlook_from_hours(10 * 3600 + 600, agents, arrivals, share_to_agents=0.5)
    assert out[0] == Interval(3000.0, 2.0, 10 * 0.5 / 3600)
    assert len(out) == 14 and out[-1].arrivals_per_s == pytest.approx(23 * 0.5 / 3600)
    with pytest.raises(ValueError):
        outlook_from_hours(0, [1.0], arrivals)


def test_a_callback_near_its_promise_takes_the_next_free_agent_even_while_callers_wait():
    from ivr.balance.policy import CallbackView, Policy, QueueView, Snapshot, decide
    q = QueueView("refunds", waiting=3, free=1, serving=4, members={"PJSIP/a": 0}, idle=frozenset({"PJSIP/a"}))
    cbs = (CallbackView("old", "refunds", place=10.0, due=5000.0), CallbackView("due", "refunds", place=50.0, due=1500.0))
    acts = [a for a in decide(Snapshot(1000.0, {"refunds": q}, {}, callbacks=cbs), Policy()).actions
            if a.kind == "dispatch_callback"]
    assert [a.callback_id for a in acts] == ["due"]                 # 500 s left < 900 s: owed, callers or not
    assert "promise runs out in 500s" in acts[0].reason
    # not urgent yet: waiting callers come first, as before
    later = (CallbackView("due", "refunds", place=50.0, due=3000.0),)
    assert not [a for a in decide(Snapshot(1000.0, {"refunds": q}, {}, callbacks=later), Policy()).actions
                if a.kind == "dispatch_callback"]


def test_the_caller_hears_app_queues_holdtime_once_it_has_a_history_and_the_offer_looks_at_the_larger():
    from ivr.balance.forecast import spoken_and_offer
    assert spoken_and_offer(120.0, None) == (120.0, 120.0)          # no history yet: the model
    assert spoken_and_offer(120.0, 300.0) == (300.0, 300.0)         # the holdtime measures best
    assert spoken_and_offer(400.0, 300.0) == (300.0, 400.0)         # a queue building: the offer sees it
    assert spoken_and_offer(None, None) == (None, None)
