"""What a simulated day measured: ``summarise`` turns a finished ``Simulation`` into its figures (calls,
waits, abandonment, self-service, callbacks and their promises, the estimators' errors, people followed from
their first call to their last, occupancy by tier), for the callers who arrived in a window of hours."""

from __future__ import annotations

import math
from typing import Any, Sequence

from ..balance.policy import SKILL_NOVICE, TIER_CORE, TIER_VOLUNTEER
from .sim_model import (
    ABANDONED,
    ANSWERED,
    CALLBACK,
    DROPPED,
    IN_MENU,
    NOTIFIED,
    SELF_SERVED,
    WAITING,
    Agent,
    Caller,
    Profile,
)


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def overlap(s: float, e: float, lo: float, hi: float) -> float:
    return max(0.0, min(e, hi) - max(s, lo))


def summarise(callers: Sequence[Caller], agents: Sequence[Agent], p: Profile, lo: float, hi: float) -> dict[str, Any]:
    """A run's metrics for the ``callers`` who arrived between ``lo`` and ``hi`` (seconds of the day), with the
    ``agents``' hours in that window."""
    everyone = [c for c in callers if lo <= c.t < hi]
    cs = [c for c in everyone if c.outcome != NOTIFIED]                   # the calls that came in
    ans = [c for c in cs if c.outcome == ANSWERED]
    queued = sorted(c.wait for c in cs if c.outcome in (ANSWERED, ABANDONED))
    cbs = [c for c in cs if c.outcome == CALLBACK]
    made = [c for c in cbs if c.cb_at is not None]
    promised = [c for c in made if c.promise is not None]
    kept = sum(c.cb_at - c.cb_req <= c.promise for c in promised if c.cb_at is not None and c.promise is not None)
    n_ab, est = sum(c.outcome == ABANDONED for c in cs), [c for c in ans if math.isfinite(c.est)]
    erlc = [c for c in ans if math.isfinite(c.est_erlc)]
    n_ss = sum(c.outcome == SELF_SERVED for c in cs)
    out: dict[str, Any] = {
        "offered": len(cs), "answered": len(ans), "abandoned": n_ab,
        "abandoned_pct": 100.0 * n_ab / len(cs) if cs else 0.0,
        "waiting_end": sum(c.outcome in (WAITING, IN_MENU) for c in cs), "retries": sum(c.attempt > 1 for c in cs),
        "asa_s": mean([c.wait for c in ans]),
        "sl_pct": 100.0 * sum(c.wait <= p.sl_target_s for c in ans) / len(ans) if ans else 0.0,
        "avg_wait_s": mean(queued), "p90_wait_s": queued[int(0.9 * (len(queued) - 1))] if queued else 0.0,
        "self_service": n_ss, "served": len(ans) + n_ss + len(made),
        "cb_offered": sum(c.cb_offered for c in cs), "cb_requested": len(cbs), "cb_made": len(made),
        "cb_kept": kept, "cb_kept_pct": 100.0 * kept / len(promised) if promised else 0.0,
        "cb_no_promise": len(made) - len(promised), "cb_pending_end": len(cbs) - len(made),
        "cb_wait_avg_s": mean([c.cb_at - c.cb_req for c in made if c.cb_at is not None]),
        "cb_promise_avg_s": mean([c.promise for c in cbs if c.promise is not None]),
        "notified_no_call": len(everyone) - len(cs), "transfers": sum(c.transfer for c in cs),
        "est_mae_s": mean([abs(c.est - c.wait) for c in est]), "est_bias_s": mean([c.est - c.wait for c in est]),
        "est_infinite": len(ans) - len(est), "ast_mae_s": mean([abs(c.est_ast - c.wait) for c in ans]),
        "ast_bias_s": mean([c.est_ast - c.wait for c in ans]),
        "shared_mae_s": mean([abs(c.est_shared - c.wait) for c in ans if math.isfinite(c.est_shared)]),
        "shared_bias_s": mean([c.est_shared - c.wait for c in ans if math.isfinite(c.est_shared)]),
        "stay_mae_s": mean([abs(c.est_stay - c.wait) for c in ans if math.isfinite(c.est_stay)]),
        "stay_bias_s": mean([c.est_stay - c.wait for c in ans if math.isfinite(c.est_stay)]),
        "erlc_mae_s": mean([abs(c.est_erlc - c.wait) for c in erlc]),
        "erlc_bias_s": mean([c.est_erlc - c.wait for c in erlc]), "erlc_infinite": len(ans) - len(erlc),
        "agent_hours": sum(overlap(s, e, lo, hi) for a in agents for s, e in a.shifts) / 3600.0}
    # people, not calls: each caller followed from their first call to their last
    firsts = [c for c in cs if c.root is None and not c.transfer]
    lasts = [c.last or c for c in firsts]
    lost = [c for c in lasts if c.outcome in (ABANDONED, DROPPED)]
    total = [c.waited_before + c.wait for c in lasts if c.outcome in (ANSWERED, ABANDONED, DROPPED)]
    out.update({"people": len(firsts), "drops": sum(c.outcome == DROPPED for c in cs),
                "recalls": sum(c.root is not None for c in cs),
                "returned_to_place": sum(c.root is not None and c.place < c.t for c in cs),
                "lost_pct": 100.0 * len(lost) / len(firsts) if firsts else 0.0,
                "person_wait_s": mean(total)})
    hit = [c.last or c for c in firsts if c.outcome == DROPPED]      # people whose (first) call dropped
    out.update({"dropped_people": len(hit),
                "dropped_lost_pct": 100.0 * sum(c.outcome in (ABANDONED, DROPPED) for c in hit) / len(hit)
                if hit else 0.0,
                "dropped_wait_s": mean([c.waited_before + c.wait for c in hit if c.outcome != WAITING])})
    for label, grp in (("core", [a for a in agents if a.tier == TIER_CORE]),
                       ("volunteer", [a for a in agents if a.tier == TIER_VOLUNTEER]),
                       ("novice", [a for a in agents if a.skill == SKILL_NOVICE])):
        on = sum(overlap(s, e, lo, hi) for a in grp for s, e in a.on)
        busy = sum(overlap(s, e, lo, hi) for a in grp for s, e in a.calls)
        out[f"occ_{label}_pct"] = min(100.0, 100.0 * busy / on) if on else 0.0
    return out
