"""Look-ups against the business's own systems, made safe for a caller on the line (no I/O here).

* ``map_response`` (mapping.py): the backend's JSON -> the fields a ``lookup`` node speaks (``lookups.<name>.map``).
* ``CircuitBreaker``: after ``failures`` failures within ``window`` seconds the backend is not asked for
  ``cooldown`` seconds (the node takes its ``error`` branch at once); then one trial call decides whether it
  closes again. A pure state machine on an injected clock.
* ``GuardedBackend``: any look-up backend behind a breaker and a concurrency cap (over the cap: the error
  branch at once, never a queue), reporting latency, errors by kind and breaker state to an observer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Mapping, Protocol

from .mapping import FIELD_RE, PATH_RE, map_response
from .services import LookupBackend, LookupFailed

__all__ = ["CircuitBreaker", "GuardedBackend", "LookupObserver", "map_response", "PATH_RE", "FIELD_RE",
           "CLOSED", "OPEN", "HALF_OPEN", "STATE_VALUES"]

log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATE_VALUES = {CLOSED: 0, OPEN: 1, HALF_OPEN: 2}    # the breaker gauge on /metrics


class CircuitBreaker:
    """closed -> (``failures`` within ``window`` s) -> open -> (``cooldown`` s) -> half_open -> one trial:
    success closes it, failure opens it again for another cool-down."""

    def __init__(self, failures: int = 5, window: float = 30.0, cooldown: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if failures < 1 or window <= 0 or cooldown <= 0:
            raise ValueError("failures >= 1, window > 0 and cooldown > 0")
        self.failures, self.window, self.cooldown, self.clock = failures, window, cooldown, clock
        self._state = CLOSED
        self._recent: list[float] = []     # failure times within the window (closed)
        self._opened_at = 0.0
        self._trial = False                # half_open: the one trial call is in flight
        self.openings = 0

    @property
    def state(self) -> str:
        if self._state == OPEN and self.clock() >= self._opened_at + self.cooldown:
            self._state, self._trial = HALF_OPEN, False
        return self._state

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a trial through (0 when not open)."""
        return max(0.0, self._opened_at + self.cooldown - self.clock()) if self.state == OPEN else 0.0

    def allow(self) -> bool:
        """May a call go to the backend now? (half_open: only the first, the trial)"""
        state = self.state
        if state == CLOSED:
            return True
        if state == HALF_OPEN and not self._trial:
            self._trial = True
            return True
        return False

    def success(self) -> None:
        self._state, self._trial = CLOSED, False
        self._recent.clear()

    def failure(self) -> bool:
        """Count a failure; True when it opened the breaker (the moment to log, once per opening)."""
        now = self.clock()
        state = self.state
        if state == OPEN:
            return False
        if state == HALF_OPEN:
            return self._open(now)
        self._recent = [t for t in self._recent if t > now - self.window] + [now]
        if len(self._recent) >= self.failures:
            return self._open(now)
        return False

    def abandoned(self) -> None:
        """The call ended with no answer either way (the caller hung up): a trial in flight may be retried."""
        self._trial = False

    def _open(self, now: float) -> bool:
        self._state, self._opened_at, self._trial = OPEN, now, False
        self._recent.clear()
        self.openings += 1
        return True


class LookupObserver(Protocol):
    """Where a guarded backend reports (ivr/app/metrics.py ``Metrics`` implements it)."""

    def lookup_done(self, backend: str, seconds: float, error: str | None) -> None: ...

    def lookup_breaker(self, backend: str, state: str) -> None: ...


class GuardedBackend:
    """``inner`` behind a circuit breaker and at most ``max_concurrent`` calls in flight.

    Failures of kind ``params`` (the call lacks what the URL needs) are the menu's, not the backend's: they do
    not count towards the breaker.
    """

    def __init__(self, name: str, inner: LookupBackend, breaker: CircuitBreaker, max_concurrent: int = 10,
                 observer: LookupObserver | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.name, self.inner, self.breaker, self.observer, self.clock = name, inner, breaker, observer, clock
        self.operations = inner.operations
        self.max_concurrent = max_concurrent
        self._slots = asyncio.Semaphore(max_concurrent)
        self._reported = ""
        self._report_state()

    async def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            await close()

    async def lookup(self, operation: str, params: Mapping[str, str]) -> dict[str, Any] | None:
        if not self.breaker.allow():
            self._report_state()
            self._done(0.0, "breaker_open")
            raise LookupFailed(f"{self.name}: circuit open (retry in {self.breaker.retry_in():.0f}s)",
                               kind="breaker_open")
        if self._slots.locked():
            self.breaker.abandoned()
            self._done(0.0, "busy")
            raise LookupFailed(f"{self.name}: {self.max_concurrent} look-ups in flight already", kind="busy")
        self._report_state()
        started = self.clock()
        settled = False
        try:
            async with self._slots:    # not locked: taken at once, no wait
                result = await self.inner.lookup(operation, params)
            settled = True
            self.breaker.success()
            self._done(self.clock() - started, None)
            return result
        except LookupFailed as exc:
            settled = True
            if exc.kind == "params":
                self.breaker.abandoned()
            elif self.breaker.failure():
                log.warning("look-up backend %s: circuit opened after %s (%d failures within %.0fs): callers take "
                            "the error branch for %.0fs", self.name, exc, self.breaker.failures, self.breaker.window,
                            self.breaker.cooldown)
            self._done(self.clock() - started, exc.kind)
            raise
        finally:
            if not settled:            # cancelled (the caller hung up, the node's own time-out)
                self.breaker.abandoned()
            self._report_state()

    def _done(self, seconds: float, error: str | None) -> None:
        if self.observer is not None:
            self.observer.lookup_done(self.name, seconds, error)

    def _report_state(self) -> None:
        state = self.breaker.state
        if state != self._reported:
            if self._reported == OPEN and state == HALF_OPEN:
                log.info("look-up backend %s: cool-down over, one trial call decides", self.name)
            elif self._reported in (OPEN, HALF_OPEN) and state == CLOSED:
                log.info("look-up backend %s: circuit closed, answering again", self.name)
            self._reported = state
            if self.observer is not None:
                self.observer.lookup_breaker(self.name, state)
