"""app_queue's latency per call, from AMI events (ivr/devtools/connect_latency.py)."""

from __future__ import annotations

import pytest

from ivr.devtools.connect_latency import ConnectLatency, measure, pooled


def member(t: float, name: str, status: str = "1", queue: str = "q", incall: str = "0", paused: str = "0"):
    return (t, {"Event": "QueueMemberStatus", "Queue": queue, "MemberName": name, "Status": status,
                "InCall": incall, "Paused": paused})


def ev(t: float, name: str, uid: str, queue: str = "q", member_name: str = "") -> tuple[float, dict[str, str]]:
    return (t, {"Event": name, "Uniqueid": uid, "Queue": queue, "MemberName": member_name})


def test_a_caller_who_finds_a_free_member_pays_the_turn_and_the_ring() -> None:
    events = [member(0.0, "a"), ev(10.0, "QueueCallerJoin", "c1"), ev(10.3, "AgentCalled", "c1", member_name="a"),
              ev(10.4, "AgentConnect", "c1", member_name="a")]
    lat = measure(events)
    assert lat == ConnectLatency(1, 0.3, 0.1) and lat.total_s == pytest.approx(0.4)


def test_a_waiting_caller_pays_from_the_moment_a_member_is_free() -> None:
    events = [member(0.0, "a", status="2", incall="1"),          # busy when the caller joins
              ev(1.0, "QueueCallerJoin", "c1"),
              member(5.0, "a"),                                 # free at 5.0: app_queue's turn comes at 5.8
              ev(5.8, "AgentCalled", "c1", member_name="a"), ev(6.0, "AgentConnect", "c1", member_name="a")]
    lat = measure(events)
    assert lat is not None and lat.turn_s == pytest.approx(0.8) and lat.ring_s == pytest.approx(0.2)


def test_paused_members_and_other_queues_do_not_count_as_free() -> None:
    events = [member(0.0, "p", paused="1"), member(0.0, "other", queue="q2"), member(0.0, "a", status="2"),
              ev(1.0, "QueueCallerJoin", "c1"), member(3.0, "a"),
              ev(3.5, "AgentCalled", "c1", member_name="a"), ev(3.6, "AgentConnect", "c1", member_name="a")]
    lat = measure(events)
    assert lat is not None and lat.turn_s == pytest.approx(0.5)


def test_calls_seen_only_in_part_are_left_out_and_none_when_nothing_connected() -> None:
    assert measure([ev(1.0, "AgentConnect", "x", member_name="a")]) is None
    assert measure([]) is None


def test_pooled_weights_by_connects() -> None:
    p = pooled([ConnectLatency(1, 1.0, 0.0), ConnectLatency(3, 0.0, 0.4), None])
    assert p == ConnectLatency(4, 0.25, 0.3)
    assert pooled([None]) is None
