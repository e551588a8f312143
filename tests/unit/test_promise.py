"""The callback promise at run time: the arrival-rate window, the plan from config, persistence without one,
the service's inputs, the schema's callback_over, the config's errors, and the node flow that speaks it."""

from __future__ import annotations

import math
from typing import Any, Mapping

import pytest

from ivr.core import names as ev
from ivr.balance.arrivals import ArrivalWindow, queue_share
from ivr.balance.forecast import Promise, callback_promise, outlook_from_hours
from ivr.callbacks.service import kept_within
from ivr.app.config import ConfigError, ForecastConfig, PromiseConfig
from ivr.app.config_load import from_mapping
from ivr.menu.schema import MenuError, parse_menu
from ivr.callbacks.promise import PromiseService
from ivr.asterisk.state import CallCenterState, Caller, Member, QueueState

QUEUES = ("support", "refunds", "rebooking")


# ------------------------------------------------------------------ arrival window
def test_the_arrival_rate_counts_the_last_window_only():
    w = ArrivalWindow(900.0, since=0.0)
    for t in range(0, 1800, 60):          # one a minute for half an hour
        w.add(float(t))
    assert w.count(1799.0) == 15          # those after 899 s
    assert w.rate(1799.0) == pytest.approx(15 / 900)
    assert w.rate(1799.0 + 900) == 0.0    # all out of the window


def test_a_young_window_measures_over_the_time_observed_not_the_whole_window():
    w = ArrivalWindow(900.0, since=1000.0)
    for t in (1100.0, 1150.0, 1200.0):
        w.add(t)
    assert w.rate(1300.0) == pytest.approx(3 / 300)      # 300 s observed, not 900
    assert w.rate(1010.0) == 0.0
    w2 = ArrivalWindow(900.0, since=1000.0)
    w2.add(1001.0)
    assert w2.rate(1002.0) == pytest.approx(1 / 60)       # under a minute: counted as over a minute
    with pytest.raises(ValueError):
        ArrivalWindow(0)


def test_the_window_is_bounded():
    w = ArrivalWindow(900.0, since=0.0, max_events=10)
    for i in range(100):
        w.add(1.0 + i / 1000)
    assert w.count(2.0) == 10


def test_a_queue_share_splits_each_agent_over_their_queues():
    roster = [("support", "refunds"), ("refunds",), ("rebooking",), ("support",)]
    assert queue_share(roster, "refunds", QUEUES) == pytest.approx((0.5 + 1) / 4)
    assert queue_share(roster, "rebooking", QUEUES) == pytest.approx(0.25)
    assert queue_share([], "support", QUEUES) == pytest.approx(1 / 3)
    assert queue_share(roster, "nosuch", QUEUES) == 0.0


# ------------------------------------------------------------------ the service, with a fake state and store
class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def state_with(queue: str, *, waiting: int = 0, serving: int = 0, paused: int = 0, unreachable: int = 0,
               answered: int = 0, talk: float = 0.0) -> CallCenterState:
    st = CallCenterState()
    q = QueueState(queue)
    members = ([Member(f"PJSIP/s{i}") for i in range(serving)]
               + [Member(f"PJSIP/p{i}", paused=True) for i in range(paused)]
               + [Member(f"PJSIP/u{i}", status=ev.DEVICE_UNAVAILABLE) for i in range(unreachable)])
    q.members = {m.interface: m for m in members}
    q.callers = {str(i): Caller(str(i)) for i in range(waiting)}
    q.stats.answered, q.stats.total_talk = answered, talk
    st.queues[queue] = q
    return st


def service(state: CallCenterState, pending: Mapping[str, int] | Exception = {}, *,  # noqa: B006 - read, never changed
            forecast: ForecastConfig | None = None, roster: list[tuple[str, ...]] | None = None,
            clock: Clock | None = None, connected: bool = True, observed: list[float] | None = None,
            settings: PromiseConfig = PromiseConfig()) -> PromiseService:  # noqa: B008 - a frozen dataclass
    async def pending_by_queue() -> Mapping[str, int]:
        if isinstance(pending, Exception):
            raise pending
        return pending
    return PromiseService(settings, forecast, state, pending_by_queue, QUEUES,
                          agent_queues=lambda: roster or [], connected=lambda: connected,
                          observe=None if observed is None else observed.append, clock=clock or Clock(0.0))


def join(queue: str, account: str = "") -> dict[str, str]:
    return {"Event": ev.QUEUE_CALLER_JOIN, "Queue": queue, "Uniqueid": "1.1", "AccountCode": account}


async def test_the_promise_is_the_forecast_of_the_live_queue_held():
    """Persistence: without a plan the live picture (3 serving, 2 waiting, 4 callbacks ahead, 20 calls an
    hour measured) is held: the same figures as forecast.callback_promise on them."""
    clock = Clock(10_000.0)
    svc = service(state_with("support", waiting=2, serving=3, paused=1, unreachable=1), {"support": 4, "refunds": 9},
                  clock=clock)
    clock.t += 900
    for i in range(5):                            # 5 joins in the last 15 min: 20 an hour
        clock.t = 10_000.0 + 900 + i
        svc.on_event(join("support"))
    svc.on_event(join("support", account="cb:17"))   # a callback dialled back in is not an arrival
    svc.on_event(join("nosuch"))
    svc.on_event({"Event": ev.HANGUP, "Queue": "support"})
    clock.t = 10_000.0 + 1799                   # all 30 within the last 900 s
    live = svc.live("support")
    assert live is not None and (live.waiting, live.serving, live.aht) == (2, 3, 180.0)
    assert live.arrivals_per_s == pytest.approx(5 / 900)
    p = await svc.callback_promise("support")
    expected = callback_promise(waiting=2, callbacks_ahead=4, aht=180.0, agents=3, arrivals_per_s=5 / 900)
    assert (p.seconds, p.forecast_s) == (expected.seconds, expected.forecast_s)
    assert p.seconds == 1200                     # 7 x 180 s at 3 x 0.85 - 1 = 1.55: 813 s, x 1.2, to 5 min
    assert "support: 3 serving, 20 arrivals/h, AHT 180s, live held" in p.why and expected.why in p.why


async def test_measured_handle_time_after_five_answers_and_an_overloaded_line_promises_nothing():
    svc = service(state_with("support", waiting=10, serving=2, answered=5, talk=5 * 600.0))
    live = svc.live("support")
    assert live is not None and live.aht == 600.0
    for _ in range(50):
        svc.on_event(join("support"))
    svc.clock = Clock(60.0)                        # 50 calls a minute of 600 s: far beyond 2 agents
    p = await svc.callback_promise("support")
    assert p.seconds is None and "no free capacity" in p.why


async def test_no_live_picture_or_no_store_means_no_promise():
    assert (await service(state_with("support", serving=3), connected=False).callback_promise("support")).seconds is None
    assert (await service(state_with("support", serving=3)).callback_promise("refunds")).seconds is None
    p = await service(state_with("support", serving=3), ConnectionError("Redis down")).callback_promise("support")
    assert p.seconds is None and "callbacks ahead unknown (Redis down)" in p.why


async def test_a_plan_lets_a_queue_nobody_serves_now_promise_its_agents_later():
    """10:50 UTC, rebooking has no agent now; the plan has 5 agents every hour, one fifth of the roster serves
    rebooking: nothing is done for the rest of the hour, then 1 agent x 0.85 clears the 180 s."""
    plan = ForecastConfig(agents_by_hour=(5.0,) * 24, arrivals_by_hour=(0.0,) * 24, share_to_agents=1.0)
    roster = [("support", "refunds"), ("support", "refunds"), ("rebooking",), ("support",), ("support",)]
    now = 1_764_000_000.0 - 1_764_000_000.0 % 86400 + 10 * 3600 + 3000     # 10:50 UTC
    held = await service(state_with("rebooking"), clock=Clock(now)).callback_promise("rebooking")
    assert held.seconds is None                     # persistence: no agent now, none later
    svc = service(state_with("rebooking"), forecast=plan, roster=roster, clock=Clock(now))
    outlook = svc.outlook("rebooking", now)
    assert outlook[0].seconds == pytest.approx(600) and outlook[0].agents == pytest.approx(1.0)
    assert len(outlook) == 14
    p = await svc.callback_promise("rebooking")
    assert p.forecast_s == pytest.approx(600 + 180 / 0.85)
    assert p.seconds == math.ceil(p.forecast_s * 1.2 / 300) * 300 and "plan" in p.why


async def test_the_plan_arrivals_follow_the_measured_share_of_joins():
    plan = ForecastConfig(agents_by_hour=(4.0,) * 24, arrivals_by_hour=tuple(float(h * 10) for h in range(24)),
                          share_to_agents=0.5, timezone="Asia/Tehran")
    svc = service(state_with("support"), forecast=plan, roster=[("support",), ("refunds",)], clock=Clock(0.0))
    for q in ("support", "support", "support", "refunds"):
        svc.on_event(join(q))
    now = 100.0                                      # 03:31:40 in Tehran (UTC+3:30)
    out = svc.outlook("support", now)
    base = outlook_from_hours(3 * 3600 + 30 * 60 + 100, plan.agents_by_hour, plan.arrivals_by_hour, 0.5)
    assert [iv.seconds for iv in out] == [iv.seconds for iv in base]
    assert out[1].agents == pytest.approx(2.0) and out[1].arrivals_per_s == pytest.approx(base[1].arrivals_per_s * 0.75)


def test_the_offer_uses_the_configured_auto_thresholds():
    svc = service(state_with("support"), settings=PromiseConfig(offer_over_s=120, offer_ratio=0.2))
    p = Promise(1800.0, 1500.0, "")
    assert not svc.offer(359, p, "auto") and svc.offer(361, p, "auto")     # max(120, 0.2 x 1800)
    assert svc.offer(301, p, 300) and not svc.offer(10_000, Promise(None, None, ""), 300)
    assert svc.might_offer(121, "auto") and not svc.might_offer(119, "auto") and not svc.might_offer(None, 300)
    observed: list[float] = []
    service(state_with("support"), observed=observed).promised("support", 900.0)
    assert observed == [900.0]


def test_kept_is_made_at_against_due():
    assert kept_within({"due": "1000.5"}, 1000.0) == "yes"
    assert kept_within({"due": "1000"}, 1000.1) == "no"
    assert kept_within({}, 5.0) == kept_within({"due": "junk"}, 5.0) == kept_within({"due": ""}, 5.0) == "none"


# ------------------------------------------------------------------ config
def test_promise_settings_default_to_forecast_py_and_a_plan_is_optional():
    from ivr.balance import forecast as f
    b = from_mapping({}, env={}).balance
    assert (b.promise.occupancy, b.promise.margin, b.promise.round_s, b.promise.min_s, b.promise.max_s) == (
        f.DEFAULT_OCCUPANCY, f.DEFAULT_MARGIN, f.DEFAULT_ROUND_S, f.DEFAULT_MIN_S, f.DEFAULT_MAX_S)
    assert (b.promise.offer_over_s, b.promise.offer_ratio) == (f.DEFAULT_OFFER_OVER_S, f.DEFAULT_OFFER_RATIO)
    assert b.forecast is None
    plan = from_mapping({"balance": {"forecast": {"agents_by_hour": [2] * 24, "arrivals_by_hour": [30] * 24,
                                                  "share_to_agents": 0.7}}}, env={}).balance.forecast
    assert plan is not None and plan.agents_by_hour == (2.0,) * 24 and plan.share_to_agents == 0.7


@pytest.mark.parametrize(("balance", "key"), [
    ({"forecast": {"agents_by_hour": [1] * 23, "arrivals_by_hour": [1] * 24}}, "balance.forecast.agents_by_hour"),
    ({"forecast": {"agents_by_hour": [1] * 24, "arrivals_by_hour": [1] * 23 + [-1]}},
     "balance.forecast.arrivals_by_hour[23]"),
    ({"forecast": {"agents_by_hour": [1] * 24, "arrivals_by_hour": [1] * 24, "share_to_agents": 1.5}},
     "balance.forecast.share_to_agents"),
    ({"forecast": {"agents_by_hour": [1] * 24, "arrivals_by_hour": [1] * 24, "timezone": "Mars/Base"}},
     "balance.forecast.timezone"),
    ({"forecast": {"agents_by_hour": "many"}}, "balance.forecast.agents_by_hour"),
    ({"forecast": {"agents_by_hour": ["x"] * 24}}, "balance.forecast.agents_by_hour[0]"),
    ({"forecast": {"plan": 1}}, "balance.forecast.plan"),
    ({"promise": {"occupancy": 0}}, "balance.promise.occupancy"),
    ({"promise": {"margin": 0.9}}, "balance.promise.margin"),
    ({"promise": {"min_s": 20000}}, "balance.promise.min_s"),
    ({"promise": {"window_s": 0}}, "balance.promise.round_s"),
    ({"promise": [1]}, "balance.promise"),
])
def test_a_bad_promise_or_plan_stops_start_up_naming_the_key(balance: dict[str, Any], key: str):
    with pytest.raises(ConfigError) as err:
        from_mapping({"balance": balance}, env={})
    assert str(err.value).startswith(key), str(err.value)


# ------------------------------------------------------------------ schema
QUEUE_NODE = """\
name: t
start: q
nodes:
  q:
    type: queue
    queue: support
    callback_over: {over}
    callback: cb
  cb: {{type: callback}}
"""


def test_callback_over_accepts_auto_and_seconds():
    assert parse_menu(QUEUE_NODE.format(over="auto"), "t.yaml", frozenset(QUEUES)).nodes["q"].get(
        "callback_over") == "auto"
    assert parse_menu(QUEUE_NODE.format(over="300"), "t.yaml", frozenset(QUEUES)).nodes["q"].get(
        "callback_over") == 300


@pytest.mark.parametrize("junk", ['"soon"', "-5", "9000", "true", "[300]", "AUTO"])
def test_callback_over_junk_is_refused_naming_the_node(junk: str):
    with pytest.raises(MenuError) as err:
        parse_menu(QUEUE_NODE.format(over=junk), "t.yaml", frozenset(QUEUES))
    msg = str(err.value)
    assert msg.startswith("t.yaml: node 'q' (line 5): callback_over must be \"auto\" or a number of seconds"), msg


def test_the_shipped_menu_offers_callbacks_on_auto():
    from ivr.app.config import PROJECT_ROOT
    menu = parse_menu((PROJECT_ROOT / "dialplans" / "main.yaml").read_text(), "main.yaml", frozenset(QUEUES))
    assert {n.get("callback_over") for n in menu.nodes.values() if n.type == "queue"} == {"auto"}
