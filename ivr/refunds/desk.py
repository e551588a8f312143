"""Refund requests as approvers see them: look one up, list by status, decide one or many, record one for a
caller. ``RefundDesk`` is what the HTTP layer calls; ``RefundService`` (service.py) applies the policy and queues
the customer's notice, the store keeps the requests.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence

from ..core.service_errors import Invalid, NotFound
from .service import RefundService


MAX_OFFSET = 1_000_000_000   # past any real list; beyond 64 bits the store cannot take it

class RefundRecords(Protocol):
    """The refund store (``ivr.store.selfservice.RefundStore``)."""
    async def get(self, ref: str) -> dict[str, Any] | None: ...

    async def by_booking(self, booking: str) -> dict[str, Any] | None: ...

    async def list(self, status: str, *, count: int = 100, offset: int = 0, group: str = "") -> dict[str, Any]: ...

    async def counts(self) -> dict[str, int]: ...


class Auditor(Protocol):
    async def audit(self, who: str, action: str, target: str, old: Any, new: Any) -> None: ...


class RefundDesk:
    """Refund requests for the API: reads, decisions (with the notice they queue), creation by an agent."""

    def __init__(self, refunds: RefundService, records: RefundRecords, audit: Auditor,
                 languages: Sequence[str]) -> None:
        self._refunds = refunds
        self._records = records
        self._audit = audit
        self.languages = tuple(languages)

    async def get(self, ref: str) -> dict[str, Any]:
        if not ref.isdigit() or len(ref) > 20:
            raise Invalid("reference: digits only")
        rec = await self._records.get(ref)
        if not rec:
            raise NotFound(f"no refund request {ref}")
        return rec

    async def by_booking(self, booking: str) -> dict[str, Any]:
        if not booking.isdigit() or len(booking) > 12:
            raise Invalid("booking: digits only")
        rec = await self._records.by_booking(booking)
        if not rec:
            raise NotFound(f"no refund request for booking {booking}")
        return rec

    async def list(self, status: str, *, count: int, offset: int, group: str) -> dict[str, Any]:
        """Requests in one status, oldest first, with the count of every status."""
        if not 1 <= count <= 1000 or not 0 <= offset <= MAX_OFFSET:
            raise Invalid(f"count: 1-1000; offset: 0 to {MAX_OFFSET}")
        try:
            out = await self._records.list(status, count=count, offset=offset, group=group)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        out["counts"] = await self._records.counts()
        return out

    async def decide(self, ref: str, status: str, *, by: str, note: str) -> dict[str, Any]:
        """One decision; the answer is the request with the notice queued to the customer."""
        try:
            rec, notice = await self._refunds.decide(ref, status, by=by, note=note)
        except KeyError:
            raise NotFound(f"no refund request {ref}") from None
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        return {**rec, "notice": notice}

    async def decide_many(self, items: Sequence[Mapping[str, Any]], *, by: str) -> dict[str, Any]:
        """Bulk decisions, each taken and reported on its own."""
        if len(items) > 1000:
            raise Invalid(f"at most 1000 decisions at once, got {len(items)}")
        results = await self._refunds.decide_many([dict(i) for i in items], by=by)
        ok = sum(r["ok"] for r in results)
        return {"decided": ok, "failed": len(results) - ok, "results": results}

    async def create(self, *, booking: str, number: str, lang: str, amount: str, group: str,
                     by: str) -> dict[str, Any]:
        """A request an agent records for a caller; the approval policy applies."""
        lang = lang or (self.languages[0] if self.languages else "en")
        if lang not in self.languages:
            raise Invalid(f"lang: expected one of {', '.join(self.languages)}, got {lang!r}")
        try:
            rec = await self._refunds.create(booking, caller=number.lstrip("+"), lang=lang, amount=amount,
                                             group=group, source="api")
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        await self._audit.audit(by, "refund.create", rec["reference"], None,
                                {k: rec.get(k) for k in ("booking", "amount", "group")})
        return rec
