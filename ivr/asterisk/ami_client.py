"""One supervised AMI connection (panoramisk underneath).

panoramisk correlates actions with responses and dispatches events; this module
owns the connection's life: connect with bounded exponential back-off, log in,
run a full resync before anything else may act, ping to detect a dead peer, and
on a drop fail every pending action (never replay it blindly: an action such as
QueueAdd is retried, if at all, by the reconciling loop that knows the state).
Frames are parsed by ``HardenedAMIProtocol``: a bad frame or a failing event
handler is logged and skipped, never a reason to drop the connection.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Awaitable, Callable, Mapping

from panoramisk import Manager
from panoramisk.actions import Action
from panoramisk.message import Message

from ..app.logutil import RateLimit
from ..core import names
from .ami_protocol import HardenedAMIProtocol

log = logging.getLogger(__name__)

EventHandler = Callable[[Message], None]
ConnectedHook = Callable[["AmiClient"], Awaitable[None]]


class AmiError(Exception):
    """An AMI action failed (error response, timeout or no connection)."""


class AmiNotConnected(AmiError):
    """No logged-in AMI connection right now."""


class _Bridge(Manager):
    """panoramisk Manager whose reconnects are driven by AmiClient instead of a fixed timer."""

    def __init__(self, client: "AmiClient", **config: Any) -> None:
        super().__init__(**config)
        self._client = client

    def connection_made(self, f: "asyncio.Future[Any]") -> None:
        if f.cancelled() or f.exception() is not None:
            self._client._connect_failed(f.exception() if not f.cancelled() else None)
            return
        super().connection_made(f)

    def login(self, future: "asyncio.Future[Message]") -> bool:
        ok = False
        try:
            ok = bool(super().login(future))
        except Exception as exc:  # pragma: no cover - a dropped connection during login
            self._client._login_result(False, str(exc))
            return False
        resp = future.result()
        self._client._login_result(ok, resp.get("Message", ""))
        return ok

    def ping(self) -> None:  # panoramisk's fire-and-forget ping is replaced by AmiClient's
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._connected = False
        self.authenticated = False
        # panoramisk parked unanswered actions for replay: fail them instead.
        while self.awaiting_actions:
            action = self.awaiting_actions.popleft()
            if not action.future.done():
                action.future.set_exception(AmiNotConnected(f"connection lost before {action.get('Action')} was answered"))
        self._client._connection_lost(exc)


class AmiClient:
    """Supervised AMI connection: ``await start()``, ``await action(...)``, ``await stop()``."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        secret: str,
        *,
        on_event: EventHandler,
        on_connected: ConnectedHook | None = None,
        on_disconnected: Callable[[], None] | None = None,
        backoff_initial: float = 0.2,
        backoff_max: float = 10.0,
        stable_after: float = 30.0,
        ping_interval: float = 5.0,
        action_timeout: float = 10.0,
    ) -> None:
        self.host, self.port = host, port
        self._username, self._secret = username, secret
        self._on_event = on_event
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        # a connection that ends before it was up this long counts as flapping: the back-off keeps growing
        # (a proxy or firewall that cuts the session must not become a tight reconnect-and-resync loop)
        self.stable_after = stable_after
        self.flaps = 0
        self.ping_interval = ping_interval
        self.action_timeout = action_timeout
        self._bridge: _Bridge | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._attempt: asyncio.Future[None] | None = None
        self._lost: asyncio.Event = asyncio.Event()
        self.ready = asyncio.Event()
        self.connections = 0
        self.reconnects = 0
        self.failed_attempts = 0
        self.last_error = ""
        self._quiet = RateLimit(5.0)     # what repeats while AMI is away or flapping: a line every 5 s

    # ----------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Start the supervisor task (returns at once; wait on ``ready`` for the first resync)."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._supervise(), name="ami-supervisor")

    async def stop(self) -> None:
        """Close the connection and stop reconnecting; never hangs."""
        self._stopping = True
        self.ready.clear()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await asyncio.wait_for(task, 5)
            except (asyncio.CancelledError, asyncio.TimeoutError):
                pass
        self._close_transport()

    @property
    def connected(self) -> bool:
        return self.ready.is_set()

    def _close_transport(self) -> None:
        bridge = self._bridge
        if bridge is not None and bridge.protocol is not None:
            try:
                bridge.protocol.transport.close()
            except Exception:  # pragma: no cover
                pass

    # ------------------------------------------------------- callbacks from _Bridge
    def _connect_failed(self, exc: BaseException | None) -> None:
        if self._attempt is not None and not self._attempt.done():
            self._attempt.set_exception(AmiNotConnected(f"cannot connect to AMI at {self.host}:{self.port}: {exc}"))

    def _login_result(self, ok: bool, message: str) -> None:
        if self._attempt is not None and not self._attempt.done():
            if ok:
                self._attempt.set_result(None)
            else:
                self._attempt.set_exception(AmiError(f"AMI login as {self._username!r} refused: {message}"))

    def _connection_lost(self, exc: Exception | None) -> None:
        self.ready.clear()
        if self._attempt is not None and not self._attempt.done():
            self._attempt.set_exception(AmiNotConnected(f"AMI connection closed during login: {exc}"))
        self._lost.set()

    def _dispatch(self, manager: Manager, message: Message) -> None:
        try:
            self._on_event(message)
        except Exception:
            log.exception("AMI event handler failed on %s event", message.get("Event"))

    # ---------------------------------------------------------------- supervisor
    async def _connect_once(self) -> None:
        loop = asyncio.get_running_loop()
        self._bridge = bridge = _Bridge(
            self,
            host=self.host, port=self.port, username=self._username, secret=self._secret,
            loop=loop, protocol_factory=HardenedAMIProtocol, ping_delay=10**9, events="on",
        )
        bridge.register_event("*", self._dispatch)
        self._lost = asyncio.Event()
        self._attempt = loop.create_future()
        bridge.connect()
        try:
            await asyncio.wait_for(self._attempt, self.action_timeout)
        except BaseException:
            self._close_transport()
            raise

    async def _supervise(self) -> None:
        delay = self.backoff_initial
        flapping = False
        while not self._stopping:
            try:
                await self._connect_once()
                if self._on_connected is not None:
                    await self._on_connected(self)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failed_attempts += 1
                self.last_error = str(exc)
                self._close_transport()
                self._quiet.log(log, logging.WARNING, "AMI not available (%s); retrying in %.1fs", exc, delay)
                delay = await self._back_off(delay)
                continue
            if self.connections:
                self.reconnects += 1
            self.connections += 1
            self.last_error = ""
            connected = ("AMI connected to %s:%d and resynced (connection %d)", self.host, self.port, self.connections)
            if flapping:
                self._quiet.log(log, logging.INFO, *connected)
            else:
                log.info(*connected)
            self.ready.set()
            up_since = time.monotonic()
            pinger = asyncio.create_task(self._pinger(), name="ami-pinger")
            try:
                await self._lost.wait()
            finally:
                pinger.cancel()
            self.ready.clear()
            up_for = time.monotonic() - up_since
            if self._on_disconnected is not None:
                try:
                    self._on_disconnected()
                except Exception:
                    log.exception("AMI disconnect hook failed")
            if up_for >= self.stable_after:
                flapping = False
                delay = self.backoff_initial
                log.warning("AMI connection to %s:%d lost", self.host, self.port)
                continue
            # lost again soon after connecting: wait, and wait longer each time, before the next connect
            flapping = True
            self.flaps += 1
            self.last_error = f"connection lost after {up_for:.1f}s"
            self._quiet.log(log, logging.WARNING, "AMI connection to %s:%d lost after %.1fs (%d short-lived "
                            "connections so far); reconnecting in %.1fs", self.host, self.port, up_for, self.flaps,
                            delay)
            delay = await self._back_off(delay)

    async def _back_off(self, delay: float) -> float:
        """Wait about ``delay`` (+-20 %, so many clients do not retry in step); the next, doubled, delay."""
        await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))
        return min(delay * 2, self.backoff_max)

    async def _pinger(self) -> None:
        while True:
            await asyncio.sleep(self.ping_interval)
            try:
                await self.action(names.PING, timeout=max(2.0, self.ping_interval))
            except AmiError as exc:
                log.warning("AMI ping failed (%s): closing the connection to reconnect", exc)
                self._close_transport()
                return

    # ------------------------------------------------------------------- actions
    async def action(
        self,
        name: str,
        fields: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
        as_list: bool | None = False,
        check: bool = True,
    ) -> Message | list[Message]:
        """Send one action and wait for its response.

        ``as_list=False`` (the default) completes on the first response: panoramisk's
        guess would otherwise wait for more after e.g. "Added interface to queue".
        ``list_action`` passes None so panoramisk follows EventList start/Complete.

        Raises AmiNotConnected without a connection, AmiError on an error response
        (when ``check``) or when no answer comes within ``timeout`` seconds.
        """
        bridge = self._bridge
        if bridge is None or bridge.protocol is None or not bridge.authenticated or bridge.protocol.closed:
            raise AmiNotConnected(f"no AMI connection for {name}")
        for key, value in (fields or {}).items():
            for v in value if isinstance(value, (list, tuple)) else (value,):
                if "\r" in str(v) or "\n" in str(v):
                    raise AmiError(f"{name}: field {key} contains a line break")
        act = Action({"Action": name, **(fields or {})}, as_list=as_list)
        future = bridge.protocol.send(act, as_list=as_list)
        try:
            result = await asyncio.wait_for(asyncio.shield(future), timeout or self.action_timeout)
        except asyncio.TimeoutError:
            responses = getattr(bridge.protocol, "responses", {})
            responses.pop(act.id, None)
            if not future.done():
                future.cancel()
            raise AmiError(f"{name}: no response within {timeout or self.action_timeout:.0f}s") from None
        if check:
            first = result[0] if isinstance(result, list) else result
            if first.get("Response") in ("Error", "Failure", "Fail"):
                raise AmiError(f"{name} failed: {first.get('Message', 'no message')}")
        return result

    async def list_action(self, name: str, fields: Mapping[str, Any] | None = None,
                          *, timeout: float | None = None) -> list[Message]:
        """Run a list action (QueueStatus, CoreShowChannels) and return its events, without the response and the Complete event."""
        # panoramisk sees "EventList: start" and waits for the Complete event; an error
        # response has no EventList and completes at once (as_list=True would wait forever).
        result = await self.action(name, fields, timeout=timeout, as_list=None)
        messages = result if isinstance(result, list) else [result]
        return [m for m in messages if "Event" in m and not m["Event"].endswith("Complete")]
