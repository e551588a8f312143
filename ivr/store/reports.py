"""What the reports read from Redis: the finished call records, the campaigns' attempts and the
dispositions, by time (stream entry ids are the time an entry was written). Read only."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from .errors import Translating
from .keys import Keys


def _stream_id(ts: float) -> str:
    return str(max(0, int(ts * 1000)))


class ReportStore(Translating):
    """Time ranges of the streams the reports are built from."""

    def __init__(self, client: aioredis.Redis, keys: Keys) -> None:
        self.redis, self.keys = client, keys

    @classmethod
    def wrap(cls, db: Any, prefix: str | None = None) -> ReportStore:
        """The report store for ``db``: a ReportStore, a ``Store`` (its ``reports``), or (as the functions
        of ivr.reports.service were once called) a Redis client and a key prefix."""
        if isinstance(db, ReportStore):
            return db
        sub = getattr(db, "reports", None)
        if isinstance(sub, ReportStore):
            return sub
        return cls(db, Keys(prefix or "ivr"))

    async def _read_stream(self, key: str, start: float, end: float, batch: int = 5000) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        lo = _stream_id(start)
        hi = _stream_id(end)
        while True:
            chunk = await self.redis.xrange(key, min=lo, max=hi, count=batch)
            out.extend(dict(f) for _, f in chunk)
            if len(chunk) < batch:
                return out
            last = chunk[-1][0]
            ms, seq = last.split("-")
            lo = f"{ms}-{int(seq) + 1}"

    async def calls(self, start: float, end: float) -> list[dict[str, Any]]:
        """Finished call records written in [start, end]."""
        return await self._read_stream(self.keys.calls, start, end)

    async def dispositions(self, start: float, end: float) -> list[dict[str, Any]]:
        return await self._read_stream(self.keys.dispositions, start, end)

    async def campaign_ids(self) -> list[str]:
        return sorted(await self.redis.smembers(self.keys.campaigns))

    async def attempts(self, cid: str, start: float, end: float) -> list[dict[str, Any]]:
        """A campaign's dial attempts written in [start, end]."""
        return await self._read_stream(self.keys.campaign_attempts(cid), start, end)
