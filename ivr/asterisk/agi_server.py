"""asyncio FastAGI server around the sans-IO core in ``protocol``.

One ``asyncio.Protocol`` per connection feeds the sans-IO ``AgiConnection``; once
Asterisk's environment block is complete, one task runs the routed handler, which
gets an ``AgiSession`` with typed helpers for the commands an IVR needs. Handlers
are registered by name in an explicit table (``AgiRouter``; a duplicate name is an
error). Every wait for Asterisk has a timeout. Any failure of a handler ends in
one place (``_run_call``): the error is logged with the call's unique id and the
call is handed back to the dialplan with ``IVR_NEXT=fallback`` so the caller
reaches a plain queue, never dead air.

Cost per call matters here (hundreds of calls a second): no stream reader or
writer objects, one future per wait, a plain timer handle for its timeout, and
the environment block read in one go. Asterisk writes the environment a line at
a time (about 20 small writes); after the first of them arrives the connection
reads nothing for ``ENV_GATHER_S``, so the rest is taken in one read instead of
waking the controller (and making Asterisk wake it) once per few lines.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

from ..core.agi import (
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
ENV_GATHER_S = 0.002       # read nothing for this long after a connection opens (see the module comment)


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

    def __init__(self, link: "AgiLink", conn: AgiConnection, env: AgiEnvironment, read_timeout: float) -> None:
        self._link, self._conn = link, conn
        self.env = env
        self.read_timeout = read_timeout
        self.uniqueid = env.uniqueid
        self.route_arg = ""
        self.commands = 0
        self.hangup_seen = False
        self.data: dict[str, object] = {}     # per-call scratch space for handlers
        self._trace = log.isEnabledFor(logging.DEBUG)   # the whole conversation, for transcripts

    async def _read_event(self, timeout: float) -> object:
        conn = self._conn
        event = conn.next_event()
        while event is NEED_DATA:
            await self._link.wait_data(timeout)
            event = conn.next_event()
        return event

    async def command(self, *words: str, timeout: float | None = None) -> AgiReply:
        """Send one AGI command (verb first, then arguments) and return its 200 reply.

        Raises AgiHangup when the channel is gone, AgiCommandError on 510/520,
        AgiProtocolError on garbage, asyncio.TimeoutError when no reply comes.
        """
        if self.hangup_seen:
            raise AgiHangup(f"channel hung up before {words[0]}")
        data = self._conn.send_command(*words)
        self._link.write(data)
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


class AgiLink(asyncio.Protocol):
    """One FastAGI connection: bytes from Asterisk go into the sans-IO ``AgiConnection``; the call's
    handler waits in ``wait_data`` until more has come (or the connection ended)."""

    def __init__(self, server: "AgiServer") -> None:
        self.server = server
        self.conn = AgiConnection()
        self.transport: asyncio.Transport | None = None
        self.task: asyncio.Task[None] | None = None
        self.started = time.perf_counter()
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None
        self._env_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._gathering = False

    # ------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]   # uvloop's TCPTransport is not a subclass
        server = self.server
        if len(server._links) >= server.max_connections:
            server.calls_refused += 1
            self._refused = True
            log.warning("FastAGI: %d calls already running, refusing one (the dialplan falls back)",
                        len(server._links))
            transport.close()
            return
        server._links.add(self)
        self._env_timer = self._loop.call_later(server.read_timeout, self._env_timed_out)

    def _resume(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.conn.receive_data(data)
        if self.task is None:
            self._try_start()
            if self.task is None and not self._gathering and not self._refused:
                self._gathering = True     # the first lines of the environment: let the rest gather
                self.transport.pause_reading()   # type: ignore[union-attr]   # set: connection_made came first
                self._loop.call_later(ENV_GATHER_S, self._resume)
        else:
            self._wake()

    def eof_received(self) -> bool | None:
        self._ended()
        return None                        # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended()
        self.server._links.discard(self)   # a call still running keeps its task in server._tasks
        if self._env_timer is not None:
            self._env_timer.cancel()

    def _ended(self) -> None:
        if not self.conn.closed:
            self.conn.receive_data(b"")
        if self.task is None:
            if not self._refused:
                self._try_start()
        else:
            self._wake()

    def _wake(self) -> None:
        """The handler waiting in ``wait_data`` (if any) goes on: bytes or the end of the connection came."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -------------------------------------------------------------- the environment
    def _try_start(self) -> None:
        """Start the handler once the environment block is complete; drop a connection that sends garbage
        or closes before it."""
        if self.task is not None or self._refused:
            return
        try:
            event = self.conn.next_event()
        except AgiProtocolError as exc:
            self._fail_before_start(f"AgiProtocolError: {exc}")
            return
        if event is NEED_DATA:
            return
        if self._env_timer is not None:
            self._env_timer.cancel()
            self._env_timer = None
        if isinstance(event, AgiEnvironment):
            self.task = self.server._start_call(self, event)
        elif event is EOF:
            self.server._links.discard(self)
            self.close()
        else:
            self._fail_before_start(f"AgiProtocolError: expected the AGI environment, got {event!r}")

    def _env_timed_out(self) -> None:
        self._env_timer = None
        if self.task is None:
            self._fail_before_start(f"TimeoutError: no AGI environment within {self.server.read_timeout:g}s")

    def _fail_before_start(self, why: str) -> None:
        self.server.calls_failed += 1
        log.error("call ?: AGI failed (%s); the dialplan sends the call to the fallback queue", why)
        self.server._links.discard(self)
        self._refused = True
        if self.transport is not None:
            self.transport.abort()

    # ------------------------------------------------------------------ for the session
    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise AgiHangup("the AGI connection is closed")
        transport.write(data)

    async def wait_data(self, timeout: float) -> None:
        """Return once more bytes (or the end of the connection) have come; TimeoutError after ``timeout``."""
        waiter = self._waiter = self._loop.create_future()
        timer = self._loop.call_later(timeout, _time_out, waiter, timeout)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def close(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.close()                  # what is still buffered is sent first
        if transport.get_write_buffer_size():   # only when Asterisk is slow to read: rare
            self._loop.call_later(1.0, transport.abort)


def _time_out(waiter: asyncio.Future[None], timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(asyncio.TimeoutError(f"nothing from Asterisk within {timeout:g}s"))


class AgiServer:
    """Listens for FastAGI connections and runs one routed handler per call."""

    def __init__(self, router: AgiRouter, host: str, port: int, *, read_timeout: float = 30.0,
                 max_connections: int = 2000, step_latency: Callable[[float], None] | None = None) -> None:
        self.router = router
        self.host, self.port = host, port
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self._server: asyncio.base_events.Server | None = None
        self._links: set[AgiLink] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.calls_total = 0
        self.calls_failed = 0
        self.calls_refused = 0
        self.commands_total = 0
        self.step_latency = step_latency   # told each AGI step's seconds (the metrics histogram)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: AgiLink(self), self.host, self.port,
                                                backlog=1024, reuse_address=True)
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
        for link in list(self._links):     # connections that never sent their environment
            if link.transport is not None:
                link.transport.abort()
        self._links.clear()
        if server is not None:
            try:
                await asyncio.wait_for(server.wait_closed(), 2)
            except asyncio.TimeoutError:
                log.warning("FastAGI server: connections still open at stop")

    @property
    def active_calls(self) -> int:
        return len(self._tasks)

    def _start_call(self, link: AgiLink, env: AgiEnvironment) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(self._run_call(link, env))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run_call(self, link: AgiLink, env: AgiEnvironment) -> None:
        session: AgiSession | None = None
        uid = env.uniqueid or "?"
        try:
            self.calls_total += 1
            session = AgiSession(link, link.conn, env, self.read_timeout)
            handler, session.route_arg = self.router.resolve(env.network_script)
            if handler is None:
                raise LookupError(f"no AGI handler for script {env.network_script!r}")
            if session._trace:
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
                self.step_latency(time.perf_counter() - link.started)
            self._links.discard(link)
            link.close()

    async def _fallback(self, session: AgiSession | None, uid: str) -> None:
        if session is None or session.hangup_seen:
            return
        try:
            await asyncio.wait_for(session.set_variable("IVR_NEXT", "fallback"), 2.0)
        except Exception as exc:  # the dialplan treats an unset IVR_NEXT as fallback too
            log.debug("call %s: could not set IVR_NEXT=fallback (%s)", uid, exc)
