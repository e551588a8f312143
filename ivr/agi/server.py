"""asyncio FastAGI server around the sans-IO core in ``protocol``.

One task per call. Handlers are registered by name in an explicit table
(``AgiRouter``; a duplicate name is an error) and get an ``AgiSession`` with
typed helpers for the commands an IVR needs. Every read has a timeout. Any
failure of a handler ends in one place (``_run_call``): the error is logged with
the call's unique id and the call is handed back to the dialplan with
``IVR_NEXT=fallback`` so the caller reaches a plain queue, never dead air.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from .protocol import (
    EOF,
    NEED_DATA,
    AgiCommandError,
    AgiConnection,
    AgiEnvironment,
    AgiError,
    AgiHangup,
    AgiProtocolError,
    AgiReply,
    HangupNotice,
)

log = logging.getLogger(__name__)

Handler = Callable[["AgiSession"], Awaitable[None]]

PLAYBACK_TIMEOUT = 600.0   # a prompt may be long; the reply only comes when it ends
READ_CHUNK = 65536


class AgiRouter:
    """Explicit table of FastAGI scripts: ``agi://host:port/<name>/<arg>`` runs handler ``name``."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, name: str, handler: Handler) -> None:
        if not name or "/" in name:
            raise ValueError(f"AGI handler name must be one path segment, got {name!r}")
        if name in self._handlers:
            raise ValueError(f"AGI handler {name!r} is registered twice")
        self._handlers[name] = handler

    def resolve(self, script: str) -> tuple[Handler | None, str]:
        # Asterisk passes everything after host:port/ as the script, query string included.
        path = script.split("?", 1)[0]
        name, _, rest = path.strip("/").partition("/")
        return self._handlers.get(name), rest

    def names(self) -> list[str]:
        return sorted(self._handlers)


class AgiSession:
    """One call's FastAGI conversation: send a command, await its reply."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 conn: AgiConnection, env: AgiEnvironment, read_timeout: float) -> None:
        self._reader, self._writer, self._conn = reader, writer, conn
        self.env = env
        self.read_timeout = read_timeout
        self.uniqueid = env.uniqueid
        self.route_arg = ""
        self.commands = 0
        self.hangup_seen = False
        self.data: dict[str, object] = {}     # per-call scratch space for handlers
        self._trace = log.isEnabledFor(logging.DEBUG)   # the whole conversation, for transcripts

    async def _read_event(self, timeout: float) -> object:
        event = self._conn.next_event()
        if event is not NEED_DATA:
            return event
        # asyncio.timeout (one timer) rather than wait_for (a task per read): this runs per command
        async with asyncio.timeout(timeout):
            while event is NEED_DATA:
                self._conn.receive_data(await self._reader.read(READ_CHUNK))
                event = self._conn.next_event()
        return event

    async def command(self, *words: str, timeout: float | None = None) -> AgiReply:
        """Send one AGI command (verb first, then arguments) and return its 200 reply.

        Raises AgiHangup when the channel is gone, AgiCommandError on 510/520,
        AgiProtocolError on garbage, asyncio.TimeoutError when no reply comes.
        """
        if self.hangup_seen:
            raise AgiHangup(f"channel hung up before {words[0]}")
        data = self._conn.send_command(*words)
        self._writer.write(data)
        self.commands += 1
        if self._trace:
            log.debug("call %s: AGI >> %s", self.uniqueid, data.decode(errors="replace").rstrip("\n"))
        limit = self.read_timeout if timeout is None else timeout
        while True:
            event = await self._read_event(limit)
            if self._trace:
                log.debug("call %s: AGI << %r", self.uniqueid, event)
            if isinstance(event, HangupNotice):
                self.hangup_seen = True
                continue
            if isinstance(event, AgiReply):
                return event
            if isinstance(event, AgiHangup):
                self.hangup_seen = True
                raise event
            if isinstance(event, AgiCommandError):
                raise event
            if event is EOF:
                self.hangup_seen = True
                raise AgiHangup("Asterisk closed the AGI connection")
            raise AgiProtocolError(f"unexpected event {event!r}")

    # --------------------------------------------------------------- helpers
    async def answer(self) -> None:
        await self._checked("ANSWER")

    async def set_variable(self, name: str, value: str) -> None:
        await self._checked("SET VARIABLE", name, value)

    async def get_variable(self, name: str) -> str | None:
        reply = await self.command("GET VARIABLE", name)
        return reply.data if reply.result == "1" else None

    async def stream_file(self, path: str, escape_digits: str = "") -> str | None:
        """Play a prompt; return the digit that interrupted it, if any.

        A missing file also answers result=-1 on a live channel, so -1 is not taken
        as a hangup here: the next command tells (511 or HANGUP).
        """
        reply = await self.command("STREAM FILE", path, escape_digits, timeout=PLAYBACK_TIMEOUT)
        if reply.result.startswith("-"):
            log.warning("call %s: could not play %s (missing file or hangup)", self.uniqueid, path)
            return None
        return reply.digit

    async def wait_for_digit(self, timeout_ms: int) -> str | None:
        reply = await self._checked("WAIT FOR DIGIT", str(timeout_ms), timeout=timeout_ms / 1000 + self.read_timeout)
        return reply.digit

    async def get_data(self, path: str, timeout_ms: int, max_digits: int) -> tuple[str, bool]:
        """Play ``path`` and collect up to ``max_digits`` (ended by #). Returns (digits, timed_out)."""
        reply = await self._checked("GET DATA", path, str(timeout_ms), str(max_digits),
                                    timeout=PLAYBACK_TIMEOUT)
        return (reply.result if reply.result != "-1" else ""), reply.data == "timeout"

    async def say_digits(self, digits: str, escape_digits: str = "") -> str | None:
        reply = await self._checked("SAY DIGITS", digits, escape_digits, timeout=PLAYBACK_TIMEOUT)
        return reply.digit

    async def say_number(self, number: int, escape_digits: str = "") -> str | None:
        reply = await self._checked("SAY NUMBER", str(number), escape_digits, timeout=PLAYBACK_TIMEOUT)
        return reply.digit

    async def record_file(self, path: str, fmt: str = "wav", escape_digits: str = "#", timeout_ms: int = 60_000,
                          beep: bool = True, silence_s: int = 3) -> tuple[str | None, bool]:
        """RECORD FILE (``path`` without extension). Returns (the key that ended it, whether the caller hung
        up); a hang-up ends the recording but keeps the file, so it is not raised here."""
        words = ["RECORD FILE", path, fmt, escape_digits, str(timeout_ms), "0"]
        if beep:
            words.append("BEEP")
        if silence_s:
            words.append(f"s={silence_s}")
        reply = await self.command(*words, timeout=timeout_ms / 1000 + 30)
        if reply.result == "-1":
            self.hangup_seen = True
            return None, True
        return reply.digit, False

    async def exec(self, application: str, options: str = "", *, timeout: float | None = None) -> AgiReply:
        return await self.command("EXEC", application, options, timeout=timeout or PLAYBACK_TIMEOUT)

    async def verbose(self, message: str, level: int = 3) -> None:
        await self.command("VERBOSE", message, str(level))

    async def _checked(self, *words: str, timeout: float | None = None) -> AgiReply:
        reply = await self.command(*words, timeout=timeout)
        if reply.result == "-1":
            self.hangup_seen = True
            raise AgiHangup(f"{words[0]} returned -1: channel hung up")
        return reply


class AgiServer:
    """Listens for FastAGI connections and runs one routed handler per call."""

    def __init__(self, router: AgiRouter, host: str, port: int, *, read_timeout: float = 30.0,
                 max_connections: int = 2000) -> None:
        self.router = router
        self.host, self.port = host, port
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls_total = 0
        self.calls_failed = 0
        self.calls_refused = 0
        self.commands_total = 0
        self.step_latency: Callable[[float], None] | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port,
                                                  limit=READ_CHUNK, backlog=1024, reuse_address=True)
        sock = self._server.sockets[0].getsockname()
        self.port = sock[1]
        log.info("FastAGI server listening on %s:%d (handlers: %s)", self.host, self.port,
                 ", ".join(self.router.names()))

    async def stop(self, grace: float = 5.0) -> None:
        """Stop accepting, give running calls ``grace`` seconds, then cancel them (they fall back)."""
        server, self._server = self._server, None
        if server is not None:
            server.close()  # stop accepting; wait_closed() comes last (on 3.12+ it waits for connections)
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=2)
        if server is not None:
            try:
                await asyncio.wait_for(server.wait_closed(), 2)
            except asyncio.TimeoutError:
                log.warning("FastAGI server: connections still open at stop")

    @property
    def active_calls(self) -> int:
        return len(self._tasks)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._tasks) >= self.max_connections:
            self.calls_refused += 1
            log.warning("FastAGI: %d calls already running, refusing one (the dialplan falls back)", len(self._tasks))
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._run_call(reader, writer)
        finally:
            self._tasks.discard(task)
            try:
                writer.close()
            except Exception:  # pragma: no cover
                pass

    async def _run_call(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = AgiConnection()
        session: AgiSession | None = None
        uid = "?"
        started = time.perf_counter()
        try:
            env = None
            while env is None:
                event = conn.next_event()
                if event is NEED_DATA:
                    async with asyncio.timeout(self.read_timeout):
                        chunk = await reader.read(READ_CHUNK)
                    conn.receive_data(chunk)
                elif isinstance(event, AgiEnvironment):
                    env = event
                elif event is EOF:
                    return
                else:
                    raise AgiProtocolError(f"expected the AGI environment, got {event!r}")
            uid = env.uniqueid or "?"
            self.calls_total += 1
            session = AgiSession(reader, writer, conn, env, self.read_timeout)
            handler, session.route_arg = self.router.resolve(env.network_script)
            if handler is None:
                raise LookupError(f"no AGI handler for script {env.network_script!r}")
            log.debug("call %s: AGI %s from %s", uid, env.network_script, env.callerid)
            await handler(session)
        except AgiHangup:
            log.debug("call %s: hung up during AGI", uid)
        except asyncio.CancelledError:
            await self._fallback(session, uid)
            raise
        except (Exception, AgiError) as exc:
            self.calls_failed += 1
            if isinstance(exc, (asyncio.TimeoutError, AgiProtocolError, LookupError, AgiCommandError)):
                log.error("call %s: AGI failed (%s: %s); sending the call to the fallback queue",
                          uid, type(exc).__name__, exc)
            else:
                log.exception("call %s: AGI handler crashed; sending the call to the fallback queue", uid)
            await self._fallback(session, uid)
        finally:
            if session is not None:
                self.commands_total += session.commands
            if self.step_latency is not None:
                self.step_latency(time.perf_counter() - started)
            try:
                if writer.transport.get_write_buffer_size():   # only when Asterisk is slow to read: rare
                    async with asyncio.timeout(1.0):
                        await writer.drain()
            except Exception:
                pass

    async def _fallback(self, session: AgiSession | None, uid: str) -> None:
        if session is None or session.hangup_seen:
            return
        try:
            await asyncio.wait_for(session.set_variable("IVR_NEXT", "fallback"), 2.0)
        except Exception as exc:  # the dialplan treats an unset IVR_NEXT as fallback too
            log.debug("call %s: could not set IVR_NEXT=fallback (%s)", uid, exc)
