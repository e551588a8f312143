"""Fakes the unit tests share (the real things are proven in tests/integration)."""

from __future__ import annotations

import asyncio
from typing import Any


class FakeAmi:
    """An AMI client that records the actions sent and answers Success."""

    connected = True

    def __init__(self) -> None:
        self.actions: list[tuple[str, dict[str, Any]]] = []
        self.ready = asyncio.Event()
        self.ready.set()

    async def action(self, name: str, fields: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
        self.actions.append((name, dict(fields)))
        return {"Response": "Success"}
