"""The callback promise a caller hears, from the live picture of one queue (and the plan, if there is one).

The arithmetic is pure and shared with the simulator (ivr/balance/forecast.py); this service only gathers
its inputs at the moment a caller is offered or books a callback: callers waiting in the queue (AMI state),
callbacks pending for it (ahead in line: Redis, through the callback store), the measured handle time, the
agents serving it, and the inbound arrival rate into it over a sliding window (QueueCallerJoin events, not
counting callbacks dialled back into a queue: those are the work being promised, already counted as
callbacks ahead). Without a workforce plan (``balance.forecast``) the live picture is held for the hours
ahead (persistence); with one, the plan's later hours follow, scaled to this queue's share of the roster.

A promise that cannot be computed in time (Redis slow, AMI down) is no promise: no callback is offered,
and a caller who asked for one explicitly is booked without a deadline.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, Sequence
from zoneinfo import ZoneInfo

from ..core import names as ev
from ..balance.arrivals import ArrivalWindow, queue_share
from ..balance.forecast import Interval, Promise, callback_promise, offer_callback, outlook_from_hours
from ..app.config import ForecastConfig, PromiseConfig
from ..asterisk.state import CallCenterState

log = logging.getLogger(__name__)

PENDING_TIMEOUT_S = 2.0
CALLBACK_ACCOUNT_PREFIX = "cb:"    # the AccountCode of a callback's call (ivr/callbacks/service.py account_code)


@dataclass(frozen=True, slots=True)
class LiveQueue:
    """The live picture of one queue that a promise is computed from."""
    waiting: int
    aht: float
    serving: int
    arrivals_per_s: float


class PromiseService:
    """``callback_promise(queue)`` from the live state; ``promised`` counts a promise told to a caller."""

    def __init__(self, settings: PromiseConfig, forecast: ForecastConfig | None, state: CallCenterState,
                 pending_by_queue: Callable[[], Awaitable[Mapping[str, int]]], queues: Sequence[str], *,
                 agent_queues: Callable[[], Sequence[Sequence[str]]] = lambda: (),
                 connected: Callable[[], bool] = lambda: True, observe: Callable[[float], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.forecast = forecast
        self.state = state
        self.queues = tuple(queues)
        self._pending_by_queue = pending_by_queue
        self._agent_queues = agent_queues
        self._connected = connected
        self._observe = observe
        self.clock = clock
        started = clock()
        self.arrivals = {q: ArrivalWindow(settings.window_s, since=started) for q in self.queues}
        self._tz = ZoneInfo(forecast.timezone) if forecast is not None else datetime.timezone.utc

    # ------------------------------------------------------------ AMI feed
    def on_event(self, e: Mapping[str, Any]) -> None:
        """Count an inbound caller joining an agent queue (a callback dialled back in is not an arrival)."""
        if e.get("Event") != ev.QUEUE_CALLER_JOIN:
            return
        window = self.arrivals.get(str(e.get("Queue", "")))
        if window is None or str(e.get("AccountCode", "")).startswith(CALLBACK_ACCOUNT_PREFIX):
            return
        window.add(self.clock())

    # ------------------------------------------------------------ the picture
    def live(self, queue: str) -> LiveQueue | None:
        """Callers waiting, handle time (measured once 5 calls were answered), agents serving (members not
        paused and reachable) and arrivals per second; None when the queue is unknown or AMI is away."""
        q = self.state.queues.get(queue)
        if q is None or not self._connected():
            return None
        serving = sum(1 for m in q.members.values()
                      if not m.paused_here and m.status not in (ev.DEVICE_UNAVAILABLE, ev.DEVICE_INVALID))
        s = q.stats
        aht = s.total_talk / s.answered if s.answered >= 5 and s.total_talk > 0 else self.settings.default_aht
        window = self.arrivals.get(queue)
        rate = window.rate(self.clock()) if window is not None else 0.0
        return LiveQueue(len(q.callers), aht, serving, rate)

    def outlook(self, queue: str, now: float) -> list[Interval]:
        """The plan's hours from now, scaled to this queue: agents by its share of the roster, arrivals by its
        share of the measured joins (the roster share while nothing was measured). Empty without a plan."""
        f = self.forecast
        if f is None:
            return []
        agents_share = queue_share(self._agent_queues(), queue, self.queues)
        total = sum(w.count(now) for w in self.arrivals.values())
        mine = self.arrivals[queue].count(now) if queue in self.arrivals else 0
        arrivals_share = mine / total if total else agents_share
        local = datetime.datetime.fromtimestamp(now, self._tz)
        since_midnight = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
        hours = outlook_from_hours(since_midnight, f.agents_by_hour, f.arrivals_by_hour, f.share_to_agents)
        return [Interval(iv.seconds, iv.agents * agents_share, iv.arrivals_per_s * arrivals_share) for iv in hours]

    async def callback_promise(self, queue: str) -> Promise:
        """The promise for a callback to ``queue`` requested now (``seconds`` None: none can be made)."""
        live = self.live(queue)
        if live is None:
            return Promise(None, None, f"{queue}: no live picture of the queue (AMI down or unknown queue)")
        try:
            pending = await asyncio.wait_for(self._pending_by_queue(), PENDING_TIMEOUT_S)
        except Exception as exc:   # Redis away or slow: nothing is promised rather than a guess
            return Promise(None, None, f"{queue}: callbacks ahead unknown ({exc or type(exc).__name__})")
        p = self.settings
        promise = callback_promise(waiting=live.waiting, callbacks_ahead=int(pending.get(queue, 0)), aht=live.aht,
                                   agents=live.serving, arrivals_per_s=live.arrivals_per_s,
                                   outlook=self.outlook(queue, self.clock()), occupancy=p.occupancy,
                                   margin=p.margin, round_s=p.round_s, min_s=p.min_s, max_s=p.max_s)
        why = (f"{queue}: {live.serving} serving, {live.arrivals_per_s * 3600:.0f} arrivals/h, AHT {live.aht:.0f}s, "
               f"{'plan' if self.forecast is not None else 'live held'}; {promise.why}")
        return Promise(promise.seconds, promise.forecast_s, why)

    def offer(self, estimate: float | None, promise: Promise, over: float | str | None) -> bool:
        """Whether a queue node with ``callback_over: over`` offers a callback (no promise: no offer)."""
        return offer_callback(estimate, promise, over, auto_over_s=self.settings.offer_over_s,
                              auto_ratio=self.settings.offer_ratio)

    def might_offer(self, estimate: float | None, over: float | str | None) -> bool:
        """Cheap pre-check before a promise is computed: False when no promise could make an offer."""
        if over is None or estimate is None or math.isnan(estimate):
            return False
        threshold = self.settings.offer_over_s if over == "auto" else float(over)
        return estimate > threshold

    def promised(self, queue: str, seconds: float) -> None:
        """A promise was told to a caller and stored with their callback."""
        if self._observe is not None:
            self._observe(seconds)
