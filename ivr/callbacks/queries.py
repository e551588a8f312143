"""Callbacks as the supervisor sees them: the pending list, one callback, how many wait."""

from __future__ import annotations

from typing import Any, Protocol

from ..core.service_errors import Invalid, NotFound


class CallbackRecords(Protocol):
    """The callback store (``ivr.store.selfservice.CallbackStore``)."""
    async def pending(self, count: int = 100, /) -> list[dict[str, Any]]: ...

    async def get(self, cb_id: str) -> dict[str, Any] | None: ...

    async def pending_count(self) -> int: ...


class CallbackQueries:
    """Read-only view of the callbacks for the API and the live picture."""

    def __init__(self, callbacks: CallbackRecords) -> None:
        self._callbacks = callbacks

    async def pending(self, count: int = 500) -> list[dict[str, Any]]:
        return await self._callbacks.pending(count)

    async def pending_count(self) -> int:
        return await self._callbacks.pending_count()

    async def get(self, cb_id: str) -> dict[str, Any]:
        if not cb_id.isdigit() or len(cb_id) > 20:
            raise Invalid("callback id: digits only")
        rec = await self._callbacks.get(cb_id)
        if not rec:
            raise NotFound(f"no callback {cb_id}")
        return rec
