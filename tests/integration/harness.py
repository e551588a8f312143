"""Test harness: one real stack (Asterisk, Redis, controller) on free loopback ports, plus SIPp."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ivr.app.config import PROJECT_ROOT
from ivr.devtools.sipp import Sipp, free_port
from ivr.devtools.stack import Stack, StackError, missing_tools
from ivr.devtools.stack import pick_port_base as stack_pick_port_base

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SHORT_MENU_DID = "501"  # runs tests/fixtures/dialplans/short.yaml (a beep and one menu)
BROKEN_MENU_DID = "502"  # routed to a menu that does not exist
OUTCOMES_MENU_DID = "503"  # runs tests/fixtures/dialplans/outcomes.yaml (a recorded message)
def require_tools() -> None:
    missing = missing_tools()
    if missing:
        raise RuntimeError(f"integration tests need {', '.join(missing)}: run `bash scripts/install.sh` first")


# The port bases of the stacks the tests start. Under pytest-xdist each worker takes its bases from a slice of
# its own (see tests/conftest.py), so two workers never probe the same base at the same moment.
PORT_BASES = (20000, 60000)


def worker_port_bases() -> tuple[int, int] | None:
    """The slice of PORT_BASES for this pytest-xdist worker, or None when the tests run in one process."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    if not worker.startswith("gw") or count <= 1:
        return None
    span = (PORT_BASES[1] - PORT_BASES[0]) // count // 2000 * 2000
    if span < 6000:
        raise RuntimeError(f"{count} workers leave each fewer than 3 port bases: run fewer (-n)")
    first = PORT_BASES[0] + int(worker[2:]) * span
    return first, first + span


def pick_port_base(start: int = 40000, stop: int = 58000, step: int = 2000) -> int:
    """A port base whose ports are all free (SIP, AMI, AGI, API, Redis, first RTP port): the first free one
    from ``start``, or, under pytest-xdist, from this worker's slice of port bases."""
    mine = worker_port_bases()
    if mine is None:
        return stack_pick_port_base(start, stop, step)
    first, end = mine
    try:
        return stack_pick_port_base(first, end, step)
    except StackError:   # all taken (another test run on this machine?): the first free one after the slice
        try:
            return stack_pick_port_base(end, PORT_BASES[1], step)
        except StackError:
            return stack_pick_port_base(PORT_BASES[0], first, step)


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.1, what: str = "") -> Any:
    """Poll until ``predicate()`` is truthy; return its value or fail with ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what or predicate} (last: {last!r})")


@dataclass
class Api:
    base: str
    token: str

    def request(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        tok = self.token if token is None else token
        if tok:
            req.add_header("Authorization", f"Bearer {tok}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw or b"null")
            except ValueError:
                return exc.code, raw.decode(errors="replace")

    def get(self, path: str, **kw: Any) -> Any:
        status, body = self.request("GET", path, **kw)
        assert status == 200, f"GET {path} -> {status}: {body}"
        return body

    def post(self, path: str, body: Any = None, **kw: Any) -> Any:
        status, out = self.request("POST", path, body, **kw)
        assert status == 200, f"POST {path} -> {status}: {out}"
        return out


@dataclass
class TestStack:
    __test__ = False  # not a test class

    stack: Stack
    info: dict[str, Any]
    api: Api
    sipp: Sipp
    agent_ports: dict[str, int]
    customer_port: int
    agent_procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def sip_port(self) -> int:
        return int(self.info["sip"].rsplit(":", 1)[1])

    @property
    def extension(self) -> str:
        """The number of the short test menu."""
        return SHORT_MENU_DID

    @property
    def main_extension(self) -> str:
        """The number of the shipped default menu (dialplans/main.yaml)."""
        return str(self.info["inbound_extension"])

    def queue(self, name: str) -> dict[str, Any]:
        return self.api.get("/api/v1/queues")["queues"].get(name, {})

    def call_record(self, uid: str) -> dict[str, Any] | None:
        status, body = self.api.request("GET", f"/api/v1/calls/{uid}")
        return body if status == 200 else None


# Agents of the test stack: id -> (queues, logged in at start, skill, tier)
TEST_AGENTS = {
    "1001": (["support", "refunds"], True, "experienced", "core"),
    "1002": (["support", "refunds"], True, "novice", "core"),       # novices serve only refunds (simple)
    "1003": (["rebooking"], False, "experienced", "core"),
    "1004": (["support"], True, "experienced", "volunteer"),         # only while support's overflow is open
    "1005": (["support"], True, "experienced", "volunteer"),
}
# Quick thresholds so a flood of a dozen callers opens the overflow tier within seconds.
# A short lock-out window so the rate-limit test does not lock the other tests out for minutes.
# Loopback is the test stack's "reverse proxy": requests naming a client in X-Forwarded-For count against it.
TEST_API = {"auth_fail_limit": 10, "auth_fail_window": 4, "trusted_proxies": ["127.0.0.1"],
            "client_ip_header": "X-Forwarded-For"}
# decision calls at any hour (the customers' phones are SIPp, no machines), medical workers approved by policy
TEST_REFUNDS = {"notice_window": "00:00-23:59", "notice_amd": False, "notice_cps": 5,
                "auto_approve_groups": ["medical"], "auto_approve_max": 500}
TEST_BALANCE = {"open_wait_s": 8, "close_wait_s": 4, "min_open_s": 6, "sl_min_calls": 100000}


def fail2ban_regex(name: str) -> "re.Pattern[str]":
    """The failregex of docs/fail2ban/<name>.conf, with <HOST> as fail2ban expands it (an address)."""
    text = (PROJECT_ROOT / "docs" / "fail2ban" / f"{name}.conf").read_text(encoding="utf-8")
    regex = re.search(r"^failregex = (.+)$", text, re.M).group(1)  # type: ignore[union-attr]
    return re.compile(regex.replace("<HOST>", r"(?P<host>[0-9a-fA-F:.]+)"))


def create_token(stack: "TestStack", name: str, role: str) -> str:
    """A new API token with that role, made the way `ivr token create` makes it."""
    import asyncio

    from ivr.store.redis_store import Store

    async def create() -> str:
        store = Store.from_config(stack.stack.config().redis)
        try:
            return await store.create_token(name, role)
        finally:
            await store.close()
    return asyncio.run(create())


def start_test_stack(workdir: Path, extra: dict[str, Any] | None = None) -> TestStack:
    """Start the test stack in ``workdir``; ``extra`` adds top-level config keys (e.g. fallback_timeout)."""
    require_tools()
    base = pick_port_base()
    agent_ports = {aid: free_port() for aid in TEST_AGENTS}
    customer_port = free_port()   # the "carrier": callbacks and notices to customers ring a SIPp phone here
    agents = [{"id": aid, "name": f"Agent {aid}", "queues": qs, "logged_in": on, "skill": skill, "tier": tier,
               "team": "volunteers" if tier == "volunteer" else "a",
               "contact": f"sip:{aid}@127.0.0.1:{agent_ports[aid]}"}
              for aid, (qs, on, skill, tier) in TEST_AGENTS.items()]
    dialplans = workdir / "dialplans"
    dialplans.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT_ROOT / "dialplans" / "main.yaml", dialplans / "main.yaml")
    shutil.copy(FIXTURES / "dialplans" / "short.yaml", dialplans / "short.yaml")
    shutil.copy(FIXTURES / "dialplans" / "outcomes.yaml", dialplans / "outcomes.yaml")
    stack = Stack(workdir)
    stack.init(port_base=base, extra={"dialplans_dir": str(dialplans), "agents": agents,
                                      "log_level": "DEBUG", "balance": TEST_BALANCE, "api": TEST_API,
                                      "refunds": TEST_REFUNDS,
                                      "continuity": {"priority_groups": {"medical": 8}},
                                      "asterisk": {"trunk_uri": f"sip:127.0.0.1:{customer_port}",
                                                   "qualify_frequency": 5,
                                                   "outbound_callerid": "5550100"},
                                      "dids": {SHORT_MENU_DID: "short", BROKEN_MENU_DID: "nosuchmenu",
                                               OUTCOMES_MENU_DID: "outcomes"}, **(extra or {})})
    info = stack.up(timeout=60)
    api = Api(info["api"], info["token"])
    sipp = Sipp(target_port=int(info["sip"].rsplit(":", 1)[1]), workdir=workdir / "sipp")
    ts = TestStack(stack, info, api, sipp, agent_ports, customer_port)
    for port in agent_ports.values():
        ts.agent_procs.append(sipp.start_agent(port, talk_ms=2000))
    ts.agent_procs.append(sipp.start_callees(customer_port, talk_ms=20000))
    return ts


def stop_test_stack(ts: TestStack) -> None:
    for proc in ts.agent_procs:
        ts.sipp.stop(proc)
    ts.stack.down()


def cluster_port_base(nodes: int = 2) -> int:
    """A port base whose cluster ports (Kamailio, the Redis set's five, each node's) are all free, from this
    worker's slice."""
    from ivr.devtools.cluster import cluster_ports
    from ivr.devtools.stack import _port_in_use

    first, stop = worker_port_bases() or (40000, 58000)
    busy: list[int] = []
    for base in range(first, stop, 2000):
        ports = cluster_ports(base, nodes)
        wanted = [ports["kamailio"], *ports["redis_set"]] + [n[k] for n in ports["nodes"]
                                                        for k in ("sip", "ami", "agi", "api", "rtp_start")]
        busy = [p for p in wanted if _port_in_use("127.0.0.1", p) or _port_in_use("127.0.0.1", p, udp=True)]
        if not busy:
            return base
    raise AssertionError(f"no free port range for a cluster between {first} and {stop} (last busy: {busy})")
