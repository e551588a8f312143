from __future__ import annotations

from typing import Iterator

import pytest

from .harness import TestStack, start_test_stack, stop_test_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestStack]:
    ts = start_test_stack(tmp_path_factory.mktemp("stack"))
    try:
        yield ts
    finally:
        stop_test_stack(ts)
