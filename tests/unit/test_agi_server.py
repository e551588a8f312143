"""Tests for ivr.asterisk.agi_server: AgiServer over real loopback sockets, with a fake Asterisk client."""

from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Awaitable, Callable

import pytest

from ivr.core.agi import AgiHangup
from ivr.asterisk.agi_server import AgiRouter, AgiServer, AgiSession

FALLBACK = 'SET VARIABLE "IVR_NEXT" "fallback"'
IO_TIMEOUT = 2.0


def env_block(script: str = "test/arg1?x=1", uniqueid: str = "123.4") -> bytes:
    lines = [
        "agi_network: yes",
        f"agi_network_script: {script}",
        f"agi_request: agi://127.0.0.1:4573/{script}",
        "agi_channel: PJSIP/trunk-00000001",
        "agi_language: en",
        "agi_type: PJSIP",
        f"agi_uniqueid: {uniqueid}",
        "agi_version: 20.5.0",
        "agi_callerid: 5551234",
        "agi_calleridname: Jane Doe",
        "agi_callingpres: 0",
        "agi_context: ivr-entry",
        "agi_extension: s",
        "agi_priority: 3",
        "agi_enhanced: 0.0",
        "agi_accountcode: ",
        "agi_threadid: 139872331",
    ]
    return ("\n".join(lines) + "\n\n").encode()


class FakeAsterisk:
    """The Asterisk side of one FastAGI connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, env: bytes | None = None) -> "FakeAsterisk":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        fake = cls(reader, writer)
        if env is not None:
            fake.send(env)
        return fake

    def send(self, data: bytes | str) -> None:
        self.writer.write(data.encode() if isinstance(data, str) else data)

    async def command(self) -> str:
        """The next command line the controller sent ('' at EOF)."""
        line = await asyncio.wait_for(self.reader.readline(), IO_TIMEOUT)
        return line.decode().rstrip("\n")

    async def rest(self) -> bytes:
        """Everything until the controller closes the connection."""
        return await asyncio.wait_for(self.reader.read(), IO_TIMEOUT)

    async def closed_by_peer(self) -> bool:
        """True once the controller closed (FIN) or reset (RST, unread data) the connection."""
        try:
            return await self.rest() == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.writer.close()


class Calls:
    """What the test handlers saw."""

    def __init__(self) -> None:
        self.sessions: list[AgiSession] = []
        self.replies: list[Any] = []
        self.errors: list[BaseException] = []
        self.finished = asyncio.Event()
        self.started = asyncio.Event()


Handler = Callable[[AgiSession], Awaitable[None]]


@pytest.fixture
async def calls() -> Calls:
    return Calls()


def tracked(calls: Calls, body: Callable[[AgiSession], Awaitable[None]]) -> Handler:
    async def handler(session: AgiSession) -> None:
        calls.sessions.append(session)
        calls.started.set()
        try:
            await body(session)
        except BaseException as exc:
            calls.errors.append(exc)
            raise
        finally:
            calls.finished.set()
    return handler


async def start_server(handlers: dict[str, Handler], **kw: Any) -> AgiServer:
    router = AgiRouter()
    for name, h in handlers.items():
        router.register(name, h)
    server = AgiServer(router, "127.0.0.1", 0, read_timeout=kw.pop("read_timeout", IO_TIMEOUT), **kw)
    await server.start()
    assert server.port != 0
    return server


@pytest.fixture
async def stop_later() -> AsyncIterator[list[AgiServer]]:
    servers: list[AgiServer] = []
    yield servers
    for s in servers:
        await s.stop(grace=0.5)


async def until(predicate: Callable[[], bool], timeout: float = IO_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


# ------------------------------------------------------------------------ router

def test_router_register_twice_raises() -> None:
    router = AgiRouter()

    async def h(session: AgiSession) -> None:
        return None

    router.register("menu", h)
    with pytest.raises(ValueError, match="registered twice"):
        router.register("menu", h)
    assert router.names() == ["menu"]


@pytest.mark.parametrize("name", ["", "menu/main", "/menu"])
def test_router_rejects_bad_names(name: str) -> None:
    async def h(session: AgiSession) -> None:
        return None

    with pytest.raises(ValueError, match="one path segment"):
        AgiRouter().register(name, h)


def test_router_resolve() -> None:
    router = AgiRouter()

    async def h(session: AgiSession) -> None:
        return None

    router.register("menu", h)
    router.register("survey", h)
    assert router.resolve("menu/main?lang=en") == (h, "main")
    assert router.resolve("/menu/main/") == (h, "main")
    assert router.resolve("menu") == (h, "")
    assert router.resolve("menu/a/b") == (h, "a/b")
    assert router.resolve("other/main")[0] is None
    assert router.resolve("")[0] is None
    assert router.names() == ["menu", "survey"]


# ---------------------------------------------------------------------- server

async def test_handler_gets_route_arg_env_and_reply(calls: Calls, stop_later: list[AgiServer]) -> None:
    async def body(session: AgiSession) -> None:
        calls.replies.append(await session.command("ANSWER"))

    server = await start_server({"test": tracked(calls, body)})
    stop_later.append(server)
    fake = await FakeAsterisk.connect(server.port, env_block())
    assert await fake.command() == "ANSWER"
    fake.send("200 result=0\n")
    assert await fake.rest() == b""          # handler done: connection closed, no fallback
    await until(lambda: server.active_calls == 0)
    (session,) = calls.sessions
    assert session.route_arg == "arg1"
    assert session.uniqueid == "123.4"
    assert session.env.network_script == "test/arg1?x=1"
    assert session.env.callerid == "5551234" and session.env.query == {"x": "1"}
    (reply,) = calls.replies
    assert reply.code == 200 and reply.result == "0"
    assert calls.errors == []
    assert (server.calls_total, server.calls_failed, server.commands_total) == (1, 0, 1)


async def test_typed_helpers_round_trip(calls: Calls, stop_later: list[AgiServer]) -> None:
    async def body(session: AgiSession) -> None:
        calls.replies.append(await session.get_variable("CALLERID(num)"))
        calls.replies.append(await session.stream_file("main-menu", "12"))
        calls.replies.append(await session.get_data("enter-booking", 5000, 6))

    server = await start_server({"test": tracked(calls, body)})
    stop_later.append(server)
    fake = await FakeAsterisk.connect(server.port, env_block())
    assert await fake.command() == 'GET VARIABLE "CALLERID(num)"'
    fake.send("200 result=1 (5551234)\n")
    assert await fake.command() == 'STREAM FILE "main-menu" "12"'
    fake.send("200 result=50 endpos=1234\n")
    assert await fake.command() == 'GET DATA "enter-booking" "5000" "6"'
    fake.send("200 result=123456\n")
    assert await fake.rest() == b""
    assert calls.replies == ["5551234", "2", ("123456", False)]


async def test_handler_that_raises_gets_fallback(calls: Calls, stop_later: list[AgiServer]) -> None:
    async def body(session: AgiSession) -> None:
        await session.answer()
        raise RuntimeError("handler bug")

    server = await start_server({"test": tracked(calls, body)})
    stop_later.append(server)
    fake = await FakeAsterisk.connect(server.port, env_block())
    assert await fake.command() == "ANSWER"
    fake.send("200 result=0\n")
    assert await fake.command() == FALLBACK
    fake.send("200 result=1\n")
    assert await fake.rest() == b""
    await until(lambda: server.active_calls == 0)
    assert isinstance(calls.errors[0], RuntimeError)
    assert server.calls_failed == 1 and server.commands_total == 2


async def test_handler_that_raises_before_any_command_gets_fallback(calls: Calls,
                                                                    stop_later: list[AgiServer]) -> None:
    async def body(session: AgiSession) -> None:
        raise LookupError("menu 'arg1' is not loaded")

    server = await start_server({"test": tracked(calls, body)})
    stop_later.append(server)
    fake = await FakeAsterisk.connect(server.port, env_block())
    assert await fake.command() == FALLBACK
    fake.send("200 result=1\n")
    assert await fake.rest() == b""
    assert server.calls_failed == 1


async def test_unknown_script_ends_with_fallback(calls: Calls, stop_later: list[AgiServer]) -> None:
    server = await start_server({"test": tracked(calls, lambda s: asyncio.sleep(0))})
    stop_later.append(server)
    fake = await FakeAsterisk.connect(server.port, env_block("nosuch/arg1"))
    assert await fake.command() == FALLBACK
    fake.send("200 result=1\n")
    assert await fake.rest() == b""
    assert calls.sessions == []
    assert server.calls_failed == 1 and server.calls_total == 1


async def test_command_error_reply_ends_with_fallback(calls: Calls, stop_later: list[AgiServer]) -> None:
    async def body(session: AgiSession) -> None:
        await session.exec("NoSuchApp")

    server = await start_server({"test": tracked(calls, body)})
    stop_later.append(server)
    fake = await FakeAsterisk.connect(server.port, env_block())
    assert await fake.command() == 'EXEC "NoSuchApp" ""'
    fake.send("510 Invalid or unknown command\n")
    assert await fake.command() == FALLBACK
    fake.send("200 result=1\n")
    assert await fake.rest() == b""


async def test_hangup_line_mid_call_ends_handler_without_fallback(calls: Calls,
                                                                  stop_later: list[AgiServer]) -> None:
    async def body(session: AgiSession) -> None:
        await session.answer()
        await session.verbose("still there?")
        calls.replies.append("not reached")

    server = await start_server({"test": tracked(calls, body)})
    stop_later.append(server)
    fake = await FakeAsterisk.connect(server.port, env_block())
    assert await fake.command() == "ANSWER"
    fake.send("200 result=0\n")
    fake.send("HANGUP\n")                                  # the caller hung up between commands
    assert await fake.command() == 'VERBOSE "still there?" "3"'
    fake.send("511 Command Not Permitted on a dead channel or intercepted channel\n")
    assert await fake.rest() == b""                         # no SET VARIABLE fallback
    await until(lambda: server.active_calls == 0)
    assert len(calls.errors) == 1 and isinstance(calls.errors[0], AgiHangup)
    assert calls.replies == []
    assert calls.sessions[0].hangup_seen is True
    assert server.calls_failed == 0


async def test_hangup_during_playback_then_next_command_raises_without_sending(
        calls: Calls, stop_later: list[AgiServer]) -> None:
    async def body(session: AgiSession) -> None:
        calls.replies.append(await session.stream_file("main-menu"))
        await session.answer()                              # raises: the channel is gone

    server = await start_server({"test": tracked(calls, body)})
    stop_later.append(server)
    fake = await FakeAsterisk.connect(server.port, env_block())
    assert await fake.command() == 'STREAM FILE "main-menu" ""'
    fake.send("HANGUP\n200 result=-1 endpos=160\n")
    assert await fake.rest() == b""                         # no ANSWER, no fallback
    assert calls.replies == [None]
    assert isinstance(calls.errors[0], AgiHangup)
    assert server.calls_failed == 0 and server.commands_total == 1


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",          # not AGI at all
        b"agi_network yes\n\n",                                 # no ': '
        b"agi_network: yes\nagi_uniq",                          # truncated, then EOF
        b"\xff\xfe\x00\x01" * 5000,                             # binary, no newline, too long
        b"",                                                    # connect and close
    ],
    ids=["http", "no-colon", "truncated", "binary", "empty"],
)
async def test_garbage_env_does_not_crash_server(garbage: bytes, calls: Calls,
                                                 stop_later: list[AgiServer]) -> None:
    async def body(session: AgiSession) -> None:
        calls.replies.append(await session.command("ANSWER"))

    server = await start_server({"test": tracked(calls, body)})
    stop_later.append(server)
    bad = await FakeAsterisk.connect(server.port, garbage)
    bad.writer.write_eof()
    assert await bad.closed_by_peer()                       # closed, nothing sent back
    await until(lambda: server.active_calls == 0)
    assert calls.sessions == []
    # the server still serves a good call afterwards
    good = await FakeAsterisk.connect(server.port, env_block())
    assert await good.command() == "ANSWER"
    good.send("200 result=0\n")
    assert await good.rest() == b""
    assert len(calls.replies) == 1 and server.calls_total == 1


async def test_client_closing_mid_call_does_not_leak_tasks(calls: Calls, stop_later: list[AgiServer]) -> None:
    async def body(session: AgiSession) -> None:
        await session.answer()
        await session.command("WAIT FOR DIGIT", "10000", timeout=30)

    server = await start_server({"test": tracked(calls, body)})
    stop_later.append(server)
    fakes = []
    for i in range(3):
        fake = await FakeAsterisk.connect(server.port, env_block(uniqueid=f"9.{i}"))
        assert await fake.command() == "ANSWER"
        fake.send("200 result=0\n")
        assert await fake.command() == 'WAIT FOR DIGIT "10000"'
        fakes.append(fake)
    assert server.active_calls == 3
    for fake in fakes:
        fake.close()                                         # Asterisk goes away mid-command
    await until(lambda: server.active_calls == 0)
    assert len(calls.errors) == 3 and all(isinstance(e, AgiHangup) for e in calls.errors)
    assert server.calls_failed == 0


async def test_stop_returns_promptly_with_idle_call_in_progress(calls: Calls) -> None:
    """A call busy in the handler (not waiting for Asterisk) is cancelled and handed to the fallback."""
    async def body(session: AgiSession) -> None:
        await session.answer()
        await asyncio.sleep(60)                               # e.g. a slow backend lookup

    server = await start_server({"test": tracked(calls, body)})
    fake = await FakeAsterisk.connect(server.port, env_block())
    assert await fake.command() == "ANSWER"
    fake.send("200 result=0\n")
    await calls.started.wait()

    async def asterisk_side() -> list[str]:
        seen = [await fake.command()]
        fake.send("200 result=1\n")
        await fake.rest()
        return seen

    side = asyncio.create_task(asterisk_side())
    t0 = time.monotonic()
    await asyncio.wait_for(server.stop(grace=0.1), 3)
    assert time.monotonic() - t0 < 1.5
    assert server.active_calls == 0
    assert await asyncio.wait_for(side, IO_TIMEOUT) == [FALLBACK]
    assert isinstance(calls.errors[0], asyncio.CancelledError)


async def test_stop_returns_promptly_while_a_command_awaits_its_reply(calls: Calls) -> None:
    async def body(session: AgiSession) -> None:
        await session.command("WAIT FOR DIGIT", "60000", timeout=60)

    server = await start_server({"test": tracked(calls, body)}, read_timeout=30)
    fake = await FakeAsterisk.connect(server.port, env_block())
    assert await fake.command() == 'WAIT FOR DIGIT "60000"'
    t0 = time.monotonic()
    await asyncio.wait_for(server.stop(grace=0.1), 4)
    assert time.monotonic() - t0 < 3.0
    assert server.active_calls == 0
    assert await fake.rest() == b""                           # connection closed by the controller
    # new connections are refused once stopped
    with pytest.raises(OSError):
        await FakeAsterisk.connect(server.port, env_block())


async def test_max_connections_refuses_extra_calls(calls: Calls, stop_later: list[AgiServer]) -> None:
    async def body(session: AgiSession) -> None:
        await session.command("WAIT FOR DIGIT", "10000", timeout=30)

    server = await start_server({"test": tracked(calls, body)}, max_connections=1)
    stop_later.append(server)
    first = await FakeAsterisk.connect(server.port, env_block())
    assert await first.command() == 'WAIT FOR DIGIT "10000"'
    second = await FakeAsterisk.connect(server.port, env_block(uniqueid="2.2"))
    assert await second.closed_by_peer()                       # closed at once: the dialplan falls back
    assert server.calls_refused == 1 and server.active_calls == 1
    first.send("200 result=0\n")
    assert await first.rest() == b""
    await until(lambda: server.active_calls == 0)


async def test_environment_trickling_in_over_many_writes_is_read_whole(calls: Calls,
                                                                       stop_later: list[AgiServer]) -> None:
    """Asterisk writes the environment a line at a time; lines that come in slowly, past the gathering
    pause after the first one, still make one environment, with every variable."""
    async def body(session: AgiSession) -> None:
        calls.replies.append(dict(session.env.variables))
        await session.set_variable("X", "1")

    server = await start_server({"test": tracked(calls, body)})
    stop_later.append(server)
    fake = await FakeAsterisk.connect(server.port)
    lines = env_block(uniqueid="77.1").split(b"\n")
    for i, line in enumerate(lines[:-1]):
        fake.send(line + b"\n")
        await fake.writer.drain()
        if i % 5 == 0:
            await asyncio.sleep(0.01)                       # longer than the server's gathering pause
    assert await fake.command() == 'SET VARIABLE "X" "1"'
    fake.send("200 result=1\n")
    assert await fake.rest() == b""
    (env,) = calls.replies
    assert env["uniqueid"] == "77.1" and env["calleridname"] == "Jane Doe" and env["threadid"] == "139872331"
    assert len(env) == 17


async def test_environment_never_completed_is_dropped_after_the_read_timeout(calls: Calls,
                                                                             stop_later: list[AgiServer]) -> None:
    server = await start_server({"test": tracked(calls, lambda s: asyncio.sleep(0))}, read_timeout=0.3)
    stop_later.append(server)
    stuck = await FakeAsterisk.connect(server.port, b"agi_network: yes\nagi_network_script: test\n")
    assert await stuck.closed_by_peer()                      # no blank line ever came: given up
    assert server.calls_failed == 1 and calls.sessions == [] and server.active_calls == 0


async def test_reply_that_never_comes_times_out_to_the_fallback(calls: Calls, stop_later: list[AgiServer]) -> None:
    async def body(session: AgiSession) -> None:
        await session.command("WAIT FOR DIGIT", "100", timeout=0.2)

    server = await start_server({"test": tracked(calls, body)})
    stop_later.append(server)
    fake = await FakeAsterisk.connect(server.port, env_block())
    assert await fake.command() == 'WAIT FOR DIGIT "100"'     # ... and Asterisk says nothing
    # the connection is closed (no command can follow an unanswered one): AGI() returns with IVR_NEXT unset,
    # which the dialplan sends to the fallback queue
    assert await fake.rest() == b""
    assert isinstance(calls.errors[0], asyncio.TimeoutError) and server.calls_failed == 1
    assert "within 0.2s" in str(calls.errors[0])
