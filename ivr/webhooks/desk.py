"""What ``GET /api/v1/webhooks/deliveries`` shows: each webhook's backlog, recent tries and dead letters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..core.service_errors import Invalid, NotFound
from ..store.webhooks import WebhookStore
from .sender import Hook


class WebhookDesk:
    def __init__(self, store: WebhookStore, hooks: Sequence[Hook]) -> None:
        self.store = store
        self.hooks = {h.name: h for h in hooks}

    async def deliveries(self, webhook: str = "", count: int = 50) -> dict[str, Any]:
        if webhook and webhook not in self.hooks:
            raise NotFound(f"no webhook {webhook!r} (configured: {', '.join(sorted(self.hooks)) or 'none'})")
        if not 1 <= count <= 200:
            raise Invalid("count: 1 to 200")
        out = []
        for name, hook in self.hooks.items():
            if webhook and name != webhook:
                continue
            backlog = await self.store.backlog(name)
            dead_total, dead = await self.store.dead(name, count)
            out.append({"name": name, "url": hook.url, "events": sorted(hook.events),
                        "max_attempts": hook.max_attempts, "pending": backlog["pending"], "lag": backlog["lag"],
                        "recent": await self.store.recent(name, count), "dead_total": dead_total, "dead": dead})
        return {"webhooks": out}
