"""Outbound campaigns on the real stack: SIPp callees behind the trunk answer and press keys,
are busy, do not answer, or are machines; outcomes are recorded and retried; nobody is dialled twice."""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.request

from .harness import TEST_AGENTS, TestStack, wait_for

BASE = "+120255501"


def csv_body(rows: list[tuple[str, str, str]]) -> bytes:
    lines = ["number,name,booking"] + [f"{n},{name},{b}" for n, name, b in rows]
    return ("\n".join(lines) + "\n").encode()


def post_csv(stack: TestStack, cid: str, body: bytes) -> dict:
    req = urllib.request.Request(f"{stack.api.base}/api/v1/campaigns/{cid}/contacts", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {stack.api.token}", "Content-Type": "text/csv"})
    import json
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def campaign(cid: str, **over: object) -> dict:
    base = {"id": cid, "name": cid, "message": {"en": "notice-cancelled"}, "amd": False,
            "window": {"start": "00:00", "end": "23:59"}, "max_attempts": 2, "ring_timeout": 6,
            "retry": {"busy": 1, "no_answer": 1, "failed": 1, "no_key": 1, "machine": 1, "unknown": 1},
            "pacing": {"cps": 5, "max_channels": 8, "max_transfers": 2}, "allowed_prefixes": ["+1"]}
    base.update(over)
    return base


def contacts_of(stack: TestStack, cid: str) -> dict[str, dict]:
    import csv
    import io
    req = urllib.request.Request(f"{stack.api.base}/api/v1/campaigns/{cid}/export",
                                 headers={"Authorization": f"Bearer {stack.api.token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        # the export writes numbers as text ('+1202...: no spreadsheet formula); read back as the number itself
        rows = [{**r, "number": r["number"].removeprefix("'")} for r in csv.DictReader(io.StringIO(resp.read().decode()))]
        return {r["number"]: r for r in rows}


def run_to_done(stack: TestStack, cid: str, timeout: float = 120) -> dict:
    stack.api.post(f"/api/v1/campaigns/{cid}/start")
    return wait_for(lambda: (c := stack.api.get(f"/api/v1/campaigns/{cid}"))["state"] == "done" and c,
                    timeout=timeout, interval=0.5, what=f"campaign {cid} to finish")


def test_outcomes_are_recorded_and_retried_and_nobody_is_dialled_twice(stack: TestStack) -> None:
    cid = "t-outcomes"
    status, body = stack.api.request("POST", "/api/v1/campaigns", campaign(cid))
    assert status == 201, body
    report = post_csv(stack, cid, csv_body([
        (f"{BASE}01", "Key one", "123456"), (f"{BASE}04", "Key two", ""), (f"{BASE}05", "Opt out", ""),
        (f"{BASE}06", "Busy", ""), (f"{BASE}07", "No answer", ""), (f"{BASE}09", "Silent", ""),
        ("+442079460000", "Abroad", ""), ("not-a-number", "Bad", ""), (f"{BASE}11", "${EXEC(rm)}", ""),
        (f"{BASE}01", "Duplicate", "")]))
    assert report["imported"] == 6 and report["merged"] == 1 and report["rejected"] == 3, report
    reasons = {e["line"]: e["reason"] for e in report["errors"]}
    assert "not allowed" in reasons[8] and "name" in reasons[10]

    done = run_to_done(stack, cid)
    c = contacts_of(stack, cid)
    k1, k2, k9 = c[f"{BASE}01"], c[f"{BASE}04"], c[f"{BASE}05"]
    assert (k1["status"], k1["keypress"], k1["last_outcome"], k1["attempts"]) == ("done", "1", "refund", "1")
    assert stack.api.get("/api/v1/refunds/by-booking/123456")["source"] == "notice"
    assert (k2["status"], k2["last_outcome"]) == ("done", "callback")
    assert (k9["status"], k9["last_outcome"]) == ("optout", "optout")
    for number, outcome in ((f"{BASE}06", "busy"), (f"{BASE}07", "no_answer"), (f"{BASE}09", "no_key")):
        assert (c[number]["status"], c[number]["last_outcome"], c[number]["attempts"]) == ("failed", outcome, "2"), c[number]
    assert done["counts"].get("failed") == 3 and done["counts"].get("done") == 2

    # the callee phones saw exactly one INVITE per recorded attempt; key 2 may also have been
    # called back already by the balancing loop (one more INVITE, from the callback, not the campaign)
    invites = stack.sipp.invites_received(stack.customer_port)
    for number, row in c.items():
        got, attempts = invites.get(number.lstrip("+"), 0), int(row["attempts"])
        if number == f"{BASE}04":
            assert attempts <= got <= attempts + 1, (number, got, row)
        else:
            assert got == attempts, (number, got, row)
    # every campaign call left through the trunk with the configured caller ID
    callers = stack.sipp.invite_callers(stack.customer_port)
    for number in c:
        if invites.get(number.lstrip("+")):
            assert callers[number.lstrip("+")] == {stack.stack.config().asterisk.outbound_callerid}, number

    # opting out put the number on the do-not-call list: a new campaign does not call it
    cid2 = "t-dnc"
    assert stack.api.request("POST", "/api/v1/campaigns", campaign(cid2))[0] == 201
    assert post_csv(stack, cid2, csv_body([(f"{BASE}05", "Opted out", "")]))["dnc"] == 1
    stack.api.post(f"/api/v1/campaigns/{cid2}/start")
    time.sleep(2)
    assert invites.get("12025550105") == stack.sipp.invites_received(stack.customer_port).get("12025550105")


def test_answering_machines_hear_the_voicemail_message(stack: TestStack) -> None:
    cid = "t-amd"
    assert stack.api.request("POST", "/api/v1/campaigns", campaign(cid, amd=True, max_attempts=1))[0] == 201
    post_csv(stack, cid, csv_body([(f"{BASE}08", "Machine", ""), (f"{BASE}18", "Machine two", "")]))
    run_to_done(stack, cid, timeout=90)
    c = contacts_of(stack, cid)
    for number in (f"{BASE}08", f"{BASE}18"):
        assert (c[number]["status"], c[number]["last_outcome"]) == ("failed", "machine"), c[number]


def start_under_way(stack: TestStack, cid: str, rows: list[tuple[str, str, str]]) -> dict[str, int]:
    """Create and start a 4 calls/s campaign of ``rows``; return the INVITE counts from before it started,
    once two contacts are done."""
    assert stack.api.request("POST", "/api/v1/campaigns",
                             campaign(cid, pacing={"cps": 4, "max_channels": 6, "max_transfers": 1}))[0] == 201
    assert post_csv(stack, cid, csv_body(rows))["imported"] == len(rows)
    before = stack.sipp.invites_received(stack.customer_port)
    stack.api.post(f"/api/v1/campaigns/{cid}/start")
    wait_for(lambda: stack.api.get(f"/api/v1/campaigns/{cid}")["counts"].get("done", 0) >= 2, timeout=30,
             what="the campaign to be under way")
    return before


def test_a_killed_controller_neither_skips_nor_double_dials(stack: TestStack) -> None:
    cid = "t-kill"
    rows = [(f"+1202555{2000 + i:04d}", f"Kill {i}", f"{700000 + i}") for i in range(24) if (2000 + i) % 10 <= 3]
    before = start_under_way(stack, cid, rows)
    pid = int((stack.stack.pids / "controller.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    (stack.stack.pids / "controller.pid").unlink(missing_ok=True)
    stack.stack.restart_controller()
    done = wait_for(lambda: (c := stack.api.get(f"/api/v1/campaigns/{cid}"))["state"] == "done" and c,
                    timeout=120, interval=0.5, what="the campaign to finish after the restart")
    c = contacts_of(stack, cid)
    assert len(c) == len(rows) and all(r["status"] == "done" for r in c.values()), \
        {n: r["status"] for n, r in c.items() if r["status"] != "done"}
    after = stack.sipp.invites_received(stack.customer_port)
    for number, row in c.items():
        digits = number.lstrip("+")
        got = after.get(digits, 0) - before.get(digits, 0)
        assert got == int(row["attempts"]), (number, got, row)   # every INVITE is a recorded attempt
        assert int(row["attempts"]) <= 2
    assert done["counts"]["done"] == len(rows)


def test_a_restarted_redis_neither_loses_nor_double_dials(stack: TestStack) -> None:
    """Redis killed (SIGKILL) mid-campaign and started again on its AOF: outcomes that arrive meanwhile
    are kept by the dialler and written when it is back; no contact is skipped or lost."""
    cid = "t-redis"
    rows = [(f"+1202555{3000 + i:04d}", f"Redis {i}", f"{710000 + i}") for i in range(30) if (3000 + i) % 10 <= 3]
    before = start_under_way(stack, cid, rows)
    pid = int((stack.stack.pids / "redis.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    time.sleep(4)   # calls in flight end while Redis is down; the API says so meanwhile
    status, body = stack.api.request("GET", "/api/v1/live")
    assert status == 503 and "Redis" in body["error"], (status, body)
    (stack.stack.pids / "redis.pid").unlink(missing_ok=True)
    stack.stack.restart_redis()

    def finished() -> dict | None:
        status, c = stack.api.request("GET", f"/api/v1/campaigns/{cid}")
        return c if status == 200 and c["state"] == "done" else None
    done = wait_for(finished, timeout=120, interval=0.5, what="the campaign to finish after Redis came back")
    c = contacts_of(stack, cid)
    assert len(c) == len(rows) and all(r["status"] == "done" for r in c.values()), \
        {n: (r["status"], r["last_outcome"]) for n, r in c.items() if r["status"] != "done"}
    after = stack.sipp.invites_received(stack.customer_port)
    for number, row in c.items():
        digits = number.lstrip("+")
        # every INVITE is a recorded attempt; a second one only where a keypress fell in the outage and its
        # action could not be stored (outcome unknown, retried under the campaign's retry rule)
        assert after.get(digits, 0) - before.get(digits, 0) == int(row["attempts"]) <= 2, (number, row)
        # nothing lost: every contact that chose a refund has its refund request
        assert row["last_outcome"] == "refund", row
        assert stack.api.get(f"/api/v1/refunds/by-booking/{710000 + int(digits[-4:]) - 3000}")["source"] == "notice"
    assert done["counts"]["done"] == len(rows)
    wait_for(lambda: stack.api.request("GET", "/health")[1].get("status") == "ok", timeout=20,
             what="the controller healthy again")


class QueueWatch(threading.Thread):
    """Samples, every 0.1 s, the campaign's channels in Queue() on the real Asterisk (core show channels
    concise: application field 5, account code field 8): its transfers in the agent queues, an agent's
    or not."""

    def __init__(self, stack: TestStack, cid: str) -> None:
        super().__init__(daemon=True)
        self.stack, self.cid = stack, cid
        self.samples: list[tuple[float, list[str]]] = []   # (time, channels of the campaign in Queue())
        self.halt = threading.Event()

    def queue_channels(self) -> list[tuple[str, str]]:
        """(channel, account code) of every channel in Queue() now."""
        out = self.stack.stack._asterisk_cli("core show channels concise").stdout
        rows = [ln.split("!") for ln in out.splitlines() if ln.count("!") >= 8]
        return [(r[0], r[8]) for r in rows if r[5] == "Queue"]

    def in_queue(self, prefix: str = "") -> list[str]:
        """The campaign's channels in Queue() now (``prefix``: others by account code, e.g. cb: callbacks)."""
        want = prefix or f"c:{self.cid}:"
        return [chan for chan, code in self.queue_channels() if code.startswith(want)]

    def run(self) -> None:
        while not self.halt.is_set():
            self.samples.append((time.monotonic(), self.in_queue()))
            self.halt.wait(0.1)

    def most(self) -> int:
        return max((len(chans) for _, chans in self.samples), default=0)


def swap_agent_phone(stack: TestStack, aid: str, talk_ms: int) -> None:
    """Put another SIPp phone with this talk time on agent ``aid``'s port."""
    i = list(TEST_AGENTS).index(aid)
    stack.sipp.stop(stack.agent_procs[i])
    stack.agent_procs[i] = stack.sipp.start_agent(stack.agent_ports[aid], talk_ms=talk_ms)


def test_max_transfers_holds_the_dials_while_a_transfer_is_with_the_agents(stack: TestStack) -> None:
    """max_transfers 1: two callees answer at once and both press for an agent; one goes to the queue, the
    other is booked a callback (never two campaign calls in Queue() at once). While that transfer is with
    the agent (until the callee hangs up, 20 s after the keypress), a new contact is not dialled though the pace is full; it is dialled once the transfer
    ends."""
    cid = "t-transfers"
    first, second, later = "+12025554000", "+12025554001", "+12025554002"   # 0-3: answer, press 1 (agent)
    swap_agent_phone(stack, "1002", talk_ms=30_000)   # refunds rings its novice 1002 first (penalty 0)
    watch = QueueWatch(stack, cid)
    watch.start()
    try:
        assert stack.api.request("POST", "/api/v1/campaigns", campaign(
            cid, queue="refunds", options={"1": "agent"}, max_attempts=1,
            pacing={"cps": 5, "max_channels": 4, "max_transfers": 1}))[0] == 201
        assert post_csv(stack, cid, csv_body([(first, "First", ""), (second, "Second", "")]))["imported"] == 2
        stack.api.post(f"/api/v1/campaigns/{cid}/start")
        got = wait_for(lambda: (c := contacts_of(stack, cid)) and all(r["status"] == "done" for r in c.values())
                       and c, timeout=20, what="both callees to choose")
        outcomes = {n: r["last_outcome"] for n, r in got.items()}
        assert sorted(outcomes.values()) == ["agent", "callback"], outcomes
        assert all(r["keypress"] == "1" for r in got.values())
        # the transfer is with the agent; the refused callee is called back (agent 1001 is idle), and once
        # that call is over the pace is full again
        refused = next(n for n, o in outcomes.items() if o == "callback").lstrip("+")
        wait_for(lambda: stack.sipp.invites_received(stack.customer_port).get(refused, 0) == 2, timeout=15,
                 what="the callback to the refused callee")
        wait_for(lambda: watch.in_queue("cb:"), timeout=15, interval=0.1, what="the callback in the queue")
        wait_for(lambda: not watch.in_queue("cb:"), timeout=15, interval=0.1, what="the callback to end")
        view = wait_for(lambda: (v := stack.api.get(f"/api/v1/campaigns/{cid}"))["pace"] == 1.0 and v,
                        timeout=15, interval=0.2, what="the full pace back")
        assert view["transfers"] == 1 and view["held"] is True, view
        assert len(watch.in_queue()) == 1

        # a new contact while the transfer is in flight: not dialled, though the pace is full
        assert post_csv(stack, cid, csv_body([(later, "Later", "")]))["imported"] == 1
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            v = stack.api.get(f"/api/v1/campaigns/{cid}")
            assert stack.sipp.invites_received(stack.customer_port).get(later.lstrip("+"), 0) == 0, v
            assert v["held"] is True and v["transfers"] == 1 and v["pace"] == 1.0, v
            time.sleep(0.2)

        # the transfer ends (the callee hangs up 20 s after pressing 1): dialling resumes
        wait_for(lambda: not watch.in_queue(), timeout=20, interval=0.1, what="the transfer to end")
        ended = time.monotonic()
        wait_for(lambda: stack.sipp.invites_received(stack.customer_port).get(later.lstrip("+"), 0) == 1,
                 timeout=10, interval=0.1, what="the held contact to be dialled")
        resumed = time.monotonic() - ended
        assert resumed < 5, resumed
        # and that call may have its transfer now (the cap is free again): it goes to the queue too
        wait_for(lambda: watch.in_queue(), timeout=15, interval=0.1, what="the new call in the queue")
        stack.api.post(f"/api/v1/campaigns/{cid}/stop")
        for chan in watch.in_queue():
            stack.stack._asterisk_cli(f"channel request hangup {chan}")
        wait_for(lambda: stack.api.get(f"/api/v1/campaigns/{cid}")["transfers"] == 0, timeout=10,
                 what="the transfer count back to 0")
    finally:
        watch.halt.set()
        watch.join(5)
        swap_agent_phone(stack, "1002", talk_ms=2000)
    assert watch.most() == 1, [s for s in watch.samples if len(s[1]) > 1][:3]
    assert len(watch.samples) > 100
