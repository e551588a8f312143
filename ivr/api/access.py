"""Who may call the API: bearer tokens, the failed-login count per address, stream tickets, the audit log.

``AccessService`` is what the middleware (``ivr/api/app.py``) and the ticket and audit routes call;
``TokenAdmin`` is what ``ivr token`` calls. The tokens, tickets and counts are kept in the store
(``ivr.store.redis_store.Store``), hashed.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

from ..core.service_errors import Invalid
from ..store.redis_store import ROLES, STREAM_TICKET_TTL


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


class TokenBook(Protocol):
    """The store's token records, for their administration (``ivr.store.redis_store.Store``)."""
    async def create_token(self, name: str, role: str) -> str: ...

    async def list_tokens(self) -> list[dict[str, Any]]: ...

    async def revoke_token(self, name_or_id: str) -> int: ...

    async def audit(self, who: str, action: str, target: str, old: Any, new: Any) -> None: ...


class TokenAdmin:
    """Creating, listing and revoking API tokens (``ivr token``), each change in the audit log."""

    def __init__(self, tokens: TokenBook) -> None:
        self._tokens = tokens

    async def create(self, name: str, role: str, *, by: str) -> str:
        """A new token for ``name`` with ``role``: returned once, stored hashed."""
        if role not in ROLES or not name:
            raise Invalid(f"create needs --name and --role ({', '.join(ROLES)})")
        token = await self._tokens.create_token(name, role)
        await self._tokens.audit(by, "token.create", name, None, role)
        return token

    async def list(self) -> list[dict[str, Any]]:
        return await self._tokens.list_tokens()

    async def revoke(self, name_or_id: str, *, by: str) -> int:
        """Revoke every token of that name (or id); how many."""
        gone = await self._tokens.revoke_token(name_or_id)
        await self._tokens.audit(by, "token.revoke", name_or_id, None, gone)
        return gone
