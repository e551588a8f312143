"""Measured inbound arrival rates, and a queue's share of a line-wide staffing plan (pure, no I/O, no clock).

The callback promise (ivr/balance/forecast.py) needs the rate at which callers keep arriving for the agents
who will make the callback. ``ArrivalWindow`` counts joins over a sliding window (15 minutes by default):
long enough that a single burst does not swing the promise, short enough to follow a surge as it grows.
Until a whole window has passed since counting began, the rate is over the time actually observed, so a
controller restarted mid-surge does not promise as if nobody were calling.

A workforce plan (``balance.forecast``) is for the whole line; ``queue_share`` is the share of it that
serves one queue: each agent of the roster split evenly over the queues they may serve.
"""

from __future__ import annotations

from collections import deque
from typing import Iterable, Sequence

DEFAULT_WINDOW_S = 900.0
MIN_SPAN_S = 60.0      # a rate over less than a minute of observation is too noisy: counted as over a minute


class ArrivalWindow:
    """Arrival times within the last ``window_s`` seconds; ``rate(now)`` in arrivals per second."""

    def __init__(self, window_s: float = DEFAULT_WINDOW_S, since: float | None = None,
                 max_events: int = 100_000) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s!r}")
        self.window_s = window_s
        self.since = since            # when counting began (None: at the first arrival)
        self.max_events = max_events  # bounded memory whatever the load
        self._times: deque[float] = deque()

    def add(self, t: float) -> None:
        """One arrival at ``t`` (times out of order are accepted; the oldest fall out first)."""
        if self.since is None:
            self.since = t
        self._times.append(t)
        if len(self._times) > self.max_events:
            self._times.popleft()

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.window_s:
            self._times.popleft()

    def count(self, now: float) -> int:
        self._trim(now)
        return sum(1 for t in self._times if t <= now)

    def rate(self, now: float) -> float:
        """Arrivals per second over the window (or over the time observed, if shorter)."""
        n = self.count(now)
        if n == 0:
            return 0.0
        observed = self.window_s if self.since is None else min(self.window_s, now - self.since)
        return n / max(observed, MIN_SPAN_S)


def queue_share(agent_queues: Iterable[Sequence[str]], queue: str, queues: Sequence[str]) -> float:
    """The share of a line's agents who serve ``queue``: each agent counts 1/len(their queues) toward each;
    with no agents on the roster, an even split over ``queues``."""
    total = part = 0.0
    for qs in agent_queues:
        if not qs:
            continue
        total += 1.0
        if queue in qs:
            part += 1.0 / len(qs)
    if total == 0:
        return 1.0 / len(queues) if queue in queues else 0.0
    return part / total
