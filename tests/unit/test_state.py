"""Tests for ivr.asterisk.state: the live queue model fed by AMI events, and its snapshot()."""

from __future__ import annotations

from typing import Any

import pytest

from ivr.asterisk.state import CallCenterState


class Clock:
    """Injected wall clock, moved by hand."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# ----------------------------------------------------------- realistic AMI events

def queue_params(queue: str, servicelevel: int = 20, strategy: str = "rrmemory", holdtime: int = 0) -> dict[str, str]:
    return {"Event": "QueueParams", "Queue": queue, "Max": "0", "Strategy": strategy, "Calls": "0",
            "Holdtime": str(holdtime), "TalkTime": "0", "Completed": "0", "Abandoned": "0",
            "ServiceLevel": str(servicelevel), "ServicelevelPerf": "0.0", "ServicelevelPerf2": "0.0",
            "Weight": "0", "ActionID": "qs-1"}


def queue_member(queue: str, agent: str, status: int = 1, paused: bool = False, in_call: bool = False,
                 name: str | None = None) -> dict[str, str]:
    """QueueMember as answered to QueueStatus (Name/Location, not MemberName/Interface)."""
    return {"Event": "QueueMember", "Queue": queue, "Name": name or agent, "Location": f"PJSIP/{agent}",
            "StateInterface": f"PJSIP/{agent}", "Membership": "dynamic", "Penalty": "0", "CallsTaken": "0",
            "LastCall": "0", "LastPause": "0", "LoginTime": "1795612317", "InCall": "1" if in_call else "0",
            "Status": str(status), "Paused": "1" if paused else "0", "PausedReason": "", "Wrapuptime": "0",
            "ActionID": "qs-1"}


def member_event(event: str, queue: str, agent: str, **extra: str) -> dict[str, str]:
    """QueueMemberAdded/Removed/Pause/Status (MemberName/Interface)."""
    e = {"Event": event, "Queue": queue, "MemberName": f"Agent {agent}", "Interface": f"PJSIP/{agent}",
         "StateInterface": f"PJSIP/{agent}", "Membership": "dynamic", "Penalty": "0", "CallsTaken": "0",
         "LastCall": "0", "LastPause": "0", "LoginTime": "1795612323", "InCall": "0", "Status": "1",
         "Paused": "0", "PausedReason": "", "Ringinuse": "0", "Wrapuptime": "0"}
    e.update(extra)
    return e


def channel_fields(uid: str, n: int) -> dict[str, str]:
    return {"Channel": f"PJSIP/trunk-{n:08x}", "ChannelState": "6", "ChannelStateDesc": "Up",
            "CallerIDNum": f"55512{n:02d}", "CallerIDName": "caller", "Language": "en", "AccountCode": "",
            "Context": "ivr-route", "Exten": "queue", "Priority": "2", "Uniqueid": uid, "Linkedid": uid}


def join(queue: str, uid: str, position: int, n: int = 0) -> dict[str, str]:
    return {"Event": "QueueCallerJoin", **channel_fields(uid, n), "Queue": queue,
            "Position": str(position), "Count": str(position)}


def leave(queue: str, uid: str, position: int, n: int = 0) -> dict[str, str]:
    return {"Event": "QueueCallerLeave", **channel_fields(uid, n), "Queue": queue,
            "Position": str(position), "Count": "0"}


def abandon(queue: str, uid: str, position: int, hold: int, n: int = 0) -> dict[str, str]:
    return {"Event": "QueueCallerAbandon", **channel_fields(uid, n), "Queue": queue,
            "Position": str(position), "OriginalPosition": str(position), "HoldTime": str(hold)}


def entry(queue: str, uid: str, position: int, wait: int, n: int = 0) -> dict[str, str]:
    return {"Event": "QueueEntry", "Queue": queue, "Position": str(position), "Channel": f"PJSIP/trunk-{n:08x}",
            "Uniqueid": uid, "CallerIDNum": f"55512{n:02d}", "CallerIDName": "caller",
            "ConnectedLineNum": "unknown", "ConnectedLineName": "unknown", "Wait": str(wait),
            "Priority": "0", "ActionID": "qs-2"}


def agent_connect(queue: str, uid: str, agent: str, hold: int, ring: int = 1) -> dict[str, str]:
    return {"Event": "AgentConnect", **channel_fields(uid, 0), "DestChannel": f"PJSIP/{agent}-00000001",
            "DestUniqueid": uid + "1", "Queue": queue, "Interface": f"PJSIP/{agent}", "MemberName": agent,
            "HoldTime": str(hold), "RingTime": str(ring)}


def agent_complete(queue: str, uid: str, agent: str, hold: int, talk: int) -> dict[str, str]:
    return {"Event": "AgentComplete", **channel_fields(uid, 0), "DestChannel": f"PJSIP/{agent}-00000001",
            "DestUniqueid": uid + "1", "Queue": queue, "Interface": f"PJSIP/{agent}", "MemberName": agent,
            "HoldTime": str(hold), "TalkTime": str(talk), "Reason": "agent"}


def hangup(uid: str, n: int = 0) -> dict[str, str]:
    e = {"Event": "Hangup", **channel_fields(uid, n), "Cause": "16", "Cause-txt": "Normal Clearing"}
    return e


def newchannel(uid: str, n: int = 0) -> dict[str, str]:
    return {"Event": "Newchannel", **channel_fields(uid, n), "ChannelState": "4", "Context": "from-trunk"}


def feed(state: CallCenterState, *events: dict[str, Any]) -> None:
    for e in events:
        state.apply(e)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def state(clock: Clock) -> CallCenterState:
    return CallCenterState(clock=clock)


def q(state: CallCenterState, name: str) -> dict[str, Any]:
    return state.snapshot()["queues"][name]


# ------------------------------------------------------------------------ tests

def test_empty_snapshot(state: CallCenterState, clock: Clock) -> None:
    snap = state.snapshot()
    assert snap == {"time": clock.now, "queues": {}, "channels": 0}


def test_queue_params_set_servicelevel_and_strategy(state: CallCenterState) -> None:
    feed(state, queue_params("support", servicelevel=30, strategy="ringall", holdtime=12))
    s = q(state, "support")
    assert s["servicelevel_target"] == 30 and s["asterisk_holdtime"] == 12
    assert state.queues["support"].strategy == "ringall"
    assert s["waiting"] == 0 and s["longest_wait"] == 0.0
    assert s["service_level"] is None and s["asa"] is None


def test_waiting_counts_and_order(state: CallCenterState, clock: Clock) -> None:
    feed(state, join("support", "u1", 1, 1))
    clock.advance(5)
    feed(state, join("support", "u2", 2, 2), join("refunds", "u3", 1, 3))
    snap = state.snapshot()
    assert snap["queues"]["support"]["waiting"] == 2
    assert snap["queues"]["refunds"]["waiting"] == 1
    assert [c["uniqueid"] for c in snap["queues"]["support"]["callers"]] == ["u1", "u2"]
    assert snap["queues"]["support"]["offered"] == 2
    first = snap["queues"]["support"]["callers"][0]
    assert first["channel"] == "PJSIP/trunk-00000001" and first["callerid"] == "5551201"


def test_positions_renumbered_after_leave_from_the_middle(state: CallCenterState) -> None:
    feed(state, *(join("support", f"u{i}", i, i) for i in range(1, 5)))
    feed(state, leave("support", "u2", 2, 2))
    callers = q(state, "support")["callers"]
    assert [(c["uniqueid"], c["position"]) for c in callers] == [("u1", 1), ("u3", 2), ("u4", 3)]
    assert q(state, "support")["waiting"] == 3


def test_a_caller_joining_ahead_moves_the_others_back(state: CallCenterState) -> None:
    """A priority caller or a returning caller (Queue()'s position argument) joins in front: Asterisk sends
    no event for the callers behind them, so the model moves them back itself."""
    feed(state, *(join("support", f"u{i}", i, i) for i in range(1, 4)))
    feed(state, join("support", "back", 2, 9))
    assert [(c["uniqueid"], c["position"]) for c in q(state, "support")["callers"]] == [
        ("u1", 1), ("back", 2), ("u2", 3), ("u3", 4)]
    feed(state, leave("support", "u1", 1))
    assert [(c["uniqueid"], c["position"]) for c in q(state, "support")["callers"]] == [
        ("back", 1), ("u2", 2), ("u3", 3)]


def test_leave_of_the_first_caller_moves_everyone_up(state: CallCenterState) -> None:
    feed(state, join("support", "u1", 1), join("support", "u2", 2))
    feed(state, leave("support", "u1", 1))
    assert [(c["uniqueid"], c["position"]) for c in q(state, "support")["callers"]] == [("u2", 1)]


def test_leave_unknown_caller_or_queue_changes_nothing(state: CallCenterState) -> None:
    feed(state, join("support", "u1", 1), join("support", "u2", 2))
    feed(state, leave("support", "ghost", 1), leave("nosuchqueue", "u1", 1))
    assert [(c["uniqueid"], c["position"]) for c in q(state, "support")["callers"]] == [("u1", 1), ("u2", 2)]
    assert "nosuchqueue" not in state.queues


def test_longest_wait_uses_injected_clock(state: CallCenterState, clock: Clock) -> None:
    feed(state, join("support", "u1", 1))
    clock.advance(12.34)
    feed(state, join("support", "u2", 2))
    clock.advance(3)
    s = q(state, "support")
    assert s["longest_wait"] == 15.3
    assert [c["wait"] for c in s["callers"]] == [15.3, 3.0]
    assert state.snapshot()["time"] == clock.now


def test_queue_entry_wait_backdates_join_time(state: CallCenterState, clock: Clock) -> None:
    feed(state, entry("support", "u1", 1, wait=40), entry("support", "u2", 2, wait=7))
    s = q(state, "support")
    assert s["longest_wait"] == 40.0
    assert [(c["uniqueid"], c["position"], c["wait"]) for c in s["callers"]] == [("u1", 1, 40.0), ("u2", 2, 7.0)]
    assert s["offered"] == 0  # a QueueEntry (status listing) is not a new offer


def test_member_counts_available_busy_paused(state: CallCenterState) -> None:
    feed(state,
         queue_member("support", "1001", status=1),                     # idle -> available
         queue_member("support", "1002", status=2, in_call=True),       # on a call -> busy
         queue_member("support", "1003", status=1, paused=True),        # paused
         queue_member("support", "1004", status=5),                     # unavailable
         queue_member("support", "1005", status=6))                     # ringing
    s = q(state, "support")
    assert (s["available"], s["busy"], s["paused"]) == (1, 1, 1)
    members = {m["interface"]: m for m in s["members"]}
    assert list(members) == sorted(members)
    assert members["PJSIP/1001"]["status"] == "idle" and members["PJSIP/1001"]["available"] is True
    assert members["PJSIP/1004"]["status"] == "unavailable" and members["PJSIP/1004"]["available"] is False
    assert members["PJSIP/1005"]["status"] == "ringing"
    assert members["PJSIP/1001"]["name"] == "1001"


def test_member_events_update_and_remove(state: CallCenterState) -> None:
    feed(state, member_event("QueueMemberAdded", "rebooking", "1001"))
    s = q(state, "rebooking")
    assert s["available"] == 1 and s["members"][0]["name"] == "Agent 1001"
    feed(state, member_event("QueueMemberPause", "rebooking", "1001", Paused="1", PausedReason="lunch"))
    m = q(state, "rebooking")["members"][0]
    assert m["paused"] is True and m["paused_reason"] == "lunch" and q(state, "rebooking")["available"] == 0
    feed(state, member_event("QueueMemberPause", "rebooking", "1001", Paused="0", PausedReason=""))
    feed(state, member_event("QueueMemberStatus", "rebooking", "1001", Status="2", InCall="1", CallsTaken="4"))
    s = q(state, "rebooking")
    assert (s["available"], s["busy"], s["paused"]) == (0, 1, 0)
    assert s["members"][0]["calls_taken"] == 4 and s["members"][0]["status"] == "in-use"
    feed(state, member_event("QueueMemberRemoved", "rebooking", "1001"))
    assert q(state, "rebooking")["members"] == []


def test_member_removed_from_unknown_queue_is_ignored(state: CallCenterState) -> None:
    feed(state, member_event("QueueMemberRemoved", "nowhere", "1001"))
    assert "nowhere" not in state.queues


def test_agent_connect_complete_marks_member_busy_then_free(state: CallCenterState) -> None:
    feed(state, queue_member("support", "1001"), join("support", "u1", 1), leave("support", "u1", 1),
         agent_connect("support", "u1", "1001", hold=4))
    s = q(state, "support")
    assert s["busy"] == 1 and s["available"] == 0
    feed(state, agent_complete("support", "u1", "1001", hold=4, talk=60))
    s = q(state, "support")
    assert s["busy"] == 0 and s["available"] == 1
    assert state.queues["support"].stats.total_talk == 60


def test_a_late_member_status_with_incall_0_does_not_free_a_connected_member(state: CallCenterState) -> None:
    feed(state, queue_member("support", "1001"), agent_connect("support", "u1", "1001", hold=2))
    late = {**queue_member("support", "1001", status=2, in_call=False), "Event": "QueueMemberStatus",
            "Interface": "PJSIP/1001", "MemberName": "1001"}
    feed(state, late)
    assert q(state, "support")["busy"] == 1
    feed(state, agent_complete("support", "u1", "1001", hold=2, talk=3), {**late, "Status": "1"})
    assert q(state, "support")["busy"] == 0 and q(state, "support")["available"] == 1


def test_service_level_and_asa_from_agent_connect(state: CallCenterState) -> None:
    feed(state, queue_params("support", servicelevel=20))
    for i, hold in enumerate((5, 20, 21, 50)):
        feed(state, join("support", f"u{i}", 1), leave("support", f"u{i}", 1),
             agent_connect("support", f"u{i}", "1001", hold=hold))
    s = q(state, "support")
    assert s["answered"] == 4 and s["offered"] == 4
    assert s["service_level"] == 0.5     # 5 and 20 are within 20 s (inclusive); 21 and 50 are not
    assert s["asa"] == 24.0              # (5 + 20 + 21 + 50) / 4


def test_service_level_follows_queue_servicelevel(state: CallCenterState) -> None:
    feed(state, queue_params("refunds", servicelevel=60),
         agent_connect("refunds", "u1", "1001", hold=45), agent_connect("refunds", "u2", "1001", hold=61))
    s = q(state, "refunds")
    assert s["service_level"] == 0.5 and s["asa"] == 53.0


def test_abandon_counts(state: CallCenterState) -> None:
    feed(state, join("support", "u1", 1), abandon("support", "u1", 1, hold=30), leave("support", "u1", 1))
    s = q(state, "support")
    assert (s["offered"], s["abandoned"], s["answered"], s["waiting"]) == (1, 1, 0, 0)


def test_hangup_of_waiting_caller_without_leave_removes_and_renumbers(state: CallCenterState) -> None:
    feed(state, newchannel("u2", 2), *(join("support", f"u{i}", i, i) for i in (1, 2, 3)))
    assert state.snapshot()["channels"] == 1
    feed(state, hangup("u2", 2))
    s = q(state, "support")
    assert [(c["uniqueid"], c["position"]) for c in s["callers"]] == [("u1", 1), ("u3", 2)]
    assert state.snapshot()["channels"] == 0


def test_hangup_of_unknown_channel_is_harmless(state: CallCenterState) -> None:
    feed(state, join("support", "u1", 1), hangup("zzz"))
    assert q(state, "support")["waiting"] == 1


def test_newchannel_and_core_show_channel_track_channels(state: CallCenterState) -> None:
    feed(state, newchannel("u1", 1), {"Event": "CoreShowChannel", **channel_fields("u2", 2), "Linkedid": "u1"})
    assert state.channels["u1"] == {"channel": "PJSIP/trunk-00000001", "linkedid": "u1", "callerid": "5551201"}
    assert state.channels["u2"]["linkedid"] == "u1"
    assert state.snapshot()["channels"] == 2


def test_unknown_events_are_ignored_and_not_counted(state: CallCenterState) -> None:
    feed(state, {"Event": "MusicOnHoldStart", "Uniqueid": "u1", "Queue": "support"},
         {"Event": "FullyBooted"}, {"Response": "Success"}, {})
    assert state.events_seen == 0
    assert state.queues == {} and state.snapshot()["queues"] == {}
    feed(state, join("support", "u1", 1))
    assert state.events_seen == 1


def test_resync_replaces_members_and_callers_but_keeps_stats(state: CallCenterState, clock: Clock) -> None:
    feed(state, queue_params("support"), queue_member("support", "1001"), queue_member("support", "1002"),
         join("support", "u1", 1), join("support", "u2", 2), leave("support", "u1", 1),
         agent_connect("support", "u1", "1001", hold=10), join("support", "u3", 2),
         abandon("support", "u3", 2, hold=3))
    before = q(state, "support")
    assert before["answered"] == 1 and before["abandoned"] == 1 and before["offered"] == 3
    clock.advance(100)
    state.resync([queue_params("support"), queue_member("support", "1003"),
                  entry("support", "u9", 1, wait=8), queue_params("refunds")],
                 [newchannel("u9", 9)])
    after = q(state, "support")
    assert [m["interface"] for m in after["members"]] == ["PJSIP/1003"]
    assert [c["uniqueid"] for c in after["callers"]] == ["u9"] and after["longest_wait"] == 8.0
    assert (after["answered"], after["abandoned"], after["offered"], after["asa"]) == (1, 1, 3, 10.0)
    assert "refunds" in state.snapshot()["queues"]
    assert list(state.channels) == ["u9"]
    assert state.resyncs == 1 and state.last_resync_at == clock.now


def test_resync_keeps_stats_of_queue_missing_from_status(state: CallCenterState) -> None:
    feed(state, join("old", "u1", 1), queue_member("old", "1001"))
    state.resync([])
    assert state.queues["old"].stats.offered == 1
    s = q(state, "old")
    assert s["members"] == [] and s["callers"] == []


def test_resync_without_channels_keeps_channel_table(state: CallCenterState) -> None:
    feed(state, newchannel("u1"))
    state.resync([queue_params("support")])
    assert "u1" in state.channels


@pytest.mark.parametrize(
    "event",
    [
        {"Event": "QueueMember", "Queue": "support", "Location": "PJSIP/1001", "Status": "abc", "Paused": "maybe",
         "Penalty": "x", "CallsTaken": None, "LastCall": "", "InCall": None},
        {"Event": "QueueMemberStatus", "Interface": "PJSIP/1001", "Status": "2"},              # no Queue
        {"Event": "QueueMember", "Queue": "support"},                                          # no interface
        {"Event": "QueueCallerJoin", "Uniqueid": "u1", "Position": "first"},                   # no Queue
        {"Event": "QueueCallerJoin", "Queue": "support", "Position": "1"},                    # no Uniqueid
        {"Event": "QueueEntry", "Queue": "support", "Uniqueid": "u1", "Wait": "long", "Position": None},
        {"Event": "QueueCallerLeave", "Uniqueid": "u1"},
        {"Event": "QueueCallerAbandon", "Queue": "support"},
        {"Event": "AgentConnect", "Queue": "support", "HoldTime": "n/a"},
        {"Event": "AgentComplete", "TalkTime": "?"},
        {"Event": "QueueParams", "Queue": "support", "ServiceLevel": "abc", "Holdtime": None},
        {"Event": "QueueMemberRemoved"},
        {"Event": "Hangup"},
        {"Event": "Newchannel"},
    ],
)
def test_malformed_events_do_not_raise(state: CallCenterState, event: dict[str, Any]) -> None:
    feed(state, queue_params("support"), join("support", "u0", 1))
    state.apply(event)
    snap = state.snapshot()          # still renders
    assert snap["queues"]["support"]["waiting"] >= 1


def test_malformed_numbers_fall_back_to_defaults(state: CallCenterState) -> None:
    feed(state, queue_params("support", servicelevel=25))
    feed(state, {"Event": "QueueParams", "Queue": "support", "ServiceLevel": "abc"})
    feed(state, {"Event": "QueueMember", "Queue": "support", "Location": "PJSIP/1001", "Status": "abc",
                 "Paused": "maybe", "InCall": "0"})
    s = q(state, "support")
    assert s["servicelevel_target"] == 25          # bad value keeps the previous one
    m = s["members"][0]
    assert m["status"] == "unknown" and m["paused"] is False and m["available"] is False
    feed(state, {"Event": "QueueEntry", "Queue": "support", "Uniqueid": "u1", "Wait": "long", "Position": "?"})
    assert q(state, "support")["callers"][0]["wait"] == 0.0


def test_caller_without_position_sorts_last(state: CallCenterState, clock: Clock) -> None:
    feed(state, {"Event": "QueueCallerJoin", "Queue": "support", "Uniqueid": "nopos"})
    clock.advance(1)
    feed(state, join("support", "u1", 1))
    assert [c["uniqueid"] for c in q(state, "support")["callers"]] == ["u1", "nopos"]


def test_bug_event_without_queue_creates_phantom_queue(state: CallCenterState) -> None:
    feed(state, {"Event": "QueueMemberStatus", "Interface": "PJSIP/1001", "Status": "2"},
         {"Event": "QueueCallerJoin", "Uniqueid": "u1"})
    assert "" not in state.snapshot()["queues"]


def test_device_states_come_from_device_events_and_queue_members(state: CallCenterState) -> None:
    feed(state, {"Event": "DeviceStateChange", "Device": "PJSIP/7001", "State": "NOT_INUSE"},
         {"Event": "DeviceStateChange", "Device": "PJSIP/trunk/sip:1@x", "State": "INUSE"},
         {"Event": "DeviceStateChange", "Device": "Local/1@agent-mobile", "State": "INUSE"},
         queue_member("support", "7002", status=5))
    assert state.devices == {"PJSIP/7001": "NOT_INUSE", "PJSIP/7002": "UNAVAILABLE"}
    # leaving the queue does not forget the device's state
    feed(state, {"Event": "QueueMemberRemoved", "Queue": "support", "Interface": "PJSIP/7002"})
    assert state.devices["PJSIP/7002"] == "UNAVAILABLE"
    state.resync([], [], [{"Event": "DeviceStateChange", "Device": "PJSIP/7002", "State": "NOT_INUSE"}])
    assert state.devices == {"PJSIP/7002": "NOT_INUSE"}
