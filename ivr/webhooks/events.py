"""``Events``: the publisher the features that emit events are given (by constructor, from the controller).

``publish(type, data)`` never blocks and never raises: it puts the event on a bounded queue and returns. One
writer task (started and stopped by the controller) appends each event to the Redis stream in the order it was
published, one XADD each, with a short timeout; a failure is logged and counted, and the call goes on. An event
type no webhook subscribes to is not queued at all (nothing is written).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from ..app.aiotasks import cancel_and_wait
from . import core

log = logging.getLogger(__name__)

QUEUE_MAX = 10_000
PUBLISH_TIMEOUT_S = 2.0


class EventSink(Protocol):
    """Where events go: ``ivr.store.webhooks.WebhookStore``."""
    async def publish(self, fields: Mapping[str, str]) -> str: ...


class Events:
    def __init__(self, sink: EventSink | None, subscribed: Iterable[str], *,
                 on_published: Callable[[str], None] | None = None,
                 on_failed: Callable[[str, str], None] | None = None,
                 timeout: float = PUBLISH_TIMEOUT_S, queue_max: int = QUEUE_MAX) -> None:
        self.sink = sink
        self.subscribed = frozenset(subscribed)
        self.on_published = on_published   # told the type of each event written
        self.on_failed = on_failed         # told (type, why) of each event lost: "full", "redis"
        self.timeout = timeout
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=queue_max)
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        self.failed = 0

    @classmethod
    def disabled(cls) -> "Events":
        """A publisher that drops everything (no webhook configured; unit tests)."""
        return cls(None, ())

    def wants(self, event_type: str) -> bool:
        return self.sink is not None and event_type in self.subscribed

    def publish(self, event_type: str, data: Mapping[str, Any]) -> None:
        """Queue one event for the stream; returns at once (never raises for a full queue or a down Redis)."""
        if not self.wants(event_type):
            return
        try:
            env = core.envelope(event_type, data, created=time.time())
            self._queue.put_nowait(env)
        except asyncio.QueueFull:
            self._lost(event_type, "full")
        except Exception as exc:   # a bad payload must not reach the call path
            log.warning("event %s not published: %s", event_type, exc)
            self._lost(event_type, "error")

    def _lost(self, event_type: str, why: str) -> None:
        self.failed += 1
        if self.on_failed is not None:
            self.on_failed(event_type, why)

    # ---------------------------------------------------------------- writer
    def start(self) -> None:
        if self.sink is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._write(), name="events-writer")

    async def stop(self, drain_s: float = 2.0) -> None:
        """Write what is queued (for up to ``drain_s``), then stop the writer."""
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self._queue.join(), drain_s)
        except asyncio.TimeoutError:
            log.warning("events: %d not written at stop", self._queue.qsize())
        await cancel_and_wait([self._task])   # repeated: redis-py may swallow one cancel (ivr/app/aiotasks.py)
        self._task = None

    async def flush(self) -> None:
        """Wait until everything queued so far is written (or given up)."""
        await self._queue.join()

    async def _write(self) -> None:
        assert self.sink is not None
        while True:
            env = await self._queue.get()
            try:
                await asyncio.wait_for(self.sink.publish(core.to_fields(env)), self.timeout)
                self.published += 1
                if self.on_published is not None:
                    self.on_published(env["type"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("event %s %s lost: Redis: %s", env["type"], env["id"], exc or type(exc).__name__)
                self._lost(env["type"], "redis")
            finally:
                self._queue.task_done()
