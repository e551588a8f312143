"""Log-rate limiting: a fault that repeats (Redis down, AMI flapping, bad frames) logs a line now and
then with a count of what it left out, never a line (or a traceback) per occurrence."""

from __future__ import annotations

import logging
import logging.handlers
import threading
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


class CallLogFormatter(logging.Formatter):
    """The controller's line format, ``2026-11-26 04:12:13,343 INFO name: message``, with the
    date-and-time part formatted once a second instead of once a line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(record.created))
            self._second = second
        return f"{self._stamp},{int(record.msecs):03d}"


class BufferedWatchedFileHandler(logging.handlers.WatchedFileHandler):
    """A ``WatchedFileHandler`` (log rotation by logrotate still works) that costs less per line on a busy
    line: the file is checked for rotation at most once per ``check_interval`` seconds instead of once per
    line, and lines are written out by a background flush every ``flush_interval`` seconds (at once for
    WARNING and above, and at exit) instead of one write per line. At most ``flush_interval`` of INFO lines
    can be lost if the process is killed outright."""

    def __init__(self, filename: str, flush_interval: float = 0.2, check_interval: float = 1.0) -> None:
        super().__init__(filename)
        self.flush_interval = flush_interval
        self.check_interval = check_interval
        self._checked = time.monotonic()
        self._dirty = False
        self._stop_flushing = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="log-flush", daemon=True)
        self._flusher.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            now = time.monotonic()
            if now - self._checked >= self.check_interval:
                self._checked = now
                self.reopenIfNeeded()
            if self.stream is None:
                self.stream = self._open()
            self.stream.write(self.format(record) + self.terminator)
            if record.levelno >= logging.WARNING:
                self.stream.flush()
                self._dirty = False
            else:
                self._dirty = True
        except RecursionError:  # pragma: no cover - as logging.StreamHandler does
            raise
        except Exception:
            self.handleError(record)

    def _flush_loop(self) -> None:
        while not self._stop_flushing.wait(self.flush_interval):
            if self._dirty:
                self.flush()

    def flush(self) -> None:
        with self.lock:   # type: ignore[union-attr]
            self._dirty = False
            if self.stream and hasattr(self.stream, "flush"):
                self.stream.flush()

    def close(self) -> None:
        self._stop_flushing.set()
        super().close()
