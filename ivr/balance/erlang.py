"""Erlang B / Erlang C queueing formulas and a live per-caller wait estimate.

Design: everything here is a pure function of floats and ints (standard
library only) so the balancer can call it freely from the event loop.
Erlang B is computed with the stable recursion B(k) = A*B(k-1) / (k + A*B(k-1)),
which never forms factorials or powers, so it stays in [0, 1] and costs O(N)
even for thousands of agents; Erlang C and everything built on it derives
from B.  The staffing searches carry that recursion forward one agent at a
time, so finding the right head-count is O(answer), not O(answer^2).
``estimate_wait`` models the callers ahead as a pure-death process
(hypoexponential wait) and reports percentiles from a gamma distribution
with the same mean and variance (exact when nobody abandons).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "WaitEstimate", "agents_for_asa", "agents_for_service_level", "average_speed_of_answer",
    "erlang_b", "erlang_c", "estimate_wait", "occupancy", "service_level", "traffic_intensity",
]


def _finite(name: str, value: float, *, positive: bool = False) -> float:
    """Return ``value`` as float; ValueError naming ``name`` if bad."""
    v = float(value)
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        need = "a finite number > 0" if positive else "a finite number >= 0"
        raise ValueError(f"{name} must be {need}, got {value!r}")
    return v


def _count(name: str, value: int, *, minimum: int = 0) -> int:
    """Return ``value`` as int (TypeError for non-integers); ValueError if too small."""
    n = operator.index(value)
    if n < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return n


def _blocking_series(traffic: float) -> Iterator[tuple[int, float]]:
    """Yield (N, Erlang B for N agents) for N = 0, 1, 2, ... indefinitely."""
    b, n = 1.0, 0
    while True:
        yield n, b
        n += 1
        ab = traffic * b
        b = ab / (n + ab)


def _c_from_b(traffic: float, agents: int, b: float) -> float:
    """Erlang C from Erlang B for the same traffic and agents."""
    if traffic >= agents:
        return 1.0
    return agents * b / (agents - traffic * (1.0 - b))


def erlang_b(traffic: float, agents: int) -> float:
    """Probability that a call is blocked (lost) with ``agents`` servers and no queue."""
    a = _finite("traffic", traffic)
    n = _count("agents", agents)
    b = 1.0
    for k in range(1, n + 1):
        ab = a * b
        b = ab / (k + ab)
    return b


def erlang_c(traffic: float, agents: int) -> float:
    """Probability that a call has to wait (M/M/N); 1.0 when traffic >= agents."""
    a = _finite("traffic", traffic)
    n = _count("agents", agents)
    return _c_from_b(a, n, erlang_b(a, n))


def _sl(traffic: float, agents: int, c: float, aht: float, target: float) -> float:
    if traffic >= agents:
        return 0.0
    return max(0.0, 1.0 - c * math.exp(-(agents - traffic) * target / aht))


def service_level(traffic: float, agents: int, aht: float, target: float) -> float:
    """P(wait <= ``target`` seconds) for a Poisson stream; 0.0 when traffic >= agents."""
    a = _finite("traffic", traffic)
    n = _count("agents", agents)
    h = _finite("aht", aht, positive=True)
    t = _finite("target", target)
    return _sl(a, n, erlang_c(a, n), h, t)


def average_speed_of_answer(traffic: float, agents: int, aht: float) -> float:
    """Mean wait over all calls, in seconds; ``inf`` when traffic >= agents."""
    a = _finite("traffic", traffic)
    n = _count("agents", agents)
    h = _finite("aht", aht, positive=True)
    if a >= n:
        return math.inf
    return erlang_c(a, n) * h / (n - a)


def occupancy(traffic: float, agents: int) -> float:
    """Fraction of agent time spent on calls: traffic / agents, capped at 1.0."""
    a = _finite("traffic", traffic)
    n = _count("agents", agents, minimum=1)
    return min(1.0, a / n)


def traffic_intensity(calls: float, period_s: float, aht: float) -> float:
    """Offered load in Erlangs: ``calls`` arriving in ``period_s`` seconds, each ``aht`` s."""
    c = _finite("calls", calls)
    p = _finite("period_s", period_s, positive=True)
    h = _finite("aht", aht)
    return c * h / p


def agents_for_service_level(
    traffic: float, aht: float, target: float, goal: float, max_agents: int = 10_000
) -> int:
    """Smallest agent count (>= 1) whose service level is >= ``goal`` (0 < goal < 1).

    Raises ValueError if even ``max_agents`` agents cannot reach the goal.
    """
    a = _finite("traffic", traffic)
    h = _finite("aht", aht, positive=True)
    t = _finite("target", target)
    g = float(goal)
    if not 0.0 < g < 1.0:
        raise ValueError(f"goal must be strictly between 0 and 1, got {goal!r}")
    cap = _count("max_agents", max_agents, minimum=1)
    for n, b in _blocking_series(a):
        if n > cap:
            break
        if n >= 1 and n > a and _sl(a, n, _c_from_b(a, n, b), h, t) >= g:
            return n
    raise ValueError(f"service level {g} at {t}s not reachable with max_agents={cap}")


def agents_for_asa(traffic: float, aht: float, asa_goal: float, max_agents: int = 10_000) -> int:
    """Smallest agent count (>= 1) whose average speed of answer is <= ``asa_goal`` s.

    Raises ValueError if even ``max_agents`` agents cannot reach the goal.
    """
    a = _finite("traffic", traffic)
    h = _finite("aht", aht, positive=True)
    goal = _finite("asa_goal", asa_goal, positive=True)
    cap = _count("max_agents", max_agents, minimum=1)
    for n, b in _blocking_series(a):
        if n > cap:
            break
        if n >= 1 and n > a and _c_from_b(a, n, b) * h / (n - a) <= goal:
            return n
    raise ValueError(f"ASA {goal}s not reachable with max_agents={cap}")


@dataclass(frozen=True, slots=True)
class WaitEstimate:
    """Live wait estimate for one queued caller, all in seconds."""

    seconds: float  # expected wait for this caller
    low: float  # 20th percentile
    high: float  # 80th percentile
    method: str  # "free-agent", "position" or "no-agents"


def _gamma_p(shape: float, x: float) -> float:
    """Regularised lower incomplete gamma P(shape, x) (series / continued fraction)."""
    if x <= 0.0:
        return 0.0
    log_front = shape * math.log(x) - x - math.lgamma(shape)
    if x < shape + 1.0:  # series converges fast here
        term = total = 1.0 / shape
        a = shape
        for _ in range(10_000):
            a += 1.0
            term *= x / a
            total += term
            if term < total * 1e-16:
                break
        return min(1.0, total * math.exp(log_front))
    tiny = 1e-300  # Lentz continued fraction for Q = 1 - P
    b = x + 1.0 - shape
    c, d = 1.0 / tiny, 1.0 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - shape)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return max(0.0, 1.0 - math.exp(log_front) * h)


def _gamma_quantile(shape: float, scale: float, q: float) -> float:
    """Quantile ``q`` of a gamma(shape, scale) distribution, by bisection."""
    lo, hi = 0.0, shape + 10.0 * math.sqrt(shape) + 10.0
    while _gamma_p(shape, hi) < q:
        hi *= 2.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if _gamma_p(shape, mid) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * hi:
            break
    return 0.5 * (lo + hi) * scale


def estimate_wait(
    position: int,
    agents_serving: int,
    agents_free: int,
    aht: float,
    abandon_rate_per_s: float = 0.0,
) -> WaitEstimate:
    """Expected wait (with 20th/80th percentiles) for the caller at 1-based ``position``.

    ``agents_serving`` agents each finish a call at rate 1/``aht``; the first
    ``agents_free`` callers are answered at once, so this caller needs
    m = position - agents_free completions.  While k callers are still ahead,
    the next departure comes at rate agents_serving/aht + k*abandon_rate_per_s
    (callers ahead may hang up); the wait is the sum of those exponential
    stages.  The caller's own abandonment is not modelled: this is the wait
    until answered if they stay.  Pass as ``agents_serving`` every agent who
    will answer this queue, including the free ones the callers ahead take.
    """
    pos = _count("position", position, minimum=1)
    serving = _count("agents_serving", agents_serving)
    free = _count("agents_free", agents_free)
    h = _finite("aht", aht, positive=True)
    theta = _finite("abandon_rate_per_s", abandon_rate_per_s)
    if free >= pos:
        return WaitEstimate(0.0, 0.0, 0.0, "free-agent")
    if serving == 0:
        return WaitEstimate(math.inf, math.inf, math.inf, "no-agents")
    mu = serving / h
    mean = var = 0.0
    for k in range(pos - free):  # k = callers still ahead at that stage
        rate = mu + k * theta
        mean += 1.0 / rate
        var += 1.0 / (rate * rate)
    shape, scale = mean * mean / var, var / mean
    low = _gamma_quantile(shape, scale, 0.2)
    high = _gamma_quantile(shape, scale, 0.8)
    return WaitEstimate(mean, low, high, "position")
