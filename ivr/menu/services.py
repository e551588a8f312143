"""What menu nodes call out to: self-service look-up backends (input validators: validators.py).

Backends are an explicit table (name -> implementation); a menu names them and the
schema checks the name exists. A backend answers ``lookup(operation, params)``
with a dict (found), None (not found) or raises ``LookupFailed`` (the node's
``error`` branch). Built in: ``refunds`` (Redis); ``http`` backends are
configured in ivr.yaml (``lookups:``) and called with aiohttp.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from typing import Any, Callable, Mapping, Protocol

import aiohttp

from ..store.errors import StoreError
from ..store.redis_store import Store
from .validators import TEMPLATE_RE, VALIDATORS, format_part, is_digits, safe_prompt_name

__all__ = ["LookupFailed", "LookupBackend", "RefundsBackend", "HttpBackend",
           # moved to validators.py (the schema needs them without aiohttp or redis); kept importable from here
           "VALIDATORS", "TEMPLATE_RE", "is_digits", "format_part", "safe_prompt_name"]

log = logging.getLogger(__name__)


class LookupFailed(RuntimeError):
    """The backend could not answer (down, timeout, bad answer)."""


# -------------------------------------------------------------------- backends
class LookupBackend(Protocol):
    operations: frozenset[str]

    async def lookup(self, operation: str, params: Mapping[str, str]) -> dict[str, Any] | None: ...


class RefundsBackend:
    """Refund requests kept by the controller itself (Redis)."""

    operations = frozenset({"status", "create"})

    def __init__(self, store: Store, service: Any = None) -> None:
        self.store = store
        self.service = service      # ivr.refunds.service.RefundService: creation applies the approval policy

    async def lookup(self, operation: str, params: Mapping[str, str]) -> dict[str, Any] | None:
        booking = params.get("booking", "")
        try:
            if operation == "status":
                return await self.store.refunds.by_booking(booking)
            if operation == "create":
                create = self.service.create if self.service is not None else self.store.refunds.create
                return await create(booking, caller=params.get("caller", ""), lang=params.get("lang", "en"),
                                    call_uid=params.get("uid", ""), source="ivr")
        except ValueError as exc:
            raise LookupFailed(str(exc)) from None
        except (ConnectionError, OSError, asyncio.TimeoutError, StoreError) as exc:
            raise LookupFailed(f"Redis: {exc}") from None
        raise LookupFailed(f"refunds: unknown operation {operation!r}")


class HttpBackend:
    """A JSON HTTP endpoint: ``url`` with ``{name}`` placeholders filled from the call (URL-quoted).

    200 with a JSON object: found; 404: not found; anything else or a timeout: LookupFailed.
    """

    operations = frozenset({"get"})

    def __init__(self, name: str, url: str, *, timeout: float = 3.0, headers: Mapping[str, str] | None = None,
                 session_factory: Callable[[], aiohttp.ClientSession] | None = None) -> None:
        self.name, self.url, self.timeout = name, url, timeout
        self.headers = dict(headers or {})
        self._session: aiohttp.ClientSession | None = None
        self._factory = session_factory or (lambda: aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout)))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def lookup(self, operation: str, params: Mapping[str, str]) -> dict[str, Any] | None:
        if any(str(v) in (".", "..") for v in params.values()):  # a whole path segment the client would resolve
            raise LookupFailed(f"{self.name}: a parameter is '.' or '..', refused")
        try:
            url = self.url.format_map({k: urllib.parse.quote(str(v), safe="") for k, v in params.items()})
        except KeyError as exc:
            raise LookupFailed(f"{self.name}: the URL needs {exc}, which the call does not have") from None
        if self._session is None:
            self._session = self._factory()
        try:
            async with self._session.get(url, headers=self.headers) as resp:
                if resp.status == 404:
                    return None
                if resp.status != 200:
                    raise LookupFailed(f"{self.name}: HTTP {resp.status}")
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise LookupFailed(f"{self.name}: {type(exc).__name__}: {exc}") from None
        if not isinstance(body, dict):
            raise LookupFailed(f"{self.name}: expected a JSON object")
        return body
