from __future__ import annotations

import shutil
from pathlib import Path
from typing import AsyncIterator, Iterator

import pytest

from ivr.devtools.stack import start_scratch_redis
from ivr.store.redis_store import Store

from .harness import TestStack, start_test_stack, stop_test_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestStack]:
    ts = start_test_stack(tmp_path_factory.mktemp("stack"))
    try:
        yield ts
    finally:
        stop_test_stack(ts)


@pytest.fixture
async def redis_url(tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a scratch Redis of its own (no password, no persistence), stopped after the test."""
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed: run `bash scripts/install.sh` first")
    proc, port = start_scratch_redis(tmp_path)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[Store]:
    """A Store on a scratch Redis of its own, closed after the test."""
    s = Store.from_url(redis_url, "t")
    try:
        yield s
    finally:
        await s.close()
