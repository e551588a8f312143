"""Log-rate limiting: a fault that repeats (Redis down, AMI flapping, bad frames) logs a line now and
then with a count of what it left out, never a line (or a traceback) per occurrence.

The line format: one record is one line, always. Request paths, caller numbers, SIP headers and exception
messages come from outside; a newline among them would start a line of the caller's choosing, one that
fail2ban (docs/fail2ban/) would read as a failed login from any address it names. The formatter escapes
every control character of the finished record (a traceback too: ``\n`` between its lines), so no field
can forge a line whatever logs it.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
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


# C0 controls, DEL, C1 controls, and the Unicode line and paragraph separators (str.splitlines breaks there)
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(m: re.Match[str]) -> str:
    ch = m.group()
    return _NAMED.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")


def escape_controls(text: str) -> str:
    """``text`` with every control character written as an escape (``\n``, ``\x1b``, ``\u2028``)."""
    return _CONTROL.sub(_escape_one, text) if _CONTROL.search(text) else text


class CallLogFormatter(logging.Formatter):
    """The controller's line format, ``2026-11-26 04:12:13,343 INFO name: message``, with the
    date-and-time part formatted once a second instead of once a line, and every control character of
    the record escaped (one record, one line: see the top of this module)."""

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

    def format(self, record: logging.LogRecord) -> str:
        return escape_controls(super().format(record))


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
        with self.lock:   # type: ignore[union-attr]  # logging.Handler.createLock set it in __init__
            self._dirty = False
            if self.stream and hasattr(self.stream, "flush"):
                self.stream.flush()

    def close(self) -> None:
        self._stop_flushing.set()
        super().close()
