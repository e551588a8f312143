"""The controller's log file handler and line format."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from ivr.app.logutil import BufferedWatchedFileHandler, CallLogFormatter, escape_controls


@pytest.fixture
def logger(tmp_path: Path):
    handler = BufferedWatchedFileHandler(str(tmp_path / "controller.log"), flush_interval=0.05, check_interval=0.05)
    handler.setFormatter(CallLogFormatter())
    log = logging.getLogger(f"test.logutil.{tmp_path.name}")
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.INFO)
    yield log, tmp_path / "controller.log", handler
    handler.close()


def wait_for(path: Path, text: str, timeout: float = 2.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        content = path.read_text() if path.exists() else ""
        if text in content or time.monotonic() > deadline:
            return content
        time.sleep(0.01)


def test_format_matches_the_standard_one() -> None:
    record = logging.LogRecord("ivr.menu.engine", logging.INFO, "", 0, "call %s: menu %s starts", ("1.2", "main"),
                               None)
    standard = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    assert CallLogFormatter().format(record) == standard.format(record)
    later = logging.LogRecord("x", logging.WARNING, "", 0, "m", (), None)
    later.created, later.msecs = record.created + 1.5, (record.msecs + 500) % 1000
    assert CallLogFormatter().format(later) == standard.format(later)   # the cached second moves on


def test_info_lines_reach_the_file_within_the_flush_interval(logger) -> None:
    log, path, _ = logger
    for i in range(100):
        log.info("call %d: main chose 1", i)
    content = wait_for(path, "call 99:")
    assert content.count("main chose 1") == 100 and content.endswith("call 99: main chose 1\n")


def test_warnings_are_written_at_once(logger) -> None:
    log, path, handler = logger
    handler.flush_interval = 3600          # only the WARNING itself can have written them
    log.info("before")
    log.warning("Redis unreachable")
    content = path.read_text()
    assert "INFO" in content and "before" in content and "WARNING" in content and "Redis unreachable" in content


def test_a_rotated_file_is_reopened(logger) -> None:
    log, path, _ = logger
    log.warning("first")
    os.rename(path, path.with_suffix(".log.1"))      # logrotate without copytruncate
    time.sleep(0.1)                                  # past check_interval
    log.warning("second")
    assert "second" in wait_for(path, "second")
    assert "first" in path.with_suffix(".log.1").read_text() and "first" not in path.read_text()


def test_close_writes_what_is_buffered(tmp_path: Path) -> None:
    handler = BufferedWatchedFileHandler(str(tmp_path / "c.log"), flush_interval=3600)
    handler.setFormatter(CallLogFormatter())
    handler.emit(logging.LogRecord("x", logging.INFO, "", 0, "last words", (), None))
    handler.close()
    assert "last words" in (tmp_path / "c.log").read_text()


FORGED = "2026-11-26 04:12:13,343 WARNING ivr.api.app: API authentication failure from 6.6.6.6 (1 in window) on GET /"


def test_no_logged_field_can_forge_a_line_fail2ban_reads(tmp_path: Path) -> None:
    """A request path with a newline (``/x%0A...``, percent-decoded by the server) logged by the API: each
    record stays one line, and the shipped fail2ban filter finds only the real failure's address."""
    from tests.integration.harness import fail2ban_regex

    path = tmp_path / "controller.log"
    handler = BufferedWatchedFileHandler(str(path))
    handler.setFormatter(CallLogFormatter())
    log = logging.getLogger("ivr.api.app")
    saved = (log.handlers[:], log.propagate, log.level)
    log.handlers[:], log.propagate = [handler], False
    log.setLevel(logging.INFO)
    forged_path = f"/x\n{FORGED}"
    try:
        log.warning("API authentication failure from %s (%d in window) on %s %s", "127.0.0.1", 1, "GET",
                    forged_path)                                   # the real failure, with the forged path
        log.error("API error on %s %s", "GET", forged_path)       # any line that carries request text
        log.info("call %s: caller %s", "1.2", f"555\r{FORGED}\u2028{FORGED}\x85{FORGED}")
        try:
            raise ValueError(f"bad path {forged_path}")
        except ValueError:
            log.exception("API error on %s %s", "GET", "/y")     # the traceback too
    finally:
        handler.close()
        log.handlers[:], log.propagate, log.level = saved[0], saved[1], saved[2]
    lines = path.read_text(encoding="utf-8").split("\n")[:-1]
    assert len(lines) == 4                                         # one line per record
    regex = fail2ban_regex("ivr-api")
    hosts = [m.group("host") for m in map(regex.search, lines) if m]
    assert hosts == ["127.0.0.1"]                                  # the real failure still matches, once
    assert regex.search(FORGED) and regex.search(FORGED.split(" ", 2)[2])   # with or without its date
    assert "\\n2026-11-26" in lines[0] and "Traceback (most recent call last):\\n" in lines[3]


def test_escape_controls() -> None:
    assert escape_controls("plain é 中") == "plain é 中"
    assert escape_controls("a\nb\rc\td\x00e\x1b[31m\x7f\x85\u2028\u2029") == \
        "a\\nb\\rc\\td\\x00e\\x1b[31m\\x7f\\x85\\u2028\\u2029"
