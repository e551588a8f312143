"""What a caller is promised: the callback promise and the callback offer, from a forecast of free capacity.

Pure functions of numbers (no I/O, no clock), shared by the live menu (through the controller) and
the surge simulator, so the promise the simulator measures is the one a caller hears.

The model. Agents serving ``agents`` can do ``agents * occupancy`` agent-seconds of work per second
(``occupancy`` below 1: a queue needs slack to keep its waits short). Inbound callers keep coming at
``arrivals`` calls per second, each needing ``aht`` agent-seconds; whatever is left is **free
capacity**, and only free capacity makes callbacks (the balancing policy dispatches a callback only
into idle agents nobody waiting needs). The next callback is made once the free capacity has
cleared the callers waiting now, the callbacks ahead of it in line, and itself. The promise is
that time, with a margin, rounded up to what a caller is told ("within 20 minutes").

Where the load and staffing ahead come from: an ``Outlook`` (intervals of expected agents and
arrivals: a workforce plan, a profile's shifts), else persistence (today's agents and arrival
rate, held). With persistence a line in overload (arrivals above capacity) can promise nothing;
with an outlook it can promise the afternoon.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

DEFAULT_OCCUPANCY = 0.85        # free capacity counts agents' time above this share as slack, not spare
DEFAULT_MARGIN = 1.2            # the promise is the forecast x 1.2 ...
DEFAULT_ROUND_S = 300.0         # ... rounded up to 5 minutes
DEFAULT_MIN_S = 900.0           # never promise under 15 minutes (a dial and a free agent take time)
DEFAULT_MAX_S = 4 * 3600.0      # nor over 4 hours: beyond that the menu does not offer a callback
DEFAULT_OFFER_OVER_S = 60.0     # "auto" offer: a callback is offered above this estimated wait ...
DEFAULT_OFFER_RATIO = 0.1       # ... and above this share of the promise (a 2 h promise: from a 12 min wait)


@dataclass(frozen=True, slots=True)
class Interval:
    """Expected staffing and load over ``seconds`` from the end of the previous interval."""
    seconds: float
    agents: float               # agents serving (logged in, not paused, reachable)
    arrivals_per_s: float       # inbound calls per second that need an agent


@dataclass(frozen=True, slots=True)
class Promise:
    seconds: float | None       # what the caller is told (None: no promise can be made within max_s)
    forecast_s: float | None    # the unrounded forecast of when the callback is made
    why: str                    # one line, for the log and the audit


def free_rate(agents: float, arrivals_per_s: float, aht: float, occupancy: float = DEFAULT_OCCUPANCY) -> float:
    """Agent-seconds per second left for callbacks and backlog once the inbound load is served."""
    if aht <= 0 or not math.isfinite(aht):
        raise ValueError(f"aht must be a finite number > 0, got {aht!r}")
    return max(0.0, agents * occupancy - arrivals_per_s * aht)


def clear_time(work: float, intervals: Sequence[Interval], aht: float, occupancy: float = DEFAULT_OCCUPANCY,
               horizon: float = math.inf) -> float | None:
    """Seconds until ``work`` agent-seconds are done out of the free capacity of ``intervals`` (the last
    one held to ``horizon``); None when they are not done within ``horizon``."""
    done, t = 0.0, 0.0
    for i, iv in enumerate(intervals):
        rate = free_rate(iv.agents, iv.arrivals_per_s, aht, occupancy)
        span = (horizon - t) if i == len(intervals) - 1 else min(iv.seconds, horizon - t)
        if span <= 0:
            break
        if rate > 0 and done + rate * span >= work:
            return t + (work - done) / rate
        done += rate * span
        t += span
    return None


def callback_promise(*, waiting: int, callbacks_ahead: int, aht: float, agents: float, arrivals_per_s: float,
                     outlook: Sequence[Interval] = (), occupancy: float = DEFAULT_OCCUPANCY,
                     margin: float = DEFAULT_MARGIN, round_s: float = DEFAULT_ROUND_S,
                     min_s: float = DEFAULT_MIN_S, max_s: float = DEFAULT_MAX_S) -> Promise:
    """The promise for a callback requested now.

    ``waiting``: callers in line for the same agents now (they are served first); ``callbacks_ahead``:
    callbacks requested earlier and not made yet (dispatched oldest place first); ``agents`` and
    ``arrivals_per_s``: the live picture (measured), used for the first interval and held after the
    outlook ends; ``outlook``: intervals after now (a plan), optional."""
    if waiting < 0 or callbacks_ahead < 0:
        raise ValueError("waiting and callbacks_ahead must be >= 0")
    work = (waiting + callbacks_ahead + 1) * aht
    now = Interval(outlook[0].seconds if outlook else math.inf, agents, arrivals_per_s)
    # the live picture replaces the first interval of the outlook (it is what is true now)
    intervals = [now, *outlook[1:]] if outlook else [now]
    horizon = max_s / margin
    t = clear_time(work, intervals, aht, occupancy, horizon)
    ahead = f"{waiting} waiting + {callbacks_ahead} callbacks ahead"
    if t is None:
        return Promise(None, None, f"{ahead}: no free capacity to make it within {max_s / 60:.0f} min")
    promised = min(max_s, max(min_s, math.ceil(t * margin / round_s) * round_s))
    return Promise(promised, t, f"{ahead}: made in ~{t / 60:.0f} min by forecast, promised {promised / 60:.0f} min")


def offer_callback(estimated_wait: float | None, promise: Promise, over: float | str | None, *,
                   auto_over_s: float = DEFAULT_OFFER_OVER_S, auto_ratio: float = DEFAULT_OFFER_RATIO) -> bool:
    """Whether the queue node offers a callback to a caller facing ``estimated_wait``.

    ``over`` is the node's ``callback_over``: a number of seconds (fixed threshold, as before), ``"auto"``
    (above ``auto_over_s`` and above ``auto_ratio`` of the promise: the longer the promise, the longer
    the wait it is offered against), or None (never). No offer without a promise that can be kept."""
    if over is None or estimated_wait is None or promise.seconds is None:
        return False
    if over == "auto":
        return estimated_wait > max(auto_over_s, auto_ratio * promise.seconds)
    return estimated_wait > float(over)


MIN_HISTORY = 5                 # answered calls before app_queue's holdtime is trusted


def spoken_and_offer(model: float | None, holdtime: float | None) -> tuple[float | None, float | None]:
    """Which estimate a caller hears and which one the callback offer looks at.

    ``holdtime``: app_queue's moving average of hold times (None until the queue has ``MIN_HISTORY``
    answers); ``model``: the pure-death estimate from the callers ahead. On the calibrated crisis day
    the holdtime measures best (docs/crisis-day.md), so it is what the caller hears once it has a
    history; the offer looks at the larger of the two, because the moving average lags a queue that
    builds quickly and an offer that waits for it comes too late."""
    spoken = holdtime if holdtime is not None else model
    known = [x for x in (model, holdtime) if x is not None]
    return spoken, (max(known) if known else None)


def outlook_from_hours(now_s: float, agents_by_hour: Sequence[float], arrivals_by_hour: Sequence[float],
                       share_to_agents: float = 1.0) -> list[Interval]:
    """An outlook from hourly plans (24 values each, hour 0..23 of the day; ``now_s`` seconds since
    midnight): the rest of this hour, then each later hour of the day (the plan of the last hour held)."""
    if len(agents_by_hour) != 24 or len(arrivals_by_hour) != 24:
        raise ValueError("hourly plans need 24 values")
    h = int(now_s // 3600) % 24
    out = [Interval((h + 1) * 3600.0 - now_s % 86400.0, agents_by_hour[h], arrivals_by_hour[h] * share_to_agents / 3600.0)]
    for k in range(h + 1, 24):
        out.append(Interval(3600.0, agents_by_hour[k], arrivals_by_hour[k] * share_to_agents / 3600.0))
    return out
