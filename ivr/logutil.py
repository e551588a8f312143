"""Log-rate limiting: a fault that repeats (Redis down, AMI flapping, bad frames) logs a line now and
then with a count of what it left out, never a line (or a traceback) per occurrence."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable


class RateLimit:
    """Allows one log line per ``interval`` seconds and counts the rest."""

    __slots__ = ("interval", "last", "suppressed", "_clock")

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.last: float | None = None
        self.suppressed = 0
        self._clock = clock

    def allow(self) -> int | None:
        """Number of suppressed calls since the last allowed one, or ``None`` if this call must be
        suppressed too."""
        now = self._clock()
        if self.last is not None and now - self.last < self.interval:
            self.suppressed += 1
            return None
        self.last = now
        suppressed, self.suppressed = self.suppressed, 0
        return suppressed

    def log(self, logger: logging.Logger, level: int, msg: str, *args: Any) -> None:
        suppressed = self.allow()
        if suppressed is None:
            return
        if suppressed:
            msg += " (%d more like it not logged)"
            args = (*args, suppressed)
        logger.log(level, msg, *args)
