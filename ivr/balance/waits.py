"""Live wait figures the menus ask for while a caller is in the IVR: the expected wait of a queue, what
app_queue would announce, and a returning caller's place. Read from the live AMI state only."""

from __future__ import annotations

from typing import Iterable, Protocol

from ..asterisk.state import CallCenterState
from ..core import names as ev
from .erlang import estimate_wait
from .forecast import MIN_HISTORY


class Link(Protocol):
    @property
    def connected(self) -> bool: ...


class Places(Protocol):
    """Where a returning caller's kept place puts them (``Continuity.queue_position``)."""
    def queue_position(self, waiting: Iterable[tuple[str, float]], since: float) -> int: ...


class WaitEstimates:
    """Wait estimates from the live queues (None whenever AMI is down or the queue unknown)."""

    def __init__(self, state: CallCenterState, ami: Link, places: Places) -> None:
        self._state = state
        self._ami = ami
        self._places = places

    def queue_position(self, queue: str, since: float) -> int | None:
        """Queue() position for a returning caller whose place dates from ``since`` (None: no queue known)."""
        q = self._state.queues.get(queue)
        if q is None:
            return None
        return self._places.queue_position(((uid, c.joined_at) for uid, c in q.callers.items()), since)

    def asterisk_estimate(self, queue: str) -> float | None:
        """What app_queue would announce to a caller joining ``queue`` now: its average hold time
        (None until the queue has answered ``MIN_HISTORY`` calls: a moving average of fewer means little)."""
        q = self._state.queues.get(queue)
        if q is None or not self._ami.connected or q.stats.answered < MIN_HISTORY:
            return None
        return float(q.asterisk_holdtime)

    def estimate_wait(self, queue: str, default_aht: float = 180.0) -> float | None:
        """Expected wait for a caller joining ``queue`` now (None when unknown)."""
        if not self._ami.connected:
            return None
        q = self._state.queues.get(queue)
        if q is None:
            return None
        serving = [m for m in q.members.values()
                   if not m.paused_here and m.status not in (ev.DEVICE_UNAVAILABLE, ev.DEVICE_INVALID)]
        free = sum(1 for m in serving if m.available)
        s = q.stats
        aht = s.total_talk / s.answered if s.answered >= 5 and s.total_talk > 0 else default_aht
        return estimate_wait(len(q.callers) + 1, len(serving), free, aht).seconds
