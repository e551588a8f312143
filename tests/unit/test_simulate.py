"""The surge simulator (ivr.devtools.simulate): fast runs on tiny profiles."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from ivr.devtools.sim_engine import Simulation, run_modes
from ivr.devtools.sim_model import Profile, load_profile
from ivr.devtools.simulate import main

ROOT = Path(__file__).resolve().parents[2]
ALL = ["refunds", "rebooking", "support"]


def tiny(arrivals: list[float], core: int = 2, teams: int = 0, **kw: Any) -> Profile:
    """A day with the given calls per hour for the first hours (zero after), one core shift."""
    d: dict[str, Any] = {
        "name": "tiny", "seed": 3, "arrivals_per_hour": arrivals + [0] * (24 - len(arrivals)),
        "queues": {"refunds": 0.55, "rebooking": 0.25, "support": 0.20},
        "roster": {"core": [{"name": "core", "count": core, "start": 0, "end": 24, "queues": ALL}],
                   "volunteers": {"teams": teams, "start": 0, "end": 24, "queues": ALL}},
        "tick_s": 5,
    }
    d.update(kw)
    return Profile.from_dict(d)


SURGE = dict(arrivals=[150, 0], core=2, teams=1)


def surge(**kw: Any) -> Profile:
    return tiny(SURGE["arrivals"], SURGE["core"], SURGE["teams"], **kw)


def test_same_seed_same_output_and_seed_matters() -> None:
    p = surge(callback={"threshold_s": 60})
    a = run_modes(p, hours=(0, 2))
    b = run_modes(p, hours=(0, 2))
    for r in (a, b):
        for m in r["modes"].values():
            m.pop("runtime_s")
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    c = run_modes(p, seed=99, hours=(0, 2))
    assert c["modes"]["static"]["overall"]["offered"] != a["modes"]["static"]["overall"]["offered"] \
        or c["modes"]["static"]["overall"]["asa_s"] != a["modes"]["static"]["overall"]["asa_s"]


@pytest.mark.parametrize("mode", ["static", "balanced"])
def test_conservation(mode: str) -> None:
    """offered = answered + abandoned + still waiting at the end + callbacks requested."""
    p = surge(callback={"threshold_s": 30, "accept": 0.5}, patience={"retry_share": 0.3, "retry_after_s": 120})
    sim = Simulation(p, mode, hours=(0, 1)).run()       # ends mid-surge: callers still waiting
    s = sim.summary()
    assert s["offered"] == s["answered"] + s["abandoned"] + s["waiting_end"] + s["cb_requested"]
    assert s["offered"] > 100 and s["abandoned"] > 0 and s["retries"] > 0
    assert s["cb_made"] + s["cb_pending_end"] == s["cb_requested"]
    assert s["cb_kept"] <= s["cb_made"]
    for h in (0,):
        sh = sim.summary(h, h + 1)
        assert sh["offered"] == sh["answered"] + sh["abandoned"] + sh["waiting_end"] + sh["cb_requested"]


@pytest.mark.parametrize("mode", ["static", "balanced"])
def test_ample_agents_no_wait(mode: str) -> None:
    p = tiny([20, 20], core=15)
    s = Simulation(p, mode, hours=(0, 2)).run().summary()
    assert s["offered"] > 20
    assert s["abandoned"] == 0 and s["waiting_end"] == 0
    assert s["asa_s"] < 1.0 and s["p90_wait_s"] < 1.0 and s["sl_pct"] == 100.0
    assert s["cb_offered"] == 0
    assert s["agent_hours"] == pytest.approx(30.0)


def test_balanced_opens_and_closes_the_overflow_tier() -> None:
    """Calm hour, surge hour, calm hour: refunds' volunteer tier opens in the surge, closes after."""
    p = tiny([0, 150, 0], core=4, teams=1)     # 4 core: one busy agent alone never opens it
    sim = Simulation(p, "balanced", hours=(0, 3)).run()
    log = [(t, k) for t, q, k in sim.tier_log if q == "refunds"]
    surge_opens = [t for t, k in log if k == "open_tier" and 3600 <= t < 7200]
    assert surge_opens, sim.tier_log
    assert log[-1][1] == "close_tier" and log[-1][0] > surge_opens[0]   # calm again afterwards
    open_s, since = 0.0, None                  # open most of the surge hour
    for t, k in log:
        if k == "open_tier":
            since = t
        elif since is not None:
            open_s += max(0.0, min(t, 7200) - max(since, 3600))
            since = None
    assert open_s > 0.5 * 3600, log
    s = sim.summary(1, 2)
    assert s["occ_volunteer_pct"] > 0 and s["occ_novice_pct"] > 0   # novices on refunds, coached


def test_wait_estimate_error_is_reported() -> None:
    s = Simulation(surge(), "static", hours=(0, 2)).run().summary()
    for key in ("est_mae_s", "est_bias_s", "ast_mae_s", "ast_bias_s"):
        assert key in s
    assert s["est_mae_s"] > 0 and s["ast_mae_s"] > 0
    assert s["est_mae_s"] >= abs(s["est_bias_s"]) and s["ast_mae_s"] >= abs(s["ast_bias_s"])


def test_static_never_offers_or_dispatches_callbacks() -> None:
    p = surge(callback={"threshold_s": 30, "accept": 0.9})
    res = run_modes(p, hours=(0, 2))
    st, bal = res["modes"]["static"]["overall"], res["modes"]["balanced"]["overall"]
    assert st["cb_offered"] == st["cb_requested"] == st["cb_made"] == 0
    assert res["modes"]["static"]["decisions"] == 0
    assert bal["cb_requested"] > 0 and bal["cb_made"] > 0   # the policy dispatched them once calm
    assert st["agent_hours"] == bal["agent_hours"]         # same roster, same agent-hours


def test_profiles_load_and_match_the_surge_facts() -> None:
    day = load_profile(ROOT / "profiles" / "default.yaml")
    base = load_profile(ROOT / "profiles" / "baseline.yaml")
    assert abs(sum(day.arrivals_per_hour) - 3807) <= 5 and max(day.arrivals_per_hour) == 499
    assert abs(sum(base.arrivals_per_hour) - 781) <= 5 and not base.volunteers.get("teams")
    assert day.handle_mean_s == 171 and sum(day.queues.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown profile keys"):
        Profile.from_dict({"arrivals_per_hour": [0] * 24, "queues": {}, "core": [], "bogus": 1})


def test_cli_table_json_and_chart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prof = tmp_path / "p.yaml"
    prof.write_text(yaml.safe_dump({"name": "cli", "arrivals_per_hour": [60] + [0] * 23,
                                    "queues": {"refunds": 1.0},
                                    "roster": {"core": [{"name": "c", "count": 3, "start": 0, "end": 24,
                                                         "queues": ["refunds"]}]}}))
    png = tmp_path / "w.png"
    assert main(["--profile", str(prof), "--hours", "0-2", "--tick", "5", "--chart", str(png)]) == 0
    out = capsys.readouterr().out
    assert "static" in out and "balanced" in out and "ratio" in out and "peak hour 00:00" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["--profile", str(prof), "--hours", "0-1", "--mode", "static", "--json", "--seed", "5"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert list(res["modes"]) == ["static"] and res["seed"] == 5
    with pytest.raises(SystemExit):
        main(["--profile", str(prof), "--hours", "5-2"])
