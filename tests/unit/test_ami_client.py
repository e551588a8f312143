"""AmiClient against a fake AMI server: login, resync, reconnect with back-off, pending actions."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from ivr.asterisk.ami_client import AmiClient, AmiError, AmiNotConnected
from ivr.core.ami_frames import AmiFrameParser
from ivr.asterisk.state import CallCenterState

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "ami_queue_call.txt"


def frames_of(data: bytes) -> list[dict[str, Any]]:
    parser = AmiFrameParser()
    return [f.to_dict() for f in parser.feed(data) if not isinstance(f, Exception)]


class FakeAmi:
    """A tiny AMI server: answers Login, Ping, QueueStatus, CoreShowChannels; can drop clients."""

    def __init__(self, *, accept_login: bool = True, silent_actions: tuple[str, ...] = ()) -> None:
        self.accept_login = accept_login
        self.silent_actions = silent_actions
        self.writers: list[asyncio.StreamWriter] = []
        self.actions: list[dict[str, Any]] = []
        self.logins = 0
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self, port: int = 0) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server:
            self.server.close()
            await self.server.wait_closed()
        self.drop()

    def drop(self) -> None:
        for w in self.writers:
            w.close()
        self.writers.clear()

    async def push(self, raw: bytes) -> None:
        for w in self.writers:
            w.write(raw)
            await w.drain()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        writer.write(b"Asterisk Call Manager/5.0.4\r\n")
        parser = AmiFrameParser()
        try:
            while data := await reader.read(4096):
                for frame in parser.feed(data):
                    if isinstance(frame, Exception):
                        continue
                    await self._answer(writer, frame.to_dict())
        except (ConnectionError, asyncio.CancelledError):
            pass

    async def _answer(self, w: asyncio.StreamWriter, a: dict[str, Any]) -> None:
        self.actions.append(a)
        name, aid = a.get("Action"), a.get("ActionID")
        if name in self.silent_actions:
            return
        if name == "Login":
            self.logins += 1
            if self.accept_login:
                w.write(f"Response: Success\r\nActionID: {aid}\r\nMessage: Authentication accepted\r\n\r\n".encode())
                w.write(b"Event: FullyBooted\r\nPrivilege: system,all\r\nStatus: Fully Booted\r\n\r\n")
            else:
                w.write(f"Response: Error\r\nActionID: {aid}\r\nMessage: Authentication failed\r\n\r\n".encode())
        elif name == "QueueStatus":
            w.write(f"Response: Success\r\nActionID: {aid}\r\nEventList: start\r\nMessage: Queue status will follow\r\n\r\n".encode())
            w.write(f"Event: QueueParams\r\nQueue: support\r\nMax: 0\r\nStrategy: rrmemory\r\nCalls: 1\r\nHoldtime: 4\r\nTalkTime: 60\r\nCompleted: 3\r\nAbandoned: 0\r\nServiceLevel: 20\r\nActionID: {aid}\r\n\r\n".encode())
            w.write(f"Event: QueueMember\r\nQueue: support\r\nName: Agent 1001\r\nLocation: PJSIP/1001\r\nStateInterface: PJSIP/1001\r\nMembership: dynamic\r\nPenalty: 0\r\nCallsTaken: 3\r\nLastCall: 0\r\nInCall: 0\r\nStatus: 1\r\nPaused: 0\r\nPausedReason: \r\nActionID: {aid}\r\n\r\n".encode())
            w.write(f"Event: QueueEntry\r\nQueue: support\r\nPosition: 1\r\nChannel: PJSIP/trunk-00000001\r\nUniqueid: 99.1\r\nCallerIDNum: 5550001\r\nWait: 12\r\nPriority: 0\r\nActionID: {aid}\r\n\r\n".encode())
            w.write(f"Event: QueueStatusComplete\r\nActionID: {aid}\r\nEventList: Complete\r\nListItems: 3\r\n\r\n".encode())
        elif name == "CoreShowChannels":
            w.write(f"Response: Success\r\nActionID: {aid}\r\nEventList: start\r\nMessage: Channels will follow\r\n\r\n".encode())
            w.write(f"Event: CoreShowChannelsComplete\r\nActionID: {aid}\r\nEventList: Complete\r\nListItems: 0\r\n\r\n".encode())
        else:
            w.write(f"Response: Success\r\nActionID: {aid}\r\nMessage: ok\r\n\r\n".encode())
        await w.drain()


async def resync_into(state: CallCenterState, client: AmiClient) -> None:
    state.resync(await client.list_action("QueueStatus"), await client.list_action("CoreShowChannels"))


async def make_client(fake: FakeAmi, state: CallCenterState, events: list[Any], **kw: Any) -> AmiClient:
    client = AmiClient("127.0.0.1", fake.port, "ivr", "pw", on_event=events.append,
                       on_connected=lambda c: resync_into(state, c), **kw)
    await client.start()
    return client


async def test_connects_logs_in_and_resyncs_before_ready() -> None:
    fake = FakeAmi()
    await fake.start()
    state, events = CallCenterState(clock=lambda: 1000.0), []
    client = await make_client(fake, state, events)
    try:
        await asyncio.wait_for(client.ready.wait(), 5)
        snap = state.snapshot()["queues"]["support"]
        assert snap["waiting"] == 1 and snap["callers"][0]["wait"] == 12
        assert snap["members"][0]["interface"] == "PJSIP/1001" and snap["available"] == 1
        assert [a["Action"] for a in fake.actions][:3] == ["Login", "QueueStatus", "CoreShowChannels"]
        assert client.connections == 1 and client.reconnects == 0
    finally:
        await client.stop()
        await fake.stop()


async def test_reconnects_and_resyncs_after_a_drop() -> None:
    fake = FakeAmi()
    await fake.start()
    state, events = CallCenterState(), []
    client = await make_client(fake, state, events, backoff_initial=0.05)
    try:
        await asyncio.wait_for(client.ready.wait(), 5)
        fake.drop()
        await asyncio.sleep(0.05)
        await asyncio.wait_for(client.ready.wait(), 5)
        for _ in range(50):
            if client.reconnects == 1:
                break
            await asyncio.sleep(0.02)
        assert client.reconnects == 1
        assert fake.logins == 2
        assert sum(1 for a in fake.actions if a["Action"] == "QueueStatus") == 2
    finally:
        await client.stop()
        await fake.stop()


async def test_a_connection_cut_again_and_again_backs_off_and_logs_little(caplog: pytest.LogCaptureFixture) -> None:
    """A proxy or firewall that cuts the session right after each resync: the reconnects slow down (the
    back-off keeps growing while connections are short-lived) and the log says so a few times, not per cut."""
    fake = FakeAmi()
    await fake.start()
    state: CallCenterState = CallCenterState()

    async def resync_then_cut(c: AmiClient) -> None:
        await resync_into(state, c)
        asyncio.get_running_loop().call_later(0.01, fake.drop)

    client = AmiClient("127.0.0.1", fake.port, "ivr", "pw", on_event=lambda e: None, on_connected=resync_then_cut,
                       backoff_initial=0.02, backoff_max=0.32, stable_after=5.0)
    caplog.set_level("INFO", logger="ivr.asterisk.ami_client")
    await client.start()
    try:
        await asyncio.sleep(2.0)
        # with no back-off this would be hundreds of logins; growing to 0.32 s (+-20 %) it is under a dozen
        assert 4 <= fake.logins <= 12, fake.logins
        assert client.flaps >= 3 and client.reconnects == client.connections - 1
        assert "lost after" in client.last_error or client.connected
        lines = [r for r in caplog.records if r.name == "ivr.asterisk.ami_client"]
        assert len(lines) <= 4, [r.getMessage() for r in lines]
        assert any("short-lived" in r.getMessage() for r in lines)
    finally:
        await asyncio.wait_for(client.stop(), 3)
        await fake.stop()


async def test_a_connection_that_stayed_up_reconnects_at_once_after_a_drop() -> None:
    fake = FakeAmi()
    await fake.start()
    client = await make_client(fake, CallCenterState(), [], backoff_initial=0.02, stable_after=0.2)
    try:
        await asyncio.wait_for(client.ready.wait(), 5)
        for _ in range(3):       # up for longer than stable_after each time: never counted as flapping
            await asyncio.sleep(0.3)
            fake.drop()
            await asyncio.sleep(0.05)
            await asyncio.wait_for(client.ready.wait(), 2)
        assert client.reconnects == 3 and client.flaps == 0
    finally:
        await client.stop()
        await fake.stop()


async def test_action_pending_at_a_drop_fails_and_is_not_replayed() -> None:
    fake = FakeAmi(silent_actions=("QueueAdd",))
    await fake.start()
    client = await make_client(fake, CallCenterState(), [], backoff_initial=0.05)
    try:
        await asyncio.wait_for(client.ready.wait(), 5)
        pending = asyncio.create_task(client.action("QueueAdd", {"Queue": "support", "Interface": "PJSIP/1002"}))
        await asyncio.sleep(0.1)
        fake.drop()
        with pytest.raises(AmiNotConnected):
            await asyncio.wait_for(pending, 5)
        await asyncio.wait_for(client.ready.wait(), 5)
        await asyncio.sleep(0.2)
        assert sum(1 for a in fake.actions if a["Action"] == "QueueAdd") == 1
    finally:
        await client.stop()
        await fake.stop()


async def test_action_without_connection_and_error_response() -> None:
    client = AmiClient("127.0.0.1", 1, "ivr", "pw", on_event=lambda e: None)
    with pytest.raises(AmiNotConnected):
        await client.action("Ping")
    fake = FakeAmi()
    await fake.start()
    client = await make_client(fake, CallCenterState(), [])
    try:
        await asyncio.wait_for(client.ready.wait(), 5)
        with pytest.raises(AmiError, match="line break"):
            await client.action("Setvar", {"Variable": "X", "Value": "a\r\nAction: Originate"})
    finally:
        await client.stop()
        await fake.stop()


async def test_unreachable_server_backs_off_and_stop_does_not_hang() -> None:
    fake = FakeAmi()
    await fake.start()
    port = fake.port
    await fake.stop()
    client = AmiClient("127.0.0.1", port, "ivr", "pw", on_event=lambda e: None,
                       backoff_initial=0.02, backoff_max=0.1)
    await client.start()
    await asyncio.sleep(0.6)
    attempts = client.failed_attempts
    assert 3 <= attempts <= 30  # bounded: neither a busy loop nor stuck
    assert "cannot connect" in client.last_error
    await asyncio.wait_for(client.stop(), 3)
    assert not client.connected


async def test_refused_login_is_retried_and_reported() -> None:
    fake = FakeAmi(accept_login=False)
    await fake.start()
    client = await make_client(fake, CallCenterState(), [], backoff_initial=0.02, backoff_max=0.05)
    try:
        await asyncio.sleep(0.4)
        assert not client.connected
        assert fake.logins >= 2
        assert "refused" in client.last_error
    finally:
        await client.stop()
        await fake.stop()


async def test_garbage_frame_does_not_drop_the_connection() -> None:
    fake = FakeAmi()
    await fake.start()
    events: list[Any] = []
    client = await make_client(fake, CallCenterState(), events)
    try:
        await asyncio.wait_for(client.ready.wait(), 5)
        await fake.push(b"\x00\xff garbage without colon\r\n" + b"X" * 70000 + b"\r\n\r\n")
        await fake.push(b"Event: QueueCallerJoin\r\nQueue: support\r\nUniqueid: 5.5\r\nPosition: 1\r\n\r\n")
        for _ in range(100):
            if any(e.get("Event") == "QueueCallerJoin" for e in events):
                break
            await asyncio.sleep(0.02)
        assert any(e.get("Event") == "QueueCallerJoin" for e in events)
        assert client.connections == 1 and client.connected
    finally:
        await client.stop()
        await fake.stop()


def test_recorded_transcript_from_real_asterisk_builds_the_right_state() -> None:
    """Replay AMI traffic recorded from Asterisk 16 (a call answered from queue 'support')."""
    frames = frames_of(FIXTURE.read_bytes())
    assert any(f.get("Message") == "Permission denied" for f in frames)  # the Command action is refused
    state = CallCenterState(clock=lambda: 0.0)
    for f in frames:
        if "Event" in f:
            state.apply(f)
    support = state.snapshot()["queues"]["support"]
    assert support["offered"] == 1 and support["answered"] == 1 and support["waiting"] == 0
    assert [m["interface"] for m in support["members"]] == ["PJSIP/1001"]
    assert support["members"][0]["in_call"] is False
    assert state.snapshot()["queues"]["rebooking"]["members"] == []  # added then removed
