"""The dialer's channel slots after an AMI reconnect, and its start-up recovery when Redis or AMI fail."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from ivr.asterisk.ami_client import AmiError
from ivr.campaigns.dial_rules import Running
from ivr.campaigns.dialer import Dialer
from ivr.campaigns.model import campaign_from_dict
from ivr.app.config import Config
from ivr.store.campaigns import CampaignStore
from ivr.store.keys import Keys


class FakeRedis:
    """What the dialer's loop touches when no campaign exists; ``smembers`` fails ``failures`` times."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.smembers_calls = 0

    def register_script(self, lua: str) -> Any:
        async def script(**_: Any) -> list[str]:
            return []
        return script

    async def smembers(self, key: str) -> set[str]:
        self.smembers_calls += 1
        if self.failures:
            self.failures -= 1
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        return set()


class FakeStore:
    def __init__(self, redis: FakeRedis) -> None:
        self.keys = Keys("t")
        self.campaigns = CampaignStore(redis, self.keys)


class FakeAmi:
    def __init__(self, failures: int = 0) -> None:
        self.ready = asyncio.Event()
        self.ready.set()
        self.connected = True
        self.failures = failures

    async def list_action(self, name: str, fields: Any = None, *, timeout: float | None = None) -> list[dict[str, str]]:
        if self.failures:
            self.failures -= 1
            raise AmiError("no AMI connection for CoreShowChannels")
        return []


def _campaign(cid: str = "c1") -> Any:
    return campaign_from_dict({"id": cid, "name": cid, "message": {"en": "notice-cancelled"},
                               "pacing": {"cps": 5, "max_channels": 3, "max_transfers": 1}})


def test_reconcile_frees_only_slots_whose_channel_is_gone_and_whose_originate_is_not_pending() -> None:
    dialer = Dialer(Config(), FakeStore(FakeRedis()), FakeAmi())  # type: ignore[arg-type]
    asked = time.monotonic()
    r = Running(_campaign())
    r.active = {"c:c1:1:1": asked - 60,    # answered before the cut; its Hangup came while AMI was away
                "c:c1:2:1": asked - 60,    # still on the line
                "c:c1:3:1": asked - 1,     # Originate sent, OriginateResponse not in yet
                "c:c1:4:1": asked + 0.5}   # dialled after the channel list was asked for
    dialer.running["c1"] = r
    dialer.originating.add("c:c1:3:1")
    channels = [{"Channel": "PJSIP/trunk-00000002", "AccountCode": "c:c1:2:1"},
                {"Channel": "PJSIP/1001-00000007", "AccountCode": ""}]
    assert dialer.reconcile(channels, since=asked) == 1
    assert set(r.active) == {"c:c1:2:1", "c:c1:3:1", "c:c1:4:1"}
    assert dialer.health()["slots_reclaimed"] == 1 and dialer.health()["active"] == {"c1": 3}
    # nothing else to free: a second resync changes nothing
    assert dialer.reconcile(channels, since=asked) == 0


def test_reconcile_with_every_slot_leaked_lets_the_campaign_dial_again() -> None:
    dialer = Dialer(Config(), FakeStore(FakeRedis()), FakeAmi())  # type: ignore[arg-type]
    r = Running(_campaign())
    r.active = {f"c:c1:{n}:1": time.monotonic() - 30 for n in range(1, 4)}   # max_channels 3, all taken
    dialer.running["c1"] = r
    assert r.campaign.pacing.max_channels - len(r.active) == 0
    assert dialer.reconcile([], since=time.monotonic()) == 3
    assert r.campaign.pacing.max_channels - len(r.active) == 3


async def test_a_failing_start_up_recovery_is_retried_and_the_dialer_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    redis = FakeRedis(failures=2)
    dialer = Dialer(Config(), FakeStore(redis), FakeAmi())  # type: ignore[arg-type]
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def quick_sleep(delay: float) -> None:
        sleeps.append(delay)
        await real_sleep(0)
    monkeypatch.setattr(asyncio, "sleep", quick_sleep)
    task = asyncio.create_task(dialer.run())
    for _ in range(200):
        await real_sleep(0)
        if redis.smembers_calls >= 4:
            break
    assert not task.done(), task.exception() if task.done() else None
    health = dialer.health()
    assert health["recovered"] and health["recover_errors"] == 2 and health["last_recover_error"] == ""
    assert sleeps[:2] == [1.0, 2.0]           # growing back-off between the tries
    assert redis.smembers_calls >= 4          # recovered (3rd try), then the loop follows campaigns
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_recovery_is_retried_while_ami_cannot_list_the_live_calls() -> None:
    ami = FakeAmi(failures=1)
    dialer = Dialer(Config(), FakeStore(FakeRedis()), ami)  # type: ignore[arg-type]
    await dialer._recover_until_done(first_delay=0.001)
    h = dialer.health()
    assert h["recovered"] and h["recover_errors"] == 1 and ami.failures == 0
