"""The crisis-hour replay's figures: from the call records, from the simulator, and the comparison.

The stack's figures come from the records the controller writes (matched to the trace by number); the
simulator's from ``Simulation(...).summary()`` at normal scale with its times divided by the factor.
The simulator has no self-service, so it is also run without the callers who served themselves on the
stack (their arrivals taken out of its event heap before the run): the same scenario as the replay.
"""

from __future__ import annotations

import heapq
from typing import Any, Iterable, Sequence

from .connect_latency import ConnectLatency, pooled
from .sim_engine import Simulation
from .sim_model import Caller, Profile
from .crisis import TraceCall


def _f(x: Any) -> float | None:
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def summarise_records(calls: Sequence[dict[str, Any]], trace: Sequence[TraceCall]) -> dict[str, Any]:
    """The trace callers' call records (matched by number): offered, self-service, queued, answered,
    abandoned (app_queue timeout = patience ran out, or a hang-up), ASA from join to answer."""
    numbers = {c.number for c in trace}
    mine = [c for c in calls if str(c.get("caller", "")).lstrip("+") in numbers and c.get("kind") != "callback"]
    queued = [c for c in mine if c.get("queue")]
    answered = [c for c in queued if c.get("outcome") == "answered"]
    waits = []
    for c in answered:
        j, a = _f(c.get("joined_at")), _f(c.get("answered_at"))
        waits.append(a - j if j is not None and a is not None else float(c.get("wait") or 0))
    talks = [t for t in (_f(c.get("talk")) for c in answered) if t is not None]   # app_queue's whole seconds
    abandoned = [c for c in queued if c.get("outcome") in ("abandoned", "left_queue")]
    by_outcome: dict[str, int] = {}
    for c in mine:
        by_outcome[str(c.get("outcome"))] = by_outcome.get(str(c.get("outcome")), 0) + 1
    self_service = by_outcome.get("self_service", 0)
    cb_req = by_outcome.get("callback_requested", 0)
    n = len(mine)
    return {"records": n, "offered": len(trace), "queued": len(queued), "answered": len(answered),
            "abandoned": len(abandoned), "abandoned_pct": round(100.0 * len(abandoned) / len(trace), 1) if trace else 0,
            "asa_s": round(sum(waits) / len(waits), 2) if waits else None,
            "max_wait_s": round(max(waits), 1) if waits else None,
            "talk_avg_s": round(sum(talks) / len(talks), 2) if talks else None,
            "self_service": self_service, "self_service_pct": round(100.0 * self_service / n, 1) if n else 0.0,
            "escalated": sum(1 for c in mine if c.get("escalated_from")),
            "callback_requested_records": cb_req, "fallback": sum(1 for c in mine if c.get("fallback") == "1"),
            "by_outcome": by_outcome}


def simulator_prediction(p: Profile, seed: int, hour: int, factor: float,
                         self_served: Iterable[int] = ()) -> dict[str, dict[str, Any]]:
    """``Simulation(...).run().summary()`` of both modes for the hour at normal scale, times divided by
    ``factor``; and ``balanced_ss``: balanced without the callers (by index in ``make_callers``) who served
    themselves in the replay (for a profile without a menu section, where the simulator has no
    self-service; with one it serves the same callers itself), abandonment over all the hour's callers."""
    gone = set(self_served)
    out = {}
    for name, mode in (("static", "static"), ("balanced", "balanced"), ("balanced_ss", "balanced")):
        if name == "balanced_ss" and not gone:
            continue
        sim = Simulation(p, mode, seed, (hour, hour + 1))
        if name == "balanced_ss":   # their arrivals taken out before the run
            sim.heap = [e for e in sim.heap if not (isinstance(e[3], Caller) and e[3].id in gone)]
            heapq.heapify(sim.heap)
            sim.callers = [c for c in sim.callers if c.id not in gone]
        s = sim.run().summary()
        offered = s["offered"] + (len(gone) if name == "balanced_ss" else 0)
        out[name] = {"offered": offered, "answered": s["answered"], "abandoned": s["abandoned"],
                     "abandoned_pct": round(100.0 * s["abandoned"] / offered, 1) if offered else 0.0,
                     "asa_s": round(s["asa_s"] / factor, 2), "asa_s_full": round(s["asa_s"], 1),
                     "self_service_pct": round(100.0 * len(gone) / offered, 1) if name == "balanced_ss" else 0.0,
                     "queued": s["answered"] + s["abandoned"] + s["waiting_end"],
                     "cb_offered": s["cb_offered"], "cb_requested": s["cb_requested"], "cb_made": s["cb_made"],
                     "cb_kept": s["cb_kept"], "avg_wait_s": round(s["avg_wait_s"] / factor, 2),
                     "waiting_end": s["waiting_end"]}
    return out


def measured_latency(runs: dict[str, dict[str, Any]]) -> ConnectLatency | None:
    """app_queue's turn + ring per call, measured on the runs (pooled over their answered calls)."""
    return pooled(ConnectLatency(**{k: r["connect_latency"][k] for k in ("connects", "turn_s", "ring_s")})
                  for r in runs.values() if r.get("connect_latency"))


def predict(result: dict[str, Any], p: Profile, seed: int, hour: int, trace: Sequence[TraceCall]) -> None:
    """The simulator's figures beside a replay's ``result`` (its ``runs``, ``factor``, ``seconds``):
    ``simulator`` with app_queue's latency the runs measured on every call (``connect_latency``),
    ``simulator_no_latency`` without it, and ``compare``. Self-service as on the stack when the controller
    ran; with ``seconds`` (a part of the hour) the simulator still runs the whole hour (noted)."""
    factor = result["factor"]
    gone = self_served(trace) if "controller" in result["runs"] else []
    lat = measured_latency(result["runs"])
    result["connect_latency"] = lat.to_dict() if lat else None
    saved = p.connect_s

    def run(connect_s: float) -> dict[str, dict[str, Any]]:
        p.connect_s = connect_s * factor
        try:
            sim = simulator_prediction(p, seed, hour, factor, gone)
        finally:
            p.connect_s = saved
        if result.get("seconds") is not None:
            sim = {m: {**v, "note": "the whole hour (the runs: only its first seconds)"} for m, v in sim.items()}
        return sim

    result["simulator"] = run(lat.total_s if lat else 0.0)
    result["simulator_no_latency"] = run(0.0) if lat else result["simulator"]
    result["compare"] = compare(result)


def self_served(trace: Sequence[TraceCall]) -> list[int]:
    """The callers (indexes in ``make_callers``) who end in self-service on the controller's line."""
    return [c.idx for c in trace if not c.queues_in_controller]


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b:
        return None
    return round(a / b, 3)


def agreement(stack: float | None, sim: float | None, tol: float = 0.25) -> bool | None:
    """Whether the stack's improvement ratio is within ``tol`` (relative) of the simulator's."""
    if stack is None or sim is None or not sim:
        return None
    return abs(stack / sim - 1.0) <= tol


ROWS = [("offered", "offered", "{:.0f}"), ("self-service %", "self_service_pct", "{:.1f}"),
        ("queued", "queued", "{:.0f}"), ("answered", "answered", "{:.0f}"),
        ("abandoned", "abandoned", "{:.0f}"), ("abandoned %", "abandoned_pct", "{:.1f}"),
        ("ASA s (compressed)", "asa_s", "{:.1f}"), ("ASA s (x factor)", "asa_s_full", "{:.0f}"),
        ("callbacks offered", "cb_offered", "{:.0f}"), ("callbacks requested", "cb_requested", "{:.0f}"),
        ("callbacks made", "cb_made", "{:.0f}"), ("callbacks kept", "cb_kept", "{:.0f}"),
        ("peak waiting", "peak_waiting", "{:.0f}")]


def _cell(v: Any, fmt: str) -> str:
    return "-" if v is None else fmt.format(v)


def compare(result: dict[str, Any]) -> dict[str, Any]:
    """Ratios controller / static (ASA, abandonment) on the stack and in the simulator (its balanced mode
    without the callers who served themselves on the stack, else plain balanced), and whether they agree
    within 25 %."""
    runs, sim = result["runs"], result["simulator"]
    bal = sim.get("balanced_ss") or sim["balanced"]
    static = runs.get("static") or (sim["static"] if result.get("static_from") == "simulator" else {})
    out: dict[str, Any] = {}
    for key in ("asa_s", "abandoned_pct"):
        stack = ratio(runs.get("controller", {}).get(key), static.get(key))
        pred = ratio(bal[key], sim["static"][key])
        plain = ratio(sim["balanced"][key], sim["static"][key])
        partial = result.get("seconds") is not None   # a part of the hour against the whole: not comparable
        out[key] = {"stack": stack, "simulator": pred, "simulator_no_self_service": plain,
                    "agree_25pct": None if partial else agreement(stack, pred)}
        bare = result.get("simulator_no_latency")
        if bare and bare is not sim:
            out[key]["simulator_no_latency"] = ratio((bare.get("balanced_ss") or bare["balanced"])[key],
                                                     bare["static"][key])
    return out


def format_table(result: dict[str, Any]) -> str:
    runs, sim, f = result["runs"], result["simulator"], result["factor"]
    by_sim = not runs.get("static") and result.get("static_from") == "simulator"
    static = sim["static"] if by_sim else runs.get("static")
    cols = [("static (sim)" if by_sim else "static", static), ("controller", runs.get("controller")),
            ("sim static", sim["static"]), ("sim balanced", sim["balanced"]),
            ("sim bal.+ss", sim.get("balanced_ss"))]
    bal = sim.get("balanced_ss") or sim["balanced"]
    head = f"{'':<24}" + "".join(f"{n:>13}" for n, _ in cols) + f"{'ratio stack':>13}{'ratio sim':>11}"
    lines = [f"{result['profile']} hour {result['hour']:02d}:00, seed {result['seed']}, x{f:g} "
             f"({result['callers']} callers over {result['span_s']:.0f} s, {result['agents']} agents)", head]
    for label, key, fmt in ROWS:
        vals = []
        for _, r in cols:
            if r is None:
                vals.append("-")
                continue
            v = r.get(key)
            if key == "asa_s_full" and r.get("asa_s") is not None:
                v = r["asa_s"] * f
            vals.append(_cell(v, fmt))
        a, b = runs.get("controller", {}), static or {}
        rs = ratio(a.get(key), b.get(key)) if key in ("asa_s", "abandoned_pct", "answered") else None
        rp = ratio(bal.get(key), sim["static"].get(key)) if key in ("asa_s", "abandoned_pct", "answered") else None
        lines.append(f"{label:<24}" + "".join(f"{v:>13}" for v in vals) + f"{_cell(rs, '{:.2f}'):>13}"
                     f"{_cell(rp, '{:.2f}'):>11}")
    lines.append("sim: the simulator at normal scale, times / factor; 'sim bal.+ss' = balanced without the callers "
                 "who served themselves on the stack; 'ratio sim' = sim bal.+ss / sim static"
                 + ("; static (sim): no static replay on the stack, the simulator's static figures" if by_sim else ""))
    if result.get("seconds") is not None:
        lines.append(f"(the runs replay the first {result['seconds']:g} s only; the simulator ran the whole hour)")
    lat = result.get("connect_latency")
    if lat:
        lines.append(f"app_queue's latency per call, measured on the runs ({lat['connects']} calls): turn "
                     f"{lat['turn_s']:.2f} s + ring {lat['ring_s']:.2f} s = {lat['total_s']:.2f} s (x{f:g} = "
                     f"{lat['total_s'] * f:.1f} s of the hour); the simulator's columns carry it")
    for key, c in result["compare"].items():
        verdict = {True: "agree within 25 %", False: "DISAGREE (> 25 %)",
                   None: "n/a" + (" (a part of the hour only)" if result.get("seconds") is not None else "")
                   }[c["agree_25pct"]]
        lines.append(f"improvement {key} controller/static: stack {_cell(c['stack'], '{:.2f}')}, simulator "
                     f"{_cell(c['simulator'], '{:.2f}')} (without self-service "
                     f"{_cell(c['simulator_no_self_service'], '{:.2f}')}"
                     + (f"; without the latency {_cell(c['simulator_no_latency'], '{:.2f}')}"
                        if "simulator_no_latency" in c else "") + f"): {verdict}")
    for mode, r in runs.items():
        lines.append(f"{mode}: SIPp {r['sipp_successful']} ok / {r['sipp_failed']} failed, AGI calls "
                     f"{r['agi_calls']}, records {r['records']}, queue_log {r['queue_log_check']}, balancing "
                     f"actions {r['balance_actions']}, tier changes {len(r['tier_events'])}"
                     + (f", notices {r['notices']}" if r.get("notices") else ""))
    lines += [f"scaled: {s}" for s in result["scaled"]]
    return "\n".join(lines)
