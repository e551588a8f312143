"""One live picture a second, shared by every reader.

``/api/v1/live`` and each dashboard's event stream used to build the picture themselves once a second (the
state snapshot, every campaign, the pending callbacks), so ten open dashboards cost ten times the Redis work
and the event loop time during a surge, when both are scarce. The picture is now built at most once per
``max_age`` and serialised once; whoever asks while it is being built waits for that same build. A reader
that goes away (a closed browser tab) never cancels a build the others wait for.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Awaitable, Callable

Picture = dict[str, Any]


class LiveFeed:
    """The newest live picture (and its JSON), rebuilt on demand when older than ``max_age`` seconds."""

    def __init__(self, build: Callable[[], Awaitable[Picture]], max_age: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._build = build
        self.max_age = max_age
        self._clock = clock
        self._current: tuple[Picture, str] | None = None
        self._built_at = float("-inf")
        self._building: asyncio.Future[tuple[Picture, str]] | None = None
        self.builds = 0   # pictures built so far (for tests and curiosity)

    async def snapshot(self) -> tuple[Picture, str]:
        """The picture and its JSON text; built now only if the last one is ``max_age`` old."""
        if self._current is not None and self._clock() - self._built_at < self.max_age:
            return self._current
        if self._building is None:
            self._building = asyncio.ensure_future(self._refresh())
            self._building.add_done_callback(_consume)
        return await asyncio.shield(self._building)

    async def _refresh(self) -> tuple[Picture, str]:
        started = self._clock()
        try:
            picture = await self._build()
            self._current = (picture, json.dumps(picture))
            self._built_at = started
            self.builds += 1
            return self._current
        finally:
            self._building = None


def _consume(fut: asyncio.Future[Any]) -> None:
    """Retrieve a failed build's exception when every reader has gone (no "never retrieved" warning)."""
    if not fut.cancelled():
        fut.exception()
