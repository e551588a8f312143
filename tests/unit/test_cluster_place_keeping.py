"""Place keeping across nodes, the pure parts and the services on fakes: heartbeat ageing on an injected clock,
the sweep's order, the waiting register fed by AMI events, and the order-across-nodes measure."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from ivr.cluster.lost import LostNodeSweep, batches, callback_event, in_join_order
from ivr.cluster.nodes import NO_ASTERISK, SILENT, Beat, NodeHeartbeats, lost_nodes, lost_reason, parse_beats
from ivr.cluster.waiting import WaitingRegister, callback_number, origin_of, out_of_order, resolve_origins
from ivr.store.cluster_nodes import Moved, Waiter
from ivr.store.leader import Fenced


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# ------------------------------------------------------------------ heartbeats
class FakeBeats:
    def __init__(self) -> None:
        self.hash: dict[str, str] = {}

    async def heartbeat(self, node: str, info: Mapping[str, Any]) -> dict[str, str]:
        self.hash[node] = json.dumps(dict(info))
        return dict(self.hash)


def test_a_beat_ages_with_the_clock_and_its_node_is_lost_past_the_ttl() -> None:
    beat = Beat("b", at=1000.0)
    assert lost_reason(beat, 1004.9, 5.0) == ""
    assert lost_reason(beat, 1005.0, 5.0) == ""          # exactly the TTL: still alive
    assert lost_reason(beat, 1005.1, 5.0) == SILENT
    down = Beat("b", at=1010.0, ami=False, ami_down_since=1003.0)
    assert lost_reason(down, 1008.0, 5.0) == ""          # AMI down 5 s: not yet
    assert lost_reason(down, 1008.5, 5.0) == NO_ASTERISK  # beats, but no Asterisk under it for longer than the TTL


def test_damaged_heartbeats_are_ignored() -> None:
    beats = parse_beats({"a": json.dumps({"at": 5, "api": "http://x"}), "b": "not json", "c": json.dumps({"api": 1})})
    assert list(beats) == ["a"] and beats["a"].api == "http://x"


def test_this_node_is_never_lost_for_silence_but_is_when_its_asterisk_is_gone() -> None:
    beats = {"a": Beat("a", at=0.0), "b": Beat("b", at=0.0), "c": Beat("c", at=99.0)}
    assert lost_nodes(beats, 100.0, 5.0, "a") == {"b": SILENT}
    beats["a"] = Beat("a", at=99.0, ami=False, ami_down_since=90.0)
    assert lost_nodes(beats, 100.0, 5.0, "a") == {"a": NO_ASTERISK, "b": SILENT}


async def test_heartbeats_on_an_injected_clock() -> None:
    clock, store = Clock(), FakeBeats()
    ami_up = [True]
    a = NodeHeartbeats(store, "a", api="http://a", every=1.0, ttl=5.0, ami_connected=lambda: ami_up[0], clock=clock)
    b = NodeHeartbeats(store, "b", api="http://b", every=1.0, ttl=5.0, ami_connected=lambda: True, clock=clock)
    await a.beat()
    assert a.alive() == ["a"]           # b has not beaten yet
    await b.beat()
    await a.beat()
    assert a.alive() == ["a", "b"] and a.dead() == [] and a.others_alive() == ["b"]
    clock.t += 4.0
    await a.beat()
    assert a.alive() == ["a", "b"]
    clock.t += 2.0                      # b's last beat is 6 s old now
    await a.beat()
    assert a.alive() == ["a"] and a.dead() == ["b"] and a.others_alive() == []
    health = a.describe()
    assert [(n["node"], n["alive"], n["lost"]) for n in health["nodes"]] == [("a", True, None), ("b", False, SILENT)]
    await b.beat()                      # b is back
    await a.beat()
    assert a.dead() == []
    ami_up[0] = False                   # a's Asterisk goes away: a says so in its beats, from the first one
    await a.beat()
    since = json.loads(store.hash["a"])["ami_down_since"]
    assert since == pytest.approx(clock.t) and json.loads(store.hash["a"])["ami"] is False
    clock.t += 6.0
    await a.beat()
    assert json.loads(store.hash["a"])["ami_down_since"] == since
    await b.beat()
    assert b.others_alive() == []       # a beats, but its callers went with its Asterisk
    assert lost_nodes(b.beats, clock.t, 5.0, "b") == {"a": NO_ASTERISK}
    ami_up[0] = True
    await a.beat()
    assert json.loads(store.hash["a"])["ami_down_since"] == 0


# ---------------------------------------------------------------- sweep order
def test_the_sweep_moves_callers_oldest_place_first_in_one_order_everywhere() -> None:
    entries = [("1800000005.3", 105.0), ("1800000001.1", 101.0), ("1800000009.2", 101.0), ("1800000004.9", 90.5),
               ("1800000003.10", 101.0), ("1800000003.9", 101.0)]
    # equal places: by the uid as Asterisk makes them (epoch, then sequence: .9 before .10), an odd uid last
    want = ["1800000004.9", "1800000001.1", "1800000003.9", "1800000003.10", "1800000009.2", "1800000005.3"]
    for _ in range(20):
        random.shuffle(entries)
        assert in_join_order(entries) == want
    assert in_join_order(entries + [("x", 101.0), ("1800000000", 101.0)]) == [
        "1800000004.9", "1800000000", "1800000001.1", "1800000003.9", "1800000003.10", "1800000009.2", "x",
        "1800000005.3"]
    # a node of a cluster prefixes its uids with its name (Asterisk's systemname): the same order
    named = [("node2-1800000003.10", 101.0), ("node1-1800000003.9", 101.0), ("node1-1800000001.1", 101.0)]
    assert in_join_order(named) == ["node1-1800000001.1", "node1-1800000003.9", "node2-1800000003.10"]
    assert batches(list("abcde"), 2) == [["a", "b"], ["c", "d"], ["e"]]


class FakeLead:
    def __init__(self, holder: str = "7:a", leading: bool = True) -> None:
        self.holder, self.leading = holder, leading

    @property
    def is_leader(self) -> bool:
        return self.leading


class FakeLostStore:
    def __init__(self, beats: dict[str, str], registers: dict[str, list[tuple[str, float]]]) -> None:
        self.beats, self.registers = beats, registers
        self.moves: list[tuple[str, str, list[str]]] = []
        self.fence: str | None = None
        self.forgotten: list[str] = []

    async def nodes(self) -> dict[str, str]:
        return dict(self.beats)

    async def waiting(self, node: str, count: int = 1000) -> list[tuple[str, float]]:
        return sorted(self.registers.get(node, []), key=lambda e: e[1])[:count]

    async def move_to_callbacks(self, holder: str, node: str, uids: Sequence[str], now: float) -> list[Moved]:
        if self.fence is not None and holder != self.fence:
            raise Fenced("FENCED lease is " + self.fence)
        self.moves.append((holder, node, list(uids)))
        places = dict(self.registers[node])
        self.registers[node] = [e for e in self.registers[node] if e[0] not in uids]
        return [Moved(u, "anonymous" if u.startswith("anon") else "moved", "" if u.startswith("anon") else f"cb{u}",
                      "support", places[u], "" if u.startswith("anon") else "447700900001", "en") for u in uids]

    async def forget_node(self, node: str) -> bool:
        self.forgotten.append(node)
        return True


def _beat(at: float) -> str:
    return json.dumps({"at": at, "api": "", "started": 0, "ami": True, "ami_down_since": 0})


async def test_the_sweep_acts_only_while_leading_and_only_on_lost_nodes() -> None:
    clock = Clock(1000.0)
    store = FakeLostStore({"a": _beat(999.0), "b": _beat(990.0), "c": _beat(998.0)},
                          {"b": [("3.0", 30.0), ("1.0", 10.0), ("anon2", 20.0)], "c": [("9.0", 5.0)]})
    lead = FakeLead(leading=False)
    made: list[tuple[str, str]] = []
    anon: list[str] = []
    sweep = LostNodeSweep(store, lead, "a", ttl=5.0, every=1.0, clock=clock, batch=2,
                          on_callback=lambda m, node: made.append((m.callback_id, node)),
                          on_anonymous=lambda uid, node: anon.append(uid))
    assert await sweep.sweep() == [] and store.moves == []
    lead.leading = True
    done = await sweep.sweep()
    assert [d.node for d in done] == ["b"]                 # c beat 2 s ago: alive, untouched
    assert store.moves == [("7:a", "b", ["1.0", "anon2"]), ("7:a", "b", ["3.0"])]   # in batches, oldest first
    assert made == [("cb1.0", "b"), ("cb3.0", "b")] and anon == ["anon2"]
    assert done[0].as_dict() == {"node": "b", "reason": SILENT, "callbacks": ["cb1.0", "cb3.0"], "moved_before": 0,
                                 "anonymous": 1}
    assert await sweep.sweep() == []                       # nothing left to move
    assert sweep.describe()["callbacks"] == 2 and sweep.describe()["anonymous"] == 1


async def test_a_fenced_sweep_raises_and_the_run_loop_counts_it() -> None:
    clock = Clock(1000.0)
    store = FakeLostStore({"a": _beat(999.0), "b": _beat(900.0)}, {"b": [("1.0", 10.0)]})
    store.fence = "8:c"
    sweep = LostNodeSweep(store, FakeLead("7:a"), "a", ttl=5.0, every=0.01, clock=clock)
    with pytest.raises(Fenced):
        await sweep.sweep()
    task = asyncio.create_task(sweep.run())
    while sweep.fenced < 2:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert store.moves == [] and store.registers["b"] == [("1.0", 10.0)]


async def test_a_node_silent_for_a_day_with_nothing_waiting_is_forgotten() -> None:
    clock = Clock(200_000.0)
    store = FakeLostStore({"a": _beat(199_999.0), "b": _beat(100.0), "c": _beat(199_000.0)}, {})
    await LostNodeSweep(store, FakeLead(), "a", ttl=5.0, every=1.0, clock=clock).sweep()
    assert store.forgotten == ["b"]


def test_the_callback_event_names_the_lost_node() -> None:
    m = Moved("1.0", "moved", "12", "support", 100.5, "447700900001", "fa")
    assert callback_event(m, "b") == {"id": "12", "number": "447700900001", "queue": "support", "lang": "fa",
                                      "call_uid": "1.0", "place": 100.5, "status": "pending",
                                      "source": "node_lost", "node": "b"}


# ------------------------------------------------------------ waiting register
def test_callback_numbers_from_caller_ids() -> None:
    assert callback_number("447700900123") == "447700900123"
    assert callback_number("+447700900123") == "447700900123"
    assert callback_number(" 02079460000 ") == "02079460000"
    for bad in ("", "anonymous", "<unknown>", "1002", "+", "12345", "4477009001234567", "٤٤٧٧٠٠٩٠٠١٢٣"):
        assert callback_number(bad) == "", bad


def test_out_of_order_is_how_much_longer_the_oldest_elsewhere_waited() -> None:
    assert out_of_order(100.0, []) == 0.0
    assert out_of_order(100.0, [("b", "x", 120.0)]) == 0.0
    assert out_of_order(100.0, [("b", "x", 120.0), ("c", "y", 70.0), ("b", "z", 90.0)]) == 30.0


class FakeRegister:
    def __init__(self) -> None:
        self.ops: list[tuple[str, Any]] = []
        self.oldest: dict[str, list[tuple[str, str, float]]] = {}
        self.fail_once = False

    async def register(self, node: str, joined: Sequence[Waiter], left: Sequence[tuple[str, str]]) -> None:
        if self.fail_once:
            self.fail_once = False
            raise ConnectionError("Redis away")
        self.ops.append(("register", ([w.uid for w in joined], list(left))))

    async def rebuild(self, node: str, waiting: Sequence[Waiter]) -> None:
        self.ops.append(("rebuild", list(waiting)))

    async def oldest_in_queue(self, nodes: Sequence[str], queue: str) -> list[tuple[str, str, float]]:
        self.ops.append(("oldest", (list(nodes), queue)))
        return self.oldest.get(queue, [])


def _ev(name: str, uid: str, **fields: str) -> dict[str, str]:
    return {"Event": name, "Uniqueid": uid, **fields}


async def test_the_register_follows_joins_leaves_and_answers_off_the_event_path() -> None:
    clock = Clock(1000.0)
    store = FakeRegister()
    measured: list[tuple[str, float]] = []
    kept = {"u2": 900.0}                 # a returning caller: their place dates from their first call
    reg = WaitingRegister(store, "a", place_of=kept.get, others=lambda: ["b"], clock=clock, linger=0.0,
                          on_measured=lambda q, s: measured.append((q, s)))
    reg.on_event(_ev("QueueCallerJoin", "u1", Queue="support", CallerIDNum="447700900001", Language="fa"))
    clock.t += 1
    reg.on_event(_ev("QueueCallerJoin", "u2", Queue="support", CallerIDNum="anonymous"))
    reg.on_event(_ev("Newchannel", "u3"))
    assert reg.waiting == {"u1": ("support", 1000.0), "u2": ("support", 900.0)} and store.ops == []   # nothing awaited
    store.oldest["support"] = [("b", "x", 950.0)]
    await reg.start()
    await reg.flush()
    assert store.ops == [("register", (["u1", "u2"], []))]
    # answered: the leave comes first, then AgentConnect (app_queue's order)
    reg.on_event(_ev("QueueCallerLeave", "u1", Queue="support"))
    reg.on_event(_ev("AgentConnect", "u1", Queue="support", Interface="PJSIP/2001"))
    reg.on_event(_ev("Hangup", "u2"))
    reg.on_event(_ev("Hangup", "u9"))   # not a waiting caller: nothing to write
    await reg.flush()
    await asyncio.sleep(0)
    assert store.ops[1:] == [("register", ([], [("u1", "support"), ("u2", "support")])),
                             ("oldest", (["b"], "support"))]
    assert measured == [("support", 50.0)]   # x on b joined at 950, u1 at 1000: 50 s out of order
    assert reg.order.as_dict() == {"answered": 1, "out_of_order": 1, "mean_s": 50.0, "worst_s": 50.0}
    await reg.stop()


async def test_the_register_keeps_updates_while_redis_is_away_and_rebuilds_after_a_resync() -> None:
    clock = Clock(1000.0)
    store = FakeRegister()
    store.fail_once = True
    reg = WaitingRegister(store, "a", place_of=lambda uid: None, others=lambda: [], clock=clock, linger=0.0)
    await reg.start()
    reg.on_event(_ev("QueueCallerJoin", "u1", Queue="support", CallerIDNum="447700900001"))
    await asyncio.wait_for(reg.flush(), 5)
    assert store.ops == [("register", (["u1"], []))] and reg.errors == 1
    reg.resync([("u5", "refunds", 980.0, "447700900005"), ("u6", "support", 990.0, "")])
    await reg.flush()
    (kind, waiting), = store.ops[1:]
    assert kind == "rebuild" and [(w.uid, w.queue, w.place, w.number) for w in waiting] == [
        ("u5", "refunds", 980.0, "447700900005"), ("u6", "support", 990.0, "")]
    assert reg.waiting == {"u5": ("refunds", 980.0), "u6": ("support", 990.0)}
    reg.on_event(_ev("AgentConnect", "u5", Queue="refunds"))   # answered, no other node: not measured
    await reg.flush()
    assert store.ops[-1] == ("register", ([], [("u5", "refunds")])) and reg.order.answered == 0
    await reg.stop()


def test_calls_we_placed_are_known_by_their_account_code() -> None:
    assert origin_of("cb:42") == ("callback", "42")
    assert origin_of("c:notice-1:17:2") == ("contact", "notice-1:17")
    for inbound in ("", "cb:", "c:x", "c::3:1", "trunk", "abc:cb:1"):
        assert origin_of(inbound) is None, inbound


class FakeOrigins(FakeRegister):
    async def origins(self, callbacks: Sequence[str], contacts: Sequence[tuple[str, str]]) -> tuple[
            dict[str, tuple[str, float | None]], dict[tuple[str, str], str]]:
        self.ops.append(("origins", (list(callbacks), list(contacts))))
        return {"42": ("447700900042", 500.0)}, {("notice-1", "17"): "+447700900017"}


async def test_callers_we_called_get_their_own_number_and_their_older_place() -> None:
    store = FakeOrigins()
    joined = [Waiter("u1", "support", 1000.0, "447700900001", "en", "447700900001"),
              Waiter("u2", "support", 1001.0, "447700900042", "en", "447700900042", "cb:42"),
              Waiter("u3", "support", 1002.0, "5550100", "en", "5550100", "c:notice-1:17:1"),
              Waiter("u4", "support", 1003.0, "5550100", "en", "5550100", "c:notice-1:18:1"),
              Waiter("u5", "support", 1004.0, "447700900099", "en", "447700900099", "cb:77")]
    out = await resolve_origins(store, joined)
    assert store.ops == [("origins", (["42", "77"], [("notice-1", "17"), ("notice-1", "18")]))]
    assert [(w.uid, w.number, w.place) for w in out] == [
        ("u1", "447700900001", 1000.0),
        ("u2", "447700900042", 500.0),      # the callback's place, not the time it rejoined the queue
        ("u3", "447700900017", 1002.0),     # the contact's number, not our caller ID on the callee's channel
        ("u4", "", 1003.0),                 # a contact not found: no number rather than a call to ourselves
        ("u5", "447700900099", 1004.0)]     # a callback not found: the caller ID the dialplan set is theirs


async def test_the_register_resolves_calls_we_placed_before_writing_them() -> None:
    store = FakeOrigins()
    reg = WaitingRegister(store, "a", place_of=lambda uid: None, others=lambda: [], clock=Clock(1000.0), linger=0.0)
    await reg.start()
    reg.on_event(_ev("QueueCallerJoin", "u3", Queue="support", CallerIDNum="5550100", AccountCode="c:notice-1:17:1"))
    reg.on_event(_ev("QueueCallerJoin", "u1", Queue="support", CallerIDNum="447700900001", AccountCode=""))
    await reg.flush()
    assert store.ops == [("origins", ([], [("notice-1", "17")])), ("register", (["u3", "u1"], []))]
    await reg.stop()


async def test_the_sweep_settles_the_campaign_attempts_of_lost_nodes_while_leading() -> None:
    clock = Clock(1000.0)
    beats = {"a": _beat(999.0), "b": _beat(990.0), "c": _beat(998.0),
             "d": json.dumps({"at": 999.0, "api": "", "started": 0, "ami": False, "ami_down_since": 900.0})}
    store = FakeLostStore(beats, {})
    lead = FakeLead("7:a", leading=False)
    calls: list[tuple[str, frozenset[str]]] = []

    async def settle(holder: str, nodes: frozenset[str]) -> int:
        calls.append((holder, nodes))
        return 2 if len(calls) == 1 else 0

    sweep = LostNodeSweep(store, lead, "a", ttl=5.0, every=1.0, clock=clock, settle_attempts=settle)
    await sweep.sweep()
    assert calls == []                                     # a follower settles nothing
    lead.leading = True
    await sweep.sweep()
    await sweep.sweep()                                    # every pass: an attempt may be marked late
    # b is silent, d beats without its Asterisk: both lost, in one call with the fence; c is alive
    assert calls == [("7:a", frozenset({"b", "d"}))] * 2
    assert sweep.describe()["attempts_settled"] == 2
    store.beats = {"a": _beat(999.0), "c": _beat(998.0)}
    await sweep.sweep()
    assert len(calls) == 2                                 # nobody lost: nothing to settle


async def test_a_fenced_settling_of_attempts_is_counted_by_the_run_loop() -> None:
    clock = Clock(1000.0)
    store = FakeLostStore({"a": _beat(999.0), "b": _beat(900.0)}, {})

    async def settle(holder: str, nodes: frozenset[str]) -> int:
        raise Fenced("FENCED lease is 8:c")

    sweep = LostNodeSweep(store, FakeLead("7:a"), "a", ttl=5.0, every=0.01, clock=clock, settle_attempts=settle)
    task = asyncio.create_task(sweep.run())
    while sweep.fenced < 2:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sweep.attempts_settled == 0
