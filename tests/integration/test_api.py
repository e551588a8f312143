"""The supervisor API on the real stack: roles on every route, bad input never a 500, failed logins
rate limited, volunteers added with a working SIP account, reports from real calls."""

from __future__ import annotations

import csv
import io
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest
import redis as redis_sync

from ivr.devtools.sipp import CallerScript, free_port

from .harness import TestStack, create_token, fail2ban_regex, wait_for

RANK = {"viewer": 0, "supervisor": 1, "admin": 2}
NEVER_ENDS = {("get", "/api/v1/stream")}   # server-sent events: checked for auth only


def raw(stack: TestStack, method: str, path: str, data: bytes | None = None, token: str | None = None,
        content_type: str = "application/json") -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(stack.info["api"] + path, data=data, method=method.upper())
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def operations(stack: TestStack) -> list[tuple[str, str, dict[str, Any]]]:
    status, _, body = raw(stack, "GET", "/api/v1/openapi.json")
    assert status == 200
    doc = json.loads(body)
    return [(m, p, op) for p, ms in doc["paths"].items() for m, op in ms.items()]


def fill(path: str, value: str = "0") -> str:
    return re.sub(r"{\w+}", urllib.parse.quote(value, safe=""), path)


def test_every_route_refuses_missing_and_low_role_tokens(stack: TestStack) -> None:
    viewer = create_token(stack, "role-test-viewer", "viewer")
    supervisor = create_token(stack, "role-test-supervisor", "supervisor")
    tokens = {"viewer": viewer, "supervisor": supervisor}
    checked = 0
    for method, path, op in operations(stack):
        role = op.get("x-required-role")
        url = fill(path)
        if role is None:
            continue
        status, _, body = raw(stack, method, url)
        assert status == 401, (method, path, status)
        assert "missing bearer token" in json.loads(body)["error"]
        for name, token in tokens.items():
            if (method, path) in NEVER_ENDS:
                continue
            # a body no route accepts: nothing is created or changed by this probe
            status, _, body = raw(stack, method, url, b'{"probe": 1}' if method in ("post", "put", "patch") else None,
                                  token=token)
            if RANK[name] < RANK[role]:
                assert status == 403, (name, method, path, status, body)
                err = json.loads(body)["error"]
                assert f"needs the {role} role" in err and name in err
            else:
                assert status not in (401, 403), (name, method, path, status, body)
        checked += 1
    assert checked >= 35
    # one unknown token (it counts as a failed login): refused with a JSON error
    status, _, body = raw(stack, "GET", "/api/v1/live", token="not-a-real-token")
    assert status == 401 and json.loads(body) == {"error": "unknown token", "status": 401}


BAD_BODIES = [b"not json", b"[]", b"null", b'{"text": 5, "status": [], "queues": "x", "penalty": 1e999}',
              b'{"' + b"a" * 5000 + b'": 1}', b"\xff\xfe\x00", b'{"name": "x\\r\\ny", "skill": null}']
BAD_VALUES = ["0", "..%2F..%2Fetc", "x" * 300, "'; DROP", "\u00e9\u4e2d", "-1", "1e99"]


def test_no_request_input_gives_a_500(stack: TestStack) -> None:
    token = stack.api.token   # admin: every route is reachable
    sent = 0
    for method, path, _op in operations(stack):
        if (method, path) in NEVER_ENDS:
            continue
        for value in BAD_VALUES:
            url = fill(path, value)
            queries = ["", "?count=abc&by=week&since=yesterday&hours=-1&tz=Mars%2FBase&format=xml&region=ZZ"]
            for query in queries:
                bodies = BAD_BODIES if method in ("post", "put", "patch") else [None]
                for data in bodies:
                    status, _, body = raw(stack, method, url + query, data, token=token)
                    sent += 1
                    assert status < 500, (method, url + query, data, status, body[:300])
                    if status >= 400 and path.startswith("/api/"):
                        assert "error" in json.loads(body), (method, url, body[:200])
    assert sent > 1500
    # the controller is still healthy after all that
    assert stack.api.get("/health")["status"] == "ok"


def failures(stack: TestStack, address: str = "127.0.0.1") -> int:
    import asyncio

    from ivr.store.redis_store import Store

    async def count() -> int:
        store = Store.from_config(stack.stack.config().redis)
        try:
            return (await store.auth_failures(address))[0]
        finally:
            await store.close()
    return asyncio.run(count())


def test_failed_logins_are_rate_limited_per_address(stack: TestStack) -> None:
    cfg = stack.stack.config().api
    wait_for(lambda: failures(stack) == 0, timeout=cfg.auth_fail_window + 2, what="earlier failures to expire")
    statuses = [raw(stack, "GET", "/api/v1/live", token=f"guess-{i}")[0] for i in range(cfg.auth_fail_limit)]
    assert statuses == [401] * cfg.auth_fail_limit
    status, headers, body = raw(stack, "GET", "/api/v1/live", token="guess-again")
    assert status == 429 and 1 <= int(headers["Retry-After"]) <= cfg.auth_fail_window
    assert "too many failed logins from 127.0.0.1" in json.loads(body)["error"]
    # a valid token is checked first: a locked-out address never shuts out a supervisor (or Prometheus)
    assert raw(stack, "GET", "/api/v1/live", token=stack.api.token)[0] == 200
    assert raw(stack, "GET", "/metrics", token=stack.api.token)[0] == 200
    assert failures(stack) == cfg.auth_fail_limit   # successes and refusals while locked out count nothing
    # public routes stay open
    assert raw(stack, "GET", "/health")[0] == 200
    wait_for(lambda: raw(stack, "GET", "/api/v1/live", token="guess-after")[0] == 401,
             timeout=cfg.auth_fail_window + 2, what="the lock-out window to end")
    log = (stack.stack.workdir / "logs" / "controller.log").read_text(errors="replace")
    assert re.search(r"WARNING ivr\.api\.app: API authentication failure from 127\.0\.0\.1 \(\d+ in window\)", log)
    hosts = {m.group("host") for m in map(fail2ban_regex("ivr-api").search, log.splitlines()) if m}
    assert hosts == {"127.0.0.1"}   # the filter shipped in docs/fail2ban matches those lines
    assert "guess-" not in log   # tokens are never logged


def test_behind_the_trusted_proxy_failures_count_against_the_forwarded_client(stack: TestStack) -> None:
    cfg = stack.stack.config().api
    assert "127.0.0.1" in cfg.trusted_proxies    # the test stack treats loopback as its reverse proxy
    client, colleague = "203.0.113.7", "198.51.100.20"
    wait_for(lambda: failures(stack, client) == failures(stack) == 0, timeout=cfg.auth_fail_window + 2,
             what="earlier failures to expire")

    def guess(token: str, address: str) -> int:
        req = urllib.request.Request(stack.info["api"] + "/api/v1/live", headers={
            "Authorization": f"Bearer {token}", cfg.client_ip_header: address})
        try:
            with urllib.request.urlopen(req, timeout=15) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code
    statuses = [guess(f"guess-{i}", client) for i in range(cfg.auth_fail_limit + 1)]
    assert statuses == [401] * cfg.auth_fail_limit + [429]
    assert guess("typo", colleague) == 401       # the proxy's other clients are not locked out
    assert guess(stack.api.token, client) == 200
    assert failures(stack) == 0                  # nothing counted against the proxy itself
    log = (stack.stack.workdir / "logs" / "controller.log").read_text(errors="replace")
    hosts = {m.group("host") for m in map(fail2ban_regex("ivr-api").search, log.splitlines()) if m}
    assert {client, colleague} <= hosts          # fail2ban bans the client, not the proxy


def test_a_request_path_cannot_forge_a_log_line_for_fail2ban(stack: TestStack) -> None:
    forged = "2026-01-01 00:00:00,000 WARNING ivr.api.app: API authentication failure from 6.6.6.6 (1 in window) on"
    status, _, _ = raw(stack, "GET", "/api/v1/x" + urllib.parse.quote("\n" + forged + " GET /"), token="bad-guess")
    assert status == 401
    path = stack.stack.workdir / "logs" / "controller.log"
    line = wait_for(lambda: [ln for ln in path.read_text(errors="replace").splitlines() if "/api/v1/x" in ln],
                    timeout=5, what="the failure in the log")[-1]
    assert "/api/v1/x\\n2026-01-01" in line           # the newline arrives escaped, in the same line
    hosts = {m.group("host") for m in map(fail2ban_regex("ivr-api").search, path.read_text().splitlines()) if m}
    assert "6.6.6.6" not in hosts and "127.0.0.1" in hosts


def test_the_event_stream_opens_with_a_single_use_ticket_not_a_token_in_the_url(stack: TestStack) -> None:
    viewer = create_token(stack, "stream-viewer", "viewer")
    status, headers, body = raw(stack, "POST", "/api/v1/stream/ticket", token=viewer)
    assert status == 201 and headers["Cache-Control"] == "no-store"
    ticket = json.loads(body)["ticket"]

    def first_line(query: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(stack.info["api"] + "/api/v1/stream" + query, timeout=15) as resp:
                return resp.status, resp.readline()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
    status, line = first_line(f"?ticket={ticket}")
    assert status == 200 and line.startswith(b"data: {")
    status, body = first_line(f"?ticket={ticket}")
    assert status == 401 and b"unknown, used or expired stream ticket" in body
    status, body = first_line(f"?token={viewer}")
    assert status == 401 and b"a token in the URL is refused" in body
    # only the ticket's hash is in Redis, and it expires
    rc = stack.stack.config().redis
    client = redis_sync.Redis.from_url(rc.url, password=rc.password or None, decode_responses=True)
    try:
        fresh = json.loads(raw(stack, "POST", "/api/v1/stream/ticket", token=viewer)[2])["ticket"]
        keys = [k for k in client.scan_iter(match="*streamticket*")]
        assert keys and not any(fresh in k for k in keys)
        assert all(0 < client.ttl(k) <= 30 for k in keys)
    finally:
        client.close()


def test_volunteer_added_by_api_registers_takes_a_call_and_is_removed(stack: TestStack) -> None:
    status, body = stack.api.request("POST", "/api/v1/agents", {"name": "Vol Test", "queues": ["rebooking"],
                                                                "skill": "experienced", "team": "green"})
    assert status == 201, body
    agent, sip = body["agent"], body["sip"]
    aid, password = agent["id"], sip["password"]
    assert agent["tier"] == "volunteer" and agent["source"] == "api" and agent["logged_in"] is False
    assert sip["username"] == aid and len(password) >= 20 and str(stack.sip_port) == str(sip["port"])
    configs = body["phone_configs"]
    assert f"passwd={password}" in configs["linphonerc"] and f"account.1.password = {password}" in configs["yealink_cfg"]
    conf = (stack.stack.asterisk_etc / "pjsip_volunteers.conf").read_text()
    assert f"[{aid}-auth]" in conf and password not in conf
    assert password not in (stack.stack.workdir / "logs" / "controller.log").read_text(errors="replace")
    # errors name the field; a duplicate id is a conflict
    status, err = stack.api.request("POST", "/api/v1/agents", {"name": "X", "skill": "guru"})
    assert status == 400 and "skill" in err["error"]
    status, err = stack.api.request("POST", "/api/v1/agents", {"id": aid, "name": "Again"})
    assert status == 409 and "exists already" in err["error"]

    port = free_port()
    wrong = stack.sipp.register(aid, password + "x", port)
    assert not wrong.ok, "a wrong password must be refused"
    # ... and logged where fail2ban's asterisk filter looks, without the password
    security = stack.stack.workdir / "asterisk" / "log" / "security"
    line = wait_for(lambda: [ln for ln in security.read_text(errors="replace").splitlines()
                             if 'SecurityEvent="ChallengeResponseFailed"' in ln and f'AccountID="{aid}"' in ln],
                    timeout=10, what="the failed registration in the security log")[0]
    assert 'RemoteAddress="IPV4/UDP/127.0.0.1/' in line and password not in security.read_text(errors="replace")
    m = fail2ban_regex("ivr-asterisk").search(line)   # the filter shipped in docs/fail2ban matches it
    assert m and m.group("host") == "127.0.0.1", line
    reg = stack.sipp.register(aid, password, port)
    assert reg.ok, reg.errors or reg.stdout
    phone = stack.sipp.start_agent(port, talk_ms=1500)
    try:
        # a volunteer serves only while overflow is open: make them core for this call, with a base penalty
        changed = stack.api.request("PATCH", f"/api/v1/agents/{aid}", {"tier": "core", "penalty": 3})[1]
        assert changed["tier"] == "core" and changed["penalty"] == 3
        stack.api.post(f"/api/v1/agents/{aid}/login")
        member = wait_for(lambda: [m for m in stack.queue("rebooking").get("members", [])
                                   if m["interface"] == f"PJSIP/{aid}"], timeout=15, what="the volunteer in rebooking")
        assert member[0]["penalty"] == 3 + 0   # experienced on a complex queue: the policy adds 0
        result = stack.sipp.call(CallerScript(steps=[("pause", 700), ("dtmf", "3")], end="wait_bye",
                                              wait_bye_ms=30_000),
                                 extension=stack.extension, caller="5557100", timeout_s=45)
        assert result.ok, result.errors
        calls = wait_for(lambda: [c for c in stack.api.get("/api/v1/calls?count=30")["calls"]
                                  if c.get("caller") == "5557100"], timeout=10, what="the call record")
        assert calls[0]["outcome"] == "answered" and calls[0]["agent"] == "Vol Test"
    finally:
        stack.sipp.stop(phone)
    status, out = stack.api.request("DELETE", f"/api/v1/agents/{aid}")
    assert status == 200 and out["removed"] is True
    wait_for(lambda: not [m for m in stack.queue("rebooking").get("members", [])
                          if m["interface"] == f"PJSIP/{aid}"], timeout=10, what="the volunteer to leave rebooking")
    assert not stack.sipp.register(aid, password, free_port()).ok, "a removed agent's account must be gone"
    assert all(a["id"] != aid for a in stack.api.get("/api/v1/agents")["agents"])
    status, err = stack.api.request("DELETE", "/api/v1/agents/1001")
    assert status == 409 and "config file" in err["error"]
    actions = [(e["action"], e["target"]) for e in stack.api.get("/api/v1/audit")["audit"]]
    assert {("agent.add", aid), ("agent.update", aid), ("agent.remove", aid)} <= set(actions)


def test_agent_cli_goes_through_the_running_controller(stack: TestStack) -> None:
    import subprocess
    import sys

    def ivr(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ivr", "agent", *args, "--config", str(stack.stack.config_path)],
                              capture_output=True, text=True, timeout=60)
    added = ivr("add", "--name", "CLI Volunteer", "--queues", "refunds", "--languages", "en,zh")
    assert added.returncode == 0, added.stderr
    out = json.loads(added.stdout)
    aid = out["agent"]["id"]
    assert out["agent"]["queues"] == ["refunds"] and out["agent"]["languages"] == ["en", "zh"]
    assert out["sip"]["password"] and "shown once" in added.stderr
    upd = ivr("update", "--id", aid, "--skill", "experienced", "--penalty", "2")
    assert upd.returncode == 0 and json.loads(upd.stdout)["skill"] == "experienced", upd.stderr
    bad = ivr("update", "--id", aid, "--queues", "nosuch")
    assert bad.returncode == 1 and "queues: unknown queue 'nosuch'" in bad.stderr
    listed = json.loads(ivr("list").stdout)["agents"]
    assert any(a["id"] == aid and a["penalty"] == 2 for a in listed)
    assert ivr("remove", "--id", aid).returncode == 0
    gone = ivr("remove", "--id", aid)
    assert gone.returncode == 1 and f"no agent '{aid}'" in gone.stderr


def _idle(stack: TestStack) -> bool:
    h = stack.api.get("/health")
    return h["records"]["active"] == 0 and h["records"]["pending"] == 0 and h["agi"]["active_calls"] == 0


def test_reports_count_real_calls_by_hour(stack: TestStack) -> None:
    wait_for(lambda: _idle(stack), timeout=30, what="no call in progress")
    time.sleep(1.5)   # records of calls that just ended are written ~1 s after the hangup
    since = time.time()
    answered = CallerScript(steps=[("pause", 700), ("dtmf", "1")], end="wait_bye", wait_bye_ms=30_000)
    hangup = CallerScript(steps=[("pause", 1500)], end="hangup")
    for script, caller in ((answered, "5557201"), (hangup, "5557201"), (answered, "5557202")):
        res = stack.sipp.call(script, extension=stack.extension, caller=caller, timeout_s=45)
        assert res.ok, res.errors
    wait_for(lambda: _idle(stack), timeout=30, what="the calls' records")
    time.sleep(1.5)
    until = time.time()
    query = urllib.parse.urlencode({"since": f"{since:.3f}", "until": f"{until:.3f}", "by": "hour"})
    data = stack.api.get(f"/api/v1/reports?{query}")
    total = data["total"]
    assert total["calls"] == 3, data
    assert (total["offered"], total["answered"], total["abandoned"]) == (2, 2, 0)
    assert total["service_level"] == 1.0 and total["asa_s"] is not None and total["asa_s"] <= 20
    assert total["aht_s"] is not None and total["aht_s"] >= 1
    assert total["fcr"] == round(2 / 3, 3)    # 5557201 called twice within 24 h
    assert data["rows"] and data["rows"][0]["period"].endswith(":00")

    status, headers, body = raw(stack, "GET", f"/api/v1/reports?{query}&format=csv", token=stack.api.token)
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert rows[-1]["period"] == "total" and rows[-1]["calls"] == "3" and rows[-1]["answered"] == "2"

    status, _, body = raw(stack, "GET", "/api/v1/reports?by=week", token=stack.api.token)
    assert status == 400 and "by: expected hour or day" in json.loads(body)["error"]

    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "ivr", "report", "--config", str(stack.stack.config_path),
                          "--since", f"{since:.3f}", "--until", f"{until:.3f}", "--format", "json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["total"] == total
    bad = subprocess.run([sys.executable, "-m", "ivr", "report", "--config", str(stack.stack.config_path),
                          "--tz", "Mars/Base"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "tz: unknown time zone" in bad.stderr


@pytest.fixture(autouse=True)
def _not_locked_out(stack: TestStack) -> None:
    """Each test starts with the address not locked out by an earlier one."""
    window = stack.stack.config().api.auth_fail_window
    wait_for(lambda: raw(stack, "GET", "/api/v1/live", token=stack.api.token)[0] == 200, timeout=window + 2,
             what="the API to accept the admin token")
