"""The store's own exceptions: code outside ``ivr/store/`` catches these, never ``redis.exceptions``.

Every public coroutine method of a store class (a subclass of ``Translating``) turns a Redis error into
``StoreUnavailable`` (Redis cannot be reached: connection refused or lost, timeout) or ``StoreError``
(Redis answered with an error). Other exceptions (``OSError``, ``ValueError``, ...) pass through as they are.

For now ``StoreError`` is also a ``redis.exceptions.RedisError``: code that still catches ``RedisError``
(ivr/api, ivr/app, until they move to the store's exceptions) goes on catching what the store raises.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as _RedisConnectionError
from redis.exceptions import RedisError as _RedisError
from redis.exceptions import TimeoutError as _RedisTimeoutError

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class StoreError(_RedisError):
    """Redis refused an operation (or could not be reached: see ``StoreUnavailable``)."""


class StoreUnavailable(StoreError):
    """Redis cannot be reached (connection refused or lost, timeout): try again later."""


def translate(exc: BaseException) -> BaseException:
    """The store exception for a Redis exception (``exc`` itself for anything else)."""
    if isinstance(exc, StoreError) or not isinstance(exc, _RedisError):
        return exc
    cls = StoreUnavailable if isinstance(exc, (_RedisConnectionError, _RedisTimeoutError)) else StoreError
    new = cls(*exc.args)
    new.__cause__ = exc
    return new


def translated(fn: F) -> F:
    """Wrap a coroutine function so Redis errors leave it as store errors."""
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except _RedisError as exc:
            new = translate(exc)
            if new is exc:
                raise
            raise new from exc
    wrapper.__store_translated__ = True  # type: ignore[attr-defined]  # a marker on a function object
    return wrapper  # type: ignore[return-value]  # the same signature as fn: functools.wraps does not say so


class Translating:
    """Base of the store classes: every public ``async def`` of a subclass raises store errors only."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, value in list(vars(cls).items()):
            if name.startswith("_") or not inspect.iscoroutinefunction(value):
                continue
            if getattr(value, "__store_translated__", False):
                continue
            setattr(cls, name, translated(value))


__all__ = ["StoreError", "StoreUnavailable", "Translating", "translate", "translated"]
