"""``pacing.max_transfers``: campaign calls sent to the agents are counted from their channel's events
(reserve at the keypress, QueueCallerJoin, Hangup, an AMI resync's channel list), and the dialler holds
a campaign's new dials while its transfers are full."""

from __future__ import annotations

import time
from typing import Any

from ivr.campaigns.dial_rules import Running
from ivr.campaigns.dialer import Dialer
from ivr.campaigns.model import campaign_from_dict
from ivr.campaigns.transfers import Transfers
from ivr.app.config import Config
from ivr.store.campaigns import CampaignStore
from ivr.store.keys import Keys


def _campaign(cid: str = "c1", max_transfers: int = 1, **kw: Any) -> Any:
    return campaign_from_dict({"id": cid, "name": cid, "message": {"en": "notice-cancelled"},
                               "pacing": {"cps": 5, "max_channels": 4, "max_transfers": max_transfers}, **kw})


def _join(uid: str, code: str, queue: str = "support") -> dict[str, str]:
    """QueueCallerJoin as Asterisk 16 sends it for an originated campaign call (channel snapshot fields)."""
    return {"Event": "QueueCallerJoin", "Privilege": "agent,all", "Channel": f"PJSIP/trunk-{uid[-8:]}",
            "ChannelState": "6", "ChannelStateDesc": "Up", "CallerIDNum": "5550100", "AccountCode": code,
            "Context": "ivr-route", "Exten": "queue", "Priority": "3", "Uniqueid": uid, "Linkedid": uid,
            "Queue": queue, "Position": "1", "Count": "1"}


def _hangup(uid: str, code: str) -> dict[str, str]:
    return {"Event": "Hangup", "Channel": f"PJSIP/trunk-{uid[-8:]}", "AccountCode": code, "Uniqueid": uid,
            "Cause": "16", "Cause-txt": "Normal Clearing"}


# ---------------------------------------------------------------- the count

def test_the_keypress_reserves_up_to_max_transfers_and_a_hangup_gives_it_back() -> None:
    t, c = Transfers(), _campaign(max_transfers=2)
    assert t.reserve(c, "1700.1", "c:c1:1:1") and t.reserve(c, "1700.2", "c:c1:2:1")
    assert not t.full(_campaign(max_transfers=3)) and t.full(c)
    assert not t.reserve(c, "1700.3", "c:c1:3:1")          # full: the notice offers a callback instead
    assert t.reserve(c, "1700.1", "c:c1:1:1")               # the same channel asking again keeps its own
    assert t.count("c1") == 2
    t.on_event(_join("1700.1", "c:c1:1:1"))
    assert t.calls["1700.1"].joined and t.count("c1") == 2
    t.on_event(_hangup("1700.9", "c:c1:9:1"))               # another call's hangup changes nothing
    assert t.count("c1") == 2
    t.on_event(_hangup("1700.1", "c:c1:1:1"))
    assert t.count("c1") == 1 and not t.full(c)
    assert t.reserve(c, "1700.3", "c:c1:3:1")


def test_a_join_never_reserved_here_counts_and_other_calls_do_not() -> None:
    t = Transfers()
    t.on_event(_join("1700.5", "c:c1:5:2"))                 # e.g. reserved before a controller restart
    t.on_event(_join("1700.6", ""))                         # an inbound caller
    t.on_event(_join("1700.7", "cb:42"))                    # a callback
    assert t.count("c1") == 1 and set(t.calls) == {"1700.5"}
    assert t.full(_campaign(max_transfers=1))


def test_campaigns_are_counted_apart() -> None:
    t = Transfers()
    assert t.reserve(_campaign("a"), "1.1", "c:a:1:1")
    assert t.reserve(_campaign("b"), "1.2", "c:b:1:1")
    assert (t.count("a"), t.count("b")) == (1, 1)


def test_max_transfers_0_sends_nobody_to_the_agents_and_never_holds_the_dials() -> None:
    t, c = Transfers(), _campaign(max_transfers=0)
    assert not t.reserve(c, "1.1", "c:c1:1:1") and not t.full(c)


def test_a_resync_ends_transfers_whose_channel_is_gone_and_counts_channels_in_queue() -> None:
    t, c = Transfers(), _campaign(max_transfers=5)
    asked = time.monotonic()
    t.reserve(c, "1.1", "c:c1:1:1")        # its Hangup came while AMI was away
    t.reserve(c, "1.2", "c:c1:2:1")        # still with an agent
    t.calls["1.1"].since = t.calls["1.2"].since = asked - 30
    later = Transfers()
    channels = [{"Channel": "PJSIP/trunk-2", "Uniqueid": "1.2", "AccountCode": "c:c1:2:1", "Application": "Queue"},
                {"Channel": "PJSIP/trunk-3", "Uniqueid": "1.3", "AccountCode": "c:c1:3:1", "Application": "Queue"},
                {"Channel": "PJSIP/trunk-4", "Uniqueid": "1.4", "AccountCode": "c:c1:4:1", "Application": "AGI"},
                {"Channel": "PJSIP/1001-1", "Uniqueid": "1.5", "AccountCode": "", "Application": "Queue"}]
    t.reserve(c, "1.6", "c:c1:6:1")        # reserved after the list was asked for: not in it yet, kept
    t.reconcile(channels, since=asked)
    assert set(t.calls) == {"1.2", "1.3", "1.6"} and t.calls["1.3"].joined
    later.reconcile(channels, since=asked)  # a fresh controller (after a restart) rebuilds the count
    assert set(later.calls) == {"1.2", "1.3"}


# ---------------------------------------------------------------- the dialler holds

class FakeRedis:
    """What ``Dialer._pace`` touches; every claim is recorded (and finds nobody)."""

    def __init__(self) -> None:
        self.claims = 0

    def register_script(self, lua: str) -> Any:
        async def claim(**_: Any) -> list[str]:
            self.claims += 1
            return []
        return claim

    async def hget(self, key: str, field: str) -> str:
        return "running"

    async def get(self, key: str) -> str | None:
        return None

    async def zcard(self, key: str) -> int:
        return 1


class FakeStore:
    def __init__(self, redis: FakeRedis) -> None:
        self.keys = Keys("t")
        self.campaigns = CampaignStore(redis, self.keys)


async def test_the_dialler_holds_new_dials_while_the_transfers_are_full_and_resumes_after_the_hangup() -> None:
    redis = FakeRedis()
    dialer = Dialer(Config(), FakeStore(redis), object())  # type: ignore[arg-type]
    c = _campaign(max_transfers=1, priority=7)
    r = dialer.running["c1"] = Running(c, tokens=3.0)
    await dialer._pace("c1", r)
    assert redis.claims == 1 and not r.held
    assert dialer.transfers.reserve(c, "1700.1", "c:c1:1:1")
    dialer.on_event(_join("1700.1", "c:c1:1:1"))
    for _ in range(3):
        await dialer._pace("c1", r)
    assert redis.claims == 1 and r.held                      # held: nothing claimed, nobody dialled
    assert dialer.campaign_views()[0].held and dialer.campaign_views()[0].priority == 7
    assert dialer.health()["transfers"] == {"c1": 1}
    dialer.on_event(_hangup("1700.1", "c:c1:1:1"))          # the transfer ended: the caller hung up
    await dialer._pace("c1", r)
    assert redis.claims == 2 and not r.held and not dialer.campaign_views()[0].held


async def test_a_campaign_without_transfers_to_agents_is_never_held() -> None:
    redis = FakeRedis()
    dialer = Dialer(Config(), FakeStore(redis), object())  # type: ignore[arg-type]
    r = dialer.running["c1"] = Running(_campaign(max_transfers=0), tokens=3.0)
    await dialer._pace("c1", r)
    assert redis.claims == 1 and not r.held


# ---------------------------------------------------------------- the notice over the cap

class NoticeFakes:
    """Just what ``NoticeHandler.run`` touches: an AGI session, the engine, the store, the dialler."""

    def __init__(self, campaign: Any, contacts: dict[str, dict[str, str]]) -> None:
        self.campaign, self.contacts = campaign, contacts
        self.hsets: list[dict[str, str]] = []
        self.booked: list[str] = []
        self.played: list[str] = []
        self.msets: list[dict[str, str]] = []
        self.outcomes: list[tuple[str, str]] = []
        self.transfers = Transfers()
        self.key = "3"            # what every callee presses
        self.keys, self.sink, self.continuity, self.callbacks = Keys("t"), self, None, self
        self.campaigns = CampaignStore(self, self.keys)

    # the Redis under store.campaigns, store.callbacks, the dialler, engine.sink
    async def hgetall(self, key: str) -> dict[str, str]:
        return self.contacts.get(key.rsplit(":", 1)[1], {})

    async def hset(self, key: str, mapping: dict[str, str]) -> None:
        self.hsets.append(mapping)

    async def request(self, number: str, **_: Any) -> None:
        self.booked.append(number)

    async def get(self, cid: str) -> tuple[Any, str]:
        return self.campaign, "running"

    async def record_outcome(self, cid: str, n: str, attempt: int, outcome: str, keypress: str = "") -> None:
        self.outcomes.append((n, outcome))

    def track(self, uid: str) -> None:
        pass

    async def save(self, uid: str, fields: dict[str, Any]) -> None:
        pass

    # the engine
    async def ask(self, s: Any, ctx: Any, names: tuple[str, ...], timeout: float) -> str:
        return self.key

    async def play(self, s: Any, ctx: Any, names: tuple[str, ...]) -> None:
        self.played.extend(names)

    async def mset(self, s: Any, values: dict[str, str]) -> None:
        self.msets.append(values)

    def session(self, n: str, uid: str) -> Any:
        fakes = self

        class Session:
            uniqueid, route_arg = uid, fakes.campaign.id

            async def get_variable(self, name: str) -> str:
                return {"IVR_CONTACT": n, "IVR_ATTEMPT": "1", "AMDSTATUS": ""}.get(name, "")

            async def set_variable(self, name: str, value: str) -> None:
                pass
        return Session()


async def test_a_callee_who_presses_for_an_agent_while_the_transfers_are_full_is_booked_a_callback() -> None:
    from ivr.campaigns.notice import NoticeHandler

    c = _campaign(max_transfers=1)
    fakes = NoticeFakes(c, {"1": {"number": "+12025550001", "lang": "en"}, "2": {"number": "+12025550002"}})
    handler = NoticeHandler(fakes, fakes, fakes)  # type: ignore[arg-type]
    await handler.run(fakes.session("1", "1700.1"))
    assert fakes.msets == [{"IVR_QUEUE": "support", "IVR_PRIORITY": "5", "IVR_NEXT": "queue"}]   # to the agents
    assert fakes.transfers.count("c1") == 1 and fakes.outcomes == [("1", "agent")]
    await handler.run(fakes.session("2", "1700.2"))   # presses 3 too while the first is with the agents
    assert len(fakes.msets) == 1 and fakes.booked == ["12025550002"] and "callback-booked" in fakes.played
    assert fakes.hsets[-1]["key_action"] == "callback" and fakes.outcomes[-1] == ("2", "callback")
    fakes.transfers.on_event(_hangup("1700.1", "c:c1:1:1"))   # the first transfer ends: the next gets an agent
    await handler.run(fakes.session("2", "1700.3"))
    assert len(fakes.msets) == 2 and fakes.outcomes[-1] == ("2", "agent")


async def test_a_refund_without_a_booking_goes_to_an_agent_so_it_takes_a_transfer_too() -> None:
    from ivr.campaigns.notice import NoticeHandler

    c = _campaign(max_transfers=1)
    fakes = NoticeFakes(c, {"1": {"number": "+12025550001"}, "2": {"number": "+12025550002"}})
    fakes.key = "1"   # refund, with no booking on file: an agent takes the request
    handler = NoticeHandler(fakes, fakes, fakes)  # type: ignore[arg-type]
    await handler.run(fakes.session("1", "1700.1"))
    await handler.run(fakes.session("2", "1700.2"))
    assert fakes.transfers.count("c1") == 1 and len(fakes.msets) == 1 and fakes.booked == ["12025550002"]
    assert [o for _, o in fakes.outcomes] == ["refund", "callback"]


# ---------------------------------------------------------------- a recorded transfer

def _recorded() -> list[dict[str, Any]]:
    """The AMI events of one real campaign transfer (Asterisk 16.28, the integration stack): the callee's
    channel PJSIP/trunk-00000000 (c:t-capture:1:1) joins refunds, agent 1002 answers, talks, hangs up, the
    callee hangs up; a CoreShowChannels list taken while they talked. The agent's channel carries the same
    AccountCode (Asterisk copies it), so transfers are counted by the callee's Uniqueid, not the code."""
    from pathlib import Path

    from ivr.core.ami_frames import AmiFrameParser
    data = (Path(__file__).resolve().parent.parent / "fixtures" / "ami_campaign_transfer.txt").read_bytes()
    return [f.to_dict() for f in AmiFrameParser().feed(data) if not isinstance(f, Exception)]


def test_a_recorded_transfer_counts_from_its_join_to_the_callees_hangup_not_the_agents() -> None:
    frames = _recorded()
    callee = next(f for f in frames if f.get("Event") == "QueueCallerJoin")
    uid, code = str(callee["Uniqueid"]), str(callee["AccountCode"])
    assert code == "c:t-capture:1:1"
    c = _campaign("t-capture", max_transfers=1)
    t = Transfers()
    assert t.reserve(c, uid, code)                     # the notice, at the keypress
    counts = []
    for f in frames:
        if f.get("Event") not in ("CoreShowChannel", "CoreShowChannelsComplete"):
            t.on_event(f)
            counts.append((f.get("Event"), f.get("Channel"), t.count("t-capture")))
    agent_hangup = next(i for i, (e, ch, _) in enumerate(counts) if e == "Hangup" and str(ch).startswith("PJSIP/1002"))
    callee_hangup = next(i for i, (e, ch, _) in enumerate(counts) if e == "Hangup" and str(ch).startswith("PJSIP/trunk"))
    assert agent_hangup < callee_hangup
    assert all(n == 1 for _, _, n in counts[:callee_hangup]), counts   # with the agent too, after the agent left
    assert counts[callee_hangup][2] == 0 and t.reserve(c, "next", "c:t-capture:2:1")


def test_a_recorded_channel_list_counts_the_callee_in_queue_not_the_agents_leg() -> None:
    channels = [f for f in _recorded() if f.get("Event") == "CoreShowChannel"]
    assert {f["Application"] for f in channels} == {"Queue", "AppQueue"}
    t = Transfers()
    t.reconcile(channels, since=time.monotonic())
    assert list(t.calls) == [next(f["Uniqueid"] for f in channels if f["Application"] == "Queue")]
    assert t.count("t-capture") == 1


def test_an_agent_leg_hanging_up_does_not_free_the_callee_s_channel_slot() -> None:
    """The recorded transfer: the agent's channel carries the callee's account code; only the callee's
    own Hangup (Uniqueid == Linkedid) frees the campaign's channel slot."""
    from types import SimpleNamespace

    from ivr.campaigns.dialer import Dialer
    d = Dialer.__new__(Dialer)
    d.causes, d.running = {}, {"t-capture": SimpleNamespace(active={"c:t-capture:1:1": 1.0})}
    d.transfers = SimpleNamespace(on_event=lambda e: None)
    agent = {"Event": "Hangup", "AccountCode": "c:t-capture:1:1", "Uniqueid": "1796533554.1",
             "Linkedid": "1796533552.0", "Cause": "16"}
    d.on_event(agent)
    assert "c:t-capture:1:1" in d.running["t-capture"].active
    d.on_event(dict(agent, Uniqueid="1796533552.0"))
    assert d.running["t-capture"].active == {}
