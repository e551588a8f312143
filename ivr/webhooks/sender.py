"""The webhook sender: one task per webhook, delivering its events one at a time, in stream order.

Each task holds its webhook's lease (only one node delivers a webhook), takes over the entries another sender
left unacknowledged (XAUTOCLAIM: a controller killed mid-delivery), then reads new ones (XREADGROUP). An entry
of a type the webhook does not subscribe to is acknowledged and skipped. A delivery is a POST of the envelope,
signed (``X-Ivr-Signature``); a 2xx acknowledges it; anything else (an error status, a refused connection, a
timeout) is tried again after ``core.backoff(attempt)``, and after ``max_attempts`` tries the event goes to the
dead-letter list (and is acknowledged). The next event waits until then: a receiver that is down for a while
gets everything, in order, when it is back. Delivery is at least once: a receiver dedupes on ``id``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from ..app.aiotasks import cancel_and_wait
from ..store.errors import StoreError
from ..store.webhooks import Entry, WebhookStore
from . import core

log = logging.getLogger(__name__)

LEASE_MS = 30_000


@dataclass(frozen=True)
class Hook:
    """One webhook as the sender uses it (from ``webhooks:`` in ivr.yaml and its secret)."""
    name: str
    url: str
    events: frozenset[str]
    secret: str
    max_attempts: int = 10
    timeout: float = 10.0
    backoff_base: float = core.BACKOFF_BASE_S
    backoff_cap: float = core.BACKOFF_CAP_S


class WebhookSender:
    def __init__(self, store: WebhookStore, hooks: Sequence[Hook], node: str, *,
                 on_delivery: Callable[[str, str], None] | None = None,
                 on_backlog: Callable[[str, int], None] | None = None,
                 sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        self.store = store
        self.hooks = list(hooks)
        self.node = node
        self.on_delivery = on_delivery   # told (webhook, result): delivered, failed (will retry), dead
        self.on_backlog = on_backlog     # told (webhook, events waiting: pending + not read)
        self._sleep = sleep
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        # the lease holder is the node: a controller restarted after a crash takes its webhooks back at once
        self.holder = node

    async def start(self) -> None:
        if not self.hooks or self._tasks:
            return
        self._session = aiohttp.ClientSession(headers={"User-Agent": "ivr-webhooks"})
        for hook in self.hooks:
            try:    # before anything is published: no event of this run is missed by a new webhook's group
                await self.store.ensure_group(hook.name)
                ready = True
            except (StoreError, OSError) as exc:
                log.warning("webhook %s: consumer group not made yet (Redis: %s); trying again", hook.name, exc)
                ready = False
            self._tasks.append(asyncio.create_task(self._run(hook, ready), name=f"webhook-{hook.name}"))

    async def stop(self) -> None:
        self._stopping = True
        # repeated cancels: redis-py may swallow one that lands while it reads an answer (ivr/app/aiotasks.py)
        await cancel_and_wait(self._tasks)
        self._tasks = []
        for hook in self.hooks:
            try:
                await self.store.release(hook.name, self.holder)
            except (StoreError, OSError):
                pass
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ------------------------------------------------------------------ a webhook's loop
    async def _run(self, hook: Hook, ready: bool = False) -> None:
        while not self._stopping:
            try:
                if not ready:
                    await self.store.ensure_group(hook.name)
                    ready = True
                if not await self.store.lease(hook.name, self.holder, LEASE_MS):
                    await self._sleep(LEASE_MS / 3000)      # another node delivers this webhook
                    continue
                entries = await self.store.claim(hook.name, self.node)
                if not entries:
                    entries = await self.store.read_new(hook.name, self.node)
                for entry in entries:
                    await self._handle(hook, entry)
                await self._report_backlog(hook)
            except asyncio.CancelledError:
                raise
            except (StoreError, OSError) as exc:
                log.warning("webhook %s: Redis: %s; trying again in 1 s", hook.name, exc)
                await self._sleep(1.0)
            except Exception:
                log.exception("webhook %s: sender error; trying again in 1 s", hook.name)
                await self._sleep(1.0)

    async def _report_backlog(self, hook: Hook) -> None:
        if self.on_backlog is not None:
            b = await self.store.backlog(hook.name)
            self.on_backlog(hook.name, b["pending"] + max(b["lag"], 0))

    async def _handle(self, hook: Hook, entry: Entry) -> None:
        entry_id, fields = entry
        if fields.get("type") not in hook.events:
            await self.store.ack(hook.name, entry_id)
            return
        event = core.from_fields(fields)
        body = core.encode(event)
        attempt = 0
        while True:
            attempt += 1
            # renew the lease before each try: a long outage must not let another node start delivering
            await self.store.lease(hook.name, self.holder, LEASE_MS)
            status, error, ms = await self._post(hook, body, event)
            await self.store.log_attempt(hook.name, {"event": event["id"], "type": event["type"],
                                                     "stream_id": entry_id, "attempt": attempt, "status": status,
                                                     "error": error, "ms": ms, "at": round(time.time(), 3)})
            if core.success(status):
                await self.store.ack(hook.name, entry_id)
                self._count(hook.name, "delivered")
                return
            why = error or f"HTTP {status}"
            if attempt >= hook.max_attempts:
                await self.store.dead_letter(hook.name, entry_id, event, attempt, why)
                self._count(hook.name, "dead")
                log.warning("webhook %s: event %s (%s) dead-lettered after %d tries: %s", hook.name, event["id"],
                            event["type"], attempt, why)
                return
            self._count(hook.name, "failed")
            wait = core.backoff(attempt, hook.backoff_base, hook.backoff_cap)
            log.info("webhook %s: event %s try %d failed (%s); again in %.1f s", hook.name, event["id"], attempt,
                     why, wait)
            await self._sleep(wait)

    async def _post(self, hook: Hook, body: bytes, event: dict[str, Any]) -> tuple[int, str, int]:
        """(HTTP status or 0, error text, milliseconds)."""
        assert self._session is not None
        headers = {"Content-Type": "application/json", core.SIGNATURE_HEADER: core.sign(hook.secret, body),
                   "X-Ivr-Event": str(event["type"]), "X-Ivr-Event-Id": str(event["id"])}
        t0 = time.perf_counter()
        try:
            async with self._session.post(hook.url, data=body, headers=headers, allow_redirects=False,
                                          timeout=aiohttp.ClientTimeout(total=hook.timeout)) as resp:
                await resp.read()
                return resp.status, "", int((time.perf_counter() - t0) * 1000)
        except asyncio.TimeoutError:
            return 0, "timeout", int((time.perf_counter() - t0) * 1000)
        except aiohttp.ClientError as exc:
            return 0, f"{type(exc).__name__}: {exc}"[:200], int((time.perf_counter() - t0) * 1000)

    def _count(self, name: str, result: str) -> None:
        if self.on_delivery is not None:
            self.on_delivery(name, result)
