"""What menu nodes call out to: self-service look-up backends (input validators: validators.py).

Backends are an explicit table (name -> implementation); a menu names them and the
schema checks the name exists. A backend answers ``lookup(operation, params)``
with a dict (found), None (not found) or raises ``LookupFailed`` (the node's
``error`` branch). Built in: ``refunds`` (Redis); HTTP backends are
configured in ivr.yaml (``lookups:``, docs/integrations.md), called with aiohttp, and registered by the
controller behind a circuit breaker and a concurrency cap (lookups.py ``GuardedBackend``).
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from typing import Any, Callable, Mapping, Protocol

import aiohttp

from ..store.errors import StoreError
from ..store.redis_store import Store
from .mapping import map_response
from .validators import TEMPLATE_RE, VALIDATORS, format_part, is_digits, safe_prompt_name

__all__ = ["LookupFailed", "LookupBackend", "RefundsBackend", "HttpBackend",
           # moved to validators.py (the schema needs them without aiohttp or redis); kept importable from here
           "VALIDATORS", "TEMPLATE_RE", "is_digits", "format_part", "safe_prompt_name"]

log = logging.getLogger(__name__)


class LookupFailed(RuntimeError):
    """The backend could not answer (down, timeout, bad answer).

    ``kind`` names why, for the errors counter on /metrics: ``timeout``, ``connect``, ``http`` (a status other
    than 200 or 404), ``invalid_json``, ``params`` (the call lacks what the URL needs: not the backend's
    fault), ``breaker_open``, ``busy`` (the concurrency cap), ``backend`` (anything else).
    """

    def __init__(self, message: str, kind: str = "backend") -> None:
        super().__init__(message)
        self.kind = kind


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


HTTP_TIMEOUT = 2.0     # seconds per attempt unless lookups.<name>.timeout says otherwise (docs/integrations.md)
HTTP_RETRIES = 1       # attempts after the first, on a time-out, a refused connection or a 5xx


class HttpBackend:
    """A JSON HTTP endpoint: ``url`` with ``{name}`` placeholders filled from the call (URL-quoted).

    200 with a JSON object: found (its fields through ``mapping``, see ivr/menu/lookups.py ``map_response``);
    404: not found; anything else or a timeout: LookupFailed. A time-out, a connection error or a 5xx is tried
    again up to ``retries`` times; a 4xx or a body that is not JSON is not.
    """

    operations = frozenset({"get"})

    def __init__(self, name: str, url: str, *, timeout: float = HTTP_TIMEOUT, retries: int = HTTP_RETRIES,
                 headers: Mapping[str, str] | None = None, mapping: Mapping[str, str] | None = None,
                 session_factory: Callable[[], aiohttp.ClientSession] | None = None) -> None:
        self.name, self.url, self.timeout, self.retries = name, url, timeout, retries
        self.headers = dict(headers or {})
        self.mapping = dict(mapping or {})
        self._session: aiohttp.ClientSession | None = None
        self._factory = session_factory or (lambda: aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=timeout)))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def lookup(self, operation: str, params: Mapping[str, str]) -> dict[str, Any] | None:
        if any(str(v) in (".", "..") for v in params.values()):  # a whole path segment the client would resolve
            raise LookupFailed(f"{self.name}: a parameter is '.' or '..', refused", kind="params")
        try:
            url = self.url.format_map({k: urllib.parse.quote(str(v), safe="") for k, v in params.items()})
        except KeyError as exc:
            raise LookupFailed(f"{self.name}: the URL needs {exc}, which the call does not have",
                               kind="params") from None
        if self._session is None:
            self._session = self._factory()
        for attempt in range(self.retries + 1):
            try:
                body = await self._get(url)
            except LookupFailed as exc:
                if exc.kind in ("timeout", "connect", "http5xx") and attempt < self.retries:
                    log.info("%s: attempt %d failed (%s), trying again", self.name, attempt + 1, exc)
                    continue
                if exc.kind == "http5xx":
                    exc.kind = "http"
                raise
            if body is None:
                return None
            return map_response(body, self.mapping)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _get(self, url: str) -> dict[str, Any] | None:
        assert self._session is not None
        try:
            async with self._session.get(url, headers=self.headers, allow_redirects=False) as resp:
                if resp.status == 404:
                    return None
                if resp.status != 200:
                    raise LookupFailed(f"{self.name}: HTTP {resp.status}",
                                       kind="http5xx" if resp.status >= 500 else "http")
                body = await resp.json(content_type=None)
        except asyncio.TimeoutError:
            raise LookupFailed(f"{self.name}: TimeoutError: no answer within {self.timeout:g}s",
                               kind="timeout") from None
        except aiohttp.ClientConnectionError as exc:
            raise LookupFailed(f"{self.name}: {type(exc).__name__}: {exc}", kind="connect") from None
        except aiohttp.ClientError as exc:
            raise LookupFailed(f"{self.name}: {type(exc).__name__}: {exc}", kind="http") from None
        except ValueError as exc:
            raise LookupFailed(f"{self.name}: the answer is not JSON ({type(exc).__name__}: {exc})",
                               kind="invalid_json") from None
        if not isinstance(body, dict):
            raise LookupFailed(f"{self.name}: expected a JSON object", kind="invalid_json")
        return body
