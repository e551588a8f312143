"""Who may call the API: bearer tokens, the failed-login count per address, stream tickets, the audit log.

``AccessService`` is what the middleware (``ivr/api/app.py``) and the ticket and audit routes call; the tokens,
tickets and counts are kept in the store (``ivr.store.redis_store.Store``), hashed.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

from ..store.redis_store import STREAM_TICKET_TTL


class TokenStore(Protocol):
    """The store's token, ticket and failed-login records."""
    async def verify_token(self, token: str) -> dict[str, Any] | None: ...

    async def auth_failures(self, address: str) -> tuple[int, int]: ...

    async def auth_failed(self, address: str, window: int) -> int: ...

    async def create_stream_ticket(self, info: Mapping[str, Any], ttl: int = STREAM_TICKET_TTL) -> str: ...

    async def take_stream_ticket(self, ticket: str) -> dict[str, Any] | None: ...


class AuditLog(Protocol):
    async def audit_log(self, count: int = 100) -> list[dict[str, Any]]: ...


class AccessService:
    """Token checks with a limit on failed logins per address, stream tickets, the audit log."""

    ticket_ttl = STREAM_TICKET_TTL

    def __init__(self, tokens: TokenStore, audit: AuditLog, *, fail_limit: int, fail_window: int) -> None:
        self._tokens = tokens
        self._audit = audit
        self.fail_limit = fail_limit
        self.fail_window = fail_window

    async def verify(self, token: str) -> dict[str, Any] | None:
        """The token's name and role, or None when it is unknown."""
        return await self._tokens.verify_token(token)

    async def locked_out(self, address: str) -> int:
        """Seconds ``address`` stays locked out after too many failed logins (0: it may try)."""
        failures, left = await self._tokens.auth_failures(address)
        return (left or 1) if failures >= self.fail_limit else 0

    async def failed(self, address: str) -> int:
        """Count one failed login against ``address``; the count in the window."""
        return await self._tokens.auth_failed(address, self.fail_window)

    async def create_ticket(self, info: Mapping[str, Any]) -> str:
        return await self._tokens.create_stream_ticket(info, self.ticket_ttl)

    async def take_ticket(self, ticket: str) -> dict[str, Any] | None:
        return await self._tokens.take_stream_ticket(ticket[:200])

    async def audit_log(self, count: int = 500) -> list[dict[str, Any]]:
        return await self._audit.audit_log(count)
