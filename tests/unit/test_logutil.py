"""The controller's log file handler and line format."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from ivr.logutil import BufferedWatchedFileHandler, CallLogFormatter


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
