"""Callers as the supervisor and the agent see them: what is known about a number, the caller of a call, and
the priority flag. ``CallerService`` is what the HTTP layer calls; ``Continuity`` (service.py) keeps the data.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from ..core.service_errors import Conflict, Invalid, NotFound
from .service import Continuity


class CallRecords(Protocol):
    """The store's call records and audit log (``ivr.store.redis_store.Store``)."""
    async def call_get(self, uid: str) -> dict[str, Any]: ...

    async def audit(self, who: str, action: str, target: str, old: Any, new: Any) -> None: ...


class CallerService:
    """Caller numbers: history, the caller of one call, priority flags (with their audit lines)."""

    def __init__(self, continuity: Continuity, records: CallRecords) -> None:
        self._continuity = continuity
        self._records = records

    async def call_record(self, uid: str) -> dict[str, Any]:
        """The record of one call (in progress or finished); ``NotFound`` when there is none."""
        record = await self._records.call_get(uid)
        if not record:
            raise NotFound(f"no call {uid}")
        return record

    async def describe(self, number: str) -> dict[str, Any]:
        """Calls in progress, kept place, last notice, recent calls of one number."""
        try:
            return await self._continuity.describe(number)
        except ValueError as exc:
            raise Invalid(str(exc)) from None

    async def of_call(self, uid: str) -> dict[str, Any]:
        """The caller of one call and their other calls: what the agent sees."""
        record = await self.call_record(uid)
        number = str(record.get("caller") or "")
        if not self._continuity.key(number):
            raise NotFound(f"call {uid} has no caller number (withheld or not a phone number)")
        about = await self._continuity.describe(number)
        about["calls"] = [c for c in about["calls"] if c.get("uid") != uid]
        vars_ = record.get("vars")
        return {"uniqueid": uid, "this_call": {
            "path": record.get("path", []), "language": record.get("language", ""), "queue": record.get("queue", ""),
            "vars": json.loads(vars_) if isinstance(vars_, str) and vars_.startswith("{") else {},
            **self._continuity.context.get(uid, {})}, "caller": about}

    async def flag(self, number: str, group: str, *, note: str, hours: float | None, by: str) -> dict[str, Any]:
        """Flag a number into a priority group until the flag ends; the new flag (with the number)."""
        try:
            flag, old = await self._continuity.set_flag(number, group, note=note, hours=hours, by=by)
        except ValueError as exc:
            if "none configured" in str(exc):   # no request could be right: the configuration does not allow it
                raise Conflict(str(exc)) from None
            raise Invalid(str(exc)) from None
        await self._records.audit(by, "caller.flag", flag["number"], old,
                                  {k: v for k, v in flag.items() if k != "number"})
        return flag

    async def unflag(self, number: str, by: str) -> str:
        """Clear a number's flag; the number as kept (``NotFound`` when it had none)."""
        try:
            old = await self._continuity.clear_flag(number)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        if old is None:
            raise NotFound("that number is not flagged")
        key = self._continuity.key(number)
        await self._records.audit(by, "caller.unflag", key, old, None)
        return key
