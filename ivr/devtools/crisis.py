"""The crisis hour on the real stack: one caller trace from the surge simulator, replayed through Asterisk.

Why this shape: the simulator (ivr.devtools.simulate) predicts what the balancing policy gains over a
static app_queue setup; this module checks that prediction on the real components. The same callers
(``make_callers``: arrival, queue, patience, handle time, callback draw) are replayed, time-compressed
by ``factor``, twice: through a plain ``Queue()`` dialplan (static) and through the whole line (menu,
self-service, balancing loop, callbacks, notices). SIPp cannot key per-call DTMF from an injection
file (a pcap is loaded with the scenario), so callers are grouped by what they key (language, branch,
0 after self-service, yes/no to a callback), one SIPp per group; each call's arrival, number and
patience come from that group's injection CSV (``-inf``), its arrival as an initial ``<pause
variable>`` before the INVITE. Agents' phones read the handle time of each call from an indexed
injection file keyed by the caller's number (``<lookup>``), so every caller talks for their own handle
time in both runs (novices 1.3x longer). Patience is app_queue's own timeout (``X-Patience`` header
into ``Queue()``'s timeout), never a SIPp hang-up: a SIPp caller cannot tell it was answered.
"""

from __future__ import annotations

import random
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import yaml

from .sim_model import Profile, build_roster, make_callers
from ..app.config import PROJECT_ROOT, PromiseConfig
from .sipp import Sipp, free_port, free_port_pair
from .sipp_scenarios import CallerScript, uas_hangup, uas_ring_and_answer

DEFAULT_PROFILE = (PROJECT_ROOT / "profiles" / "crisis-day.yaml"
                   if (PROJECT_ROOT / "profiles" / "crisis-day.yaml").exists()
                   else PROJECT_ROOT / "profiles" / "default.yaml")
BRANCH_KEYS = {"refund_status": "1", "refund_request": "2", "q_rebooking": "3", "q_support": "4"}
BRANCH_QUEUE = {"refund_status": "refunds", "refund_request": "refunds", "q_rebooking": "rebooking",
                "q_support": "support"}
SELF_SERVICE = ("refund_status", "refund_request")
BOOKINGS = {"refund_status": "314159", "refund_request": "271828"}   # 314159 has a refund (seeded)
LANGUAGES = (("en", "1", 0.5), ("fa", "2", 0.3), ("zh", "3", 0.2))
STATUS_SHARE = 0.35 / 0.65       # of the refunds callers (ivr.devtools.demo.BRANCHES): status, else a new request
DID_IVR = "530"                  # the menu, with the caller's patience as Queue()'s timeout
STATIC_DIDS = {"refunds": "531", "rebooking": "532", "support": "533"}


def controller_context(agi_route: str = "menu/main") -> str:
    """Appended to extensions.conf of the controller run: as the rendered from-trunk entry, plus the
    caller's patience (X-Patience) as IVR_QUEUE_TIMEOUT, which the menu leaves alone when its queue
    node has no timeout (so ivr-route's Queue() uses it)."""
    return f"""
; ---- appended by ivr/devtools/crisis.py (the crisis-hour replay), then `dialplan reload`
[from-trunk]
exten => {DID_IVR},1,Set(CALLERID(all)="${{FILTER(0-9a-zA-Z .,${{CALLERID(name)}})}}" <${{FILTER(0-9+,${{CALLERID(num)}})}}>)
 same => n,Set(IVR_QUEUE_TIMEOUT=${{FILTER(0-9,${{PJSIP_HEADER(read,X-Patience)}})}})
 same => n,Answer()
 same => n,AGI(${{IVR_AGI}}/{agi_route})
 same => n,Goto(ivr-route,${{IF($[${{DIALPLAN_EXISTS(ivr-route,${{IVR_NEXT}},1)}}]?${{IVR_NEXT}}:fallback)}},1)
"""


def static_context() -> str:
    """Appended to extensions.conf of the static run: a plain line, every caller straight into Queue()."""
    lines = ["", "; ---- appended by ivr/devtools/crisis.py: the static line (no AGI, no menu), one number per queue",
             "[from-trunk]"]
    for q, did in STATIC_DIDS.items():
        lines += [f"exten => {did},1,Set(CRISIS_QUEUE={q})", " same => n,Goto(crisis-static,s,1)"]
    lines += ["", "[crisis-static]",
              'exten => s,1,Set(CALLERID(all)="${FILTER(0-9a-zA-Z .,${CALLERID(name)})}" '
              "<${FILTER(0-9+,${CALLERID(num)})}>)",
              " same => n,Answer()",
              " same => n,Queue(${CRISIS_QUEUE},,,,${FILTER(0-9,${PJSIP_HEADER(read,X-Patience)})})",
              " same => n,Hangup()", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the trace
@dataclass(frozen=True, slots=True)
class TraceCall:
    """One caller of the compressed hour (times in compressed seconds)."""

    idx: int
    t: float
    queue: str
    branch: str
    lang: str
    patience: float
    handle: float
    press0: bool          # after self-service, 0 to reach an agent
    accept_cb: bool       # takes a callback when one is offered (the simulator's own draw)
    number: str

    @property
    def queues_in_controller(self) -> bool:
        return self.branch not in SELF_SERVICE or self.press0


def caller_number(idx: int) -> str:
    """A valid +1 202 number the stack's outbound guard allows (callbacks ring it on the loopback carrier);
    the last digit 0-3 makes the SIPp customer phone answer (ivr.devtools.sipp.callee_scenario)."""
    return f"12022{idx:05d}{idx % 4}"


def _branch(c: Any, rng: random.Random) -> str:
    raw = str(getattr(c, "branch", None) or "").replace("-", "_")
    if raw in BRANCH_KEYS:
        return raw
    for name in BRANCH_KEYS:        # "rebooking" -> q_rebooking, "support" -> q_support
        if raw and name.endswith(raw):
            return name
    if c.queue == "refunds":
        return "refund_status" if rng.random() < STATUS_SHARE else "refund_request"
    return "q_rebooking" if c.queue == "rebooking" else "q_support"


def load_profile_raw(path: str | Path) -> tuple[Profile, dict[str, Any]]:
    """The profile, and its ``notices:`` section if any (taken out before Profile sees it)."""
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    notices = raw.pop("notices", None) or {}
    try:
        return Profile.from_dict(raw), notices
    except (TypeError, ValueError):
        if notices:
            raw["notices"] = notices
        return Profile.from_dict(raw), notices


def peak_hour(p: Profile) -> int:
    return max(range(24), key=lambda h: p.arrivals_per_hour[h])


def build_trace(p: Profile, seed: int, hour: int, factor: float, press0: float,
                window_s: float | None = None) -> list[TraceCall]:
    """The simulator's callers of [hour, hour+1), compressed by ``factor``; ``window_s`` keeps only the
    first seconds (compressed) of it (smoke runs)."""
    rng = random.Random(f"{seed}:{hour}:crisis")
    out = []
    for i, c in enumerate(make_callers(p, seed, hour, hour + 1)):
        t = (c.t - hour * 3600.0) / factor
        branch = _branch(c, rng)
        lang = rng.choices([x[0] for x in LANGUAGES], [x[2] for x in LANGUAGES])[0]
        if p.menu_file and branch in p.menu_self_service:    # the simulator's own draw: the same caller
            p0 = c.u_ss >= p.menu_self_service[branch]       # presses 0 on the stack and in the model
        else:
            p0 = rng.random() < press0
        if window_s is not None and t >= window_s:
            continue
        out.append(TraceCall(i, t, c.queue, branch, lang, max(1.0, c.patience / factor), c.handle / factor,
                             p0 and branch in SELF_SERVICE, c.u_cb < p.callback_accept, caller_number(i)))
    return out


def roster_at(p: Profile, hour: int) -> list[Any]:
    """The simulator's roster on duty at the start of ``hour`` (agents with a shift covering it)."""
    return [a for a in build_roster(p) if any(s <= hour * 3600.0 < e for s, e in a.shifts)]


# ----------------------------------------------------------------------------- scaling
@dataclass(frozen=True, slots=True)
class Scaled:
    """The time constants of the controller run, compressed by ``factor``; ``describe`` lists each."""

    factor: float
    callback_over: float | str          # the menu's callback_over: seconds, or "auto" (forecast)
    open_wait_s: float
    close_wait_s: float
    min_open_s: float
    servicelevel: int
    promise_s: float | None             # a fixed promise (None: the forecast's, checked by the controller)
    interval: float

    @classmethod
    def of(cls, p: Profile, factor: float, interval: float = 1.0) -> Scaled:
        pol = p.make_policy()
        over = p.callback_threshold_s
        over = "auto" if over in (None, "auto") else float(over) / factor
        promise = None if p.callback_promise_s == "auto" else float(p.callback_promise_s) / factor
        return cls(factor, over, pol.open_wait_s / factor, pol.close_wait_s / factor,
                   pol.min_open_s / factor, max(1, round(p.sl_target_s / factor)), promise, interval)

    def promise_config(self) -> dict[str, float]:
        """balance.promise with its times compressed (ratios and occupancy are not times)."""
        d = PromiseConfig()
        return {k: round(getattr(d, k) / self.factor, 2)
                for k in ("round_s", "min_s", "max_s", "window_s", "default_aht", "offer_over_s")}

    def describe(self, p: Profile) -> list[str]:
        pol = p.make_policy()
        f = self.factor
        over = (f"{p.callback_threshold_s:g} s -> {self.callback_over:g} s" if self.callback_over != "auto"
                else "auto (from the forecast), its times below")
        promise = (f"fixed {p.callback_promise_s:g} s -> {self.promise_s:g} s" if self.promise_s is not None else
                   "from the forecast; balance.promise " + ", ".join(f"{k} {v:g}" for k, v in self.promise_config().items())
                   + " (each / factor); kept = made within the promise the caller heard")
        return [f"menu callback_over (q_refunds, q_rebooking, q_support): {over}",
                f"balance.open_wait_s: {pol.open_wait_s:g} -> {self.open_wait_s:g}; close_wait_s: "
                f"{pol.close_wait_s:g} -> {self.close_wait_s:g}; min_open_s: {pol.min_open_s:g} -> {self.min_open_s:g}",
                f"queues' servicelevel (SL target): {p.sl_target_s:g} s -> {self.servicelevel} s",
                f"callback promise: {promise}",
                f"patience and handle time per caller: / {f:g}; arrivals: offsets / {f:g}",
                f"balance.interval (the loop's tick): {self.interval:g} s, not scaled (= {self.interval * f:g} s "
                "of the hour)"]


def scaled_menu(text: str, callback_over: float | str) -> str:
    """dialplans/main.yaml with its queue nodes' callback_over compressed (key timeouts are left alone:
    the SIPp callers key at once, so they never run out); "auto" stays auto (its times are config)."""
    menu = yaml.safe_load(text)
    for node in menu["nodes"].values():
        if node.get("type") == "queue" and "callback_over" in node:
            node["callback_over"] = callback_over if callback_over == "auto" else round(float(callback_over), 1)
    return "# the crisis-hour replay's copy of dialplans/main.yaml: callback_over compressed\n" + \
        yaml.safe_dump(menu, sort_keys=False, allow_unicode=True)


# ----------------------------------------------------------------------------- SIPp
def caller_scenario(steps: Sequence[tuple[str, str | int]], pcap_dir: Path, wait_bye_ms: int) -> str:
    """A CallerScript whose call comes from the injection CSV: [field0] ms to wait before the INVITE,
    [field1] the number dialled, [field2] the caller's number, [field3] patience (X-Patience, seconds)."""
    xml = CallerScript(steps=list(steps), end="wait_bye", wait_bye_ms=wait_bye_ms).xml(pcap_dir)
    xml = xml.replace('From: "caller" <sip:[caller]@', 'From: "crisis" <sip:[field2]@')
    xml = xml.replace("<sip:[caller]@", "<sip:[field2]@").replace("[service]", "[field1]")
    xml = xml.replace("CSeq: 1 INVITE\n", "CSeq: 1 INVITE\nX-Patience: [field3]\n", 1)
    start = '  <send retrans="500"><![CDATA[\nINVITE'
    wait = ('  <nop><action><assignstr assign_to="arr" value="[field0]"/>'
            '<todouble assign_to="arrms" variable="arr"/></action></nop>\n  <pause variable="arrms"/>\n')
    return xml.replace(start, wait + start, 1)


def agent_scenario(handles_csv: Path, default_ms: int, slower: float = 1.0, ring_ms: int = 100) -> str:
    """UAS for an agent phone that talks, per call, the handle time of the caller (looked up by the
    caller's number in ``handles_csv``; ``default_ms`` for a number not in it), times ``slower``."""
    f = handles_csv.name     # SIPp matches the scenario's file= to -inf by name: run it in that folder
    answer = uas_ring_and_answer("agent", ring_ms, "X-Caller: [$fw]\n")   # the caller's number, for the logs
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="agent phone, per-call talk time">
  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp=".*" search_in="hdr" header="From:" check_it="true" assign_to="remote_from"/>
      <ereg regexp="sip:[^>;]*" search_in="hdr" header="Contact:" check_it="true" assign_to="remote_contact"/>
      <ereg regexp="&lt;sip:\\+?([0-9]+)@" search_in="hdr" header="From:" check_it="false" assign_to="fw,num"/>
      <lookup assign_to="line" file="{f}" key="[$num]"/>
    </action>
  </recv>
  <nop><action><test assign_to="miss" variable="line" compare="less_than" value="0"/></action></nop>
  <nop test="miss" next="dflt"/>
  <nop next="talk"><action><assignstr assign_to="ms" value="[field1 file=&quot;{f}&quot; line=&quot;[$line]&quot;]"/></action></nop>
  <label id="dflt"/>
  <nop><action><assignstr assign_to="ms" value="{int(default_ms)}"/></action></nop>
  <label id="talk"/>
  <nop><action><todouble assign_to="talkms" variable="ms"/><multiply assign_to="talkms" value="{slower:g}"/></action></nop>
{answer}  <pause variable="talkms"/>
{uas_hangup('agent')}
</scenario>
"""


def key_steps(c: TraceCall) -> list[tuple[str, str | int]]:
    """What a caller keys in the default menu: language, # over the crisis message, the branch; a booking
    number in self-service (then 0 for an agent, for some); where a callback may be offered, 1 (take it)
    and 1 (the number read back is right), or 2 (keep waiting). Keys that come when no offer is made fall
    on a prompt that ignores them, or on the queue's music."""
    lang_key = next(k for name, k, _ in LANGUAGES if name == c.lang)
    steps: list[tuple[str, str | int]] = [("pause", 800), ("dtmf", lang_key), ("pause", 500), ("dtmf", "#"),
                                          ("pause", 700), ("dtmf", BRANCH_KEYS[c.branch])]
    if c.branch in SELF_SERVICE:
        steps += [("pause", 900), ("dtmf", BOOKINGS[c.branch])]
        if not c.press0:
            return steps
        steps += [("pause", 500), ("dtmf", "0")]
    if c.accept_cb:
        steps += [("pause", 800), ("dtmf", "1"), ("pause", 900), ("dtmf", "1")]
    else:
        steps += [("pause", 800), ("dtmf", "2")]
    return steps


def group_key(c: TraceCall) -> tuple[str, str, bool, bool]:
    return (c.lang, c.branch, c.press0 and c.branch in SELF_SERVICE, c.accept_cb and c.queues_in_controller)


@dataclass
class CallerRun:
    """One SIPp process placing a group of callers at their own times."""

    name: str
    calls: list[TraceCall]
    proc: subprocess.Popen[str]
    argv: list[str]


def start_callers(sipp: Sipp, groups: dict[str, tuple[Sequence[tuple[str, str | int]], list[TraceCall]]],
                  extension: Callable[[TraceCall], str], t0: float, bound_s: int,
                  rate: int = 1000) -> list[CallerRun]:
    """One SIPp per group; each call waits before its INVITE until t0 + its arrival (the calls are launched
    at ``rate`` calls/s, so call k's wait is its arrival less k/rate)."""
    runs = []
    for name, (steps, calls) in groups.items():
        calls = sorted(calls, key=lambda c: c.t)
        scenario = sipp._write(f"crisis-{name}", caller_scenario(steps, sipp.workdir / "pcap", bound_s * 1000))
        csv = sipp.workdir / f"crisis-{name}.csv"
        launch = time.time()
        rows = ["SEQUENTIAL"]
        for k, c in enumerate(calls):
            wait_ms = max(0, int((t0 + c.t - launch) * 1000 - k * 1000 / rate))
            rows.append(f"{wait_ms};{extension(c)};{c.number};{max(1, round(c.patience))}")
        csv.write_text("\n".join(rows) + "\n", encoding="ascii")
        port = free_port()
        argv = [sipp.binary, f"{sipp.target_host}:{sipp.target_port}", "-sf", str(scenario), "-inf", str(csv),
                "-m", str(len(calls)), "-r", str(rate), "-l", str(len(calls) + 10), "-timeout", f"{bound_s}s",
                "-recv_timeout", "60000", "-error_file", str(sipp.workdir / f"err-{port}.log"),
                "-trace_stat", "-stf", str(sipp.workdir / f"stat-{port}.csv"), "-fd", "5",
                *sipp._common(port, free_port_pair())]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                cwd=sipp.workdir, start_new_session=True)
        proc.argv = argv  # type: ignore[attr-defined]  # kept with the process for its result
        runs.append(CallerRun(name, calls, proc, argv))
    return runs


def start_agents(sipp: Sipp, agents: Iterable[tuple[str, int, float]], handles: Sequence[TraceCall],
                 default_s: float, bound_s: int) -> list[subprocess.Popen[bytes]]:
    """Agent phones (id, port, slower) on loopback; each call talks the caller's handle time."""
    csv = sipp.workdir / "crisis-handles.csv"
    csv.write_text("SEQUENTIAL\n" + "".join(f"{c.number};{max(200, int(c.handle * 1000))}\n" for c in handles),
                   encoding="ascii")
    phones = []
    for aid, port, slower in agents:
        scenario = sipp._write(f"crisis-agent-{aid}", agent_scenario(csv, int(default_s * 1000), slower))
        err = sipp.workdir / f"agent-err-{port}.log"
        argv = [sipp.binary, "-sf", str(scenario), "-inf", csv.name, "-infindex", csv.name, "0", "-m", "100000",
                "-timeout", f"{bound_s}s", "-aa", "-error_file", str(err)]
        phones.append(sipp._start_uas(argv, port, err))
    return phones


@dataclass
class LogTail:
    """New lines of a log file since the last read (the controller's log, for the live events)."""

    path: Path
    offset: int = 0
    patterns: tuple[tuple[str, re.Pattern[str]], ...] = field(default_factory=lambda: (
        ("tier", re.compile(r"balance: (open_tier|close_tier) (\S+).*")),
        ("offer", re.compile(r"call \S+: estimated wait (\d+)s in (\S+): offering a callback")),
        ("promise", re.compile(r"call \S+: callback promise for (\S+): (\d+)s")),
        ("requested", re.compile(r"call \S+: callback (\d+) stored for \S+ \(queue (\S+)\)")),
        ("answered", re.compile(r"callback (\d+): \S+ answered, in queue (\S+)")),
        ("escalated", re.compile(r"call \S+: 0 pressed in (\S+)")),
    ))

    def skip_to_end(self) -> None:
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def events(self) -> list[tuple[str, re.Match[str], str]]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        cut = data.rfind(b"\n") + 1
        self.offset += cut
        out = []
        for line in data[:cut].decode(errors="replace").splitlines():
            for kind, rx in self.patterns:
                m = rx.search(line)
                if m:
                    out.append((kind, m, line))
                    break
        return out
