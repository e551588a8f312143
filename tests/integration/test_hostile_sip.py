"""Hostile callers on the real stack: whatever a caller puts in the From header is data, never dialplan,
AGI or AMI syntax (the dialplan keeps only digits and +); the call runs the menu like any other and leaves
a record. A caller who names the trunk in the From header is still identified by address only: from
anywhere but the carrier's address it is challenged, refused and logged for fail2ban."""

from __future__ import annotations

import time

from ivr.devtools.sipp import CallerScript

from .harness import TestStack, fail2ban_regex, wait_for

# ${...} dialplan syntax, URI parameters, a CR/LF with an AMI-looking line, a very long one, quotes, a word
HOSTILE = {"$%7BEXEC(Hangup)%7D": "", "1234;evil=1": "1234", "555%0D%0AEvent:%20Hangup": "555",
           "x" * 120: "", "%27%22%3B--": "", "anonymous": "", "%2B442079460000": "442079460000"}


def test_hostile_caller_ids_are_served_and_recorded_as_data(stack: TestStack) -> None:
    before = stack.api.request("GET", "/health")[1]
    t0 = time.time()
    for raw in HOSTILE:
        # the short menu: a beep, then 1 -> support, where an agent answers
        res = stack.sipp.call(CallerScript([("pause", 600), ("dtmf", "1")], end="wait_bye", wait_bye_ms=30_000),
                              extension=stack.extension, caller=raw, timeout_s=40)
        assert res.ok, (raw, res.errors)
    mine = wait_for(lambda: (cs := [c for c in stack.api.get("/api/v1/calls?count=300")["calls"]
                                    if c.get("menu") == "short" and float(c.get("started_at") or 0) >= t0])
                    and len(cs) == len(HOSTILE) and cs, timeout=15, what="a record for each hostile caller")
    # every caller ran the menu (no fallback), was answered, and kept only the digits of what they sent
    assert all(c["outcome"] == "answered" and c["fallback"] == "0" for c in mine), mine
    assert sorted(c["caller"] for c in mine) == sorted(HOSTILE.values())
    after = stack.api.request("GET", "/health")[1]
    assert after["agi"]["failed"] == before["agi"]["failed"]
    assert after["ami"]["connected"] and after["ami"]["reconnects"] == before["ami"]["reconnects"]
    log = (stack.stack.logs / "controller.log").read_text()
    assert "Event: Hangup" not in log and "${EXEC" not in log


def test_a_caller_claiming_to_be_the_trunk_from_another_address_is_refused_and_logged(stack: TestStack) -> None:
    security = stack.stack.asterisk_state / "log" / "security"

    def short_menu_calls(since: float) -> list[dict[str, object]]:
        return [c for c in stack.api.get("/api/v1/calls?count=300")["calls"]
                if c.get("menu") == "short" and float(c.get("started_at") or 0) >= since]

    script = CallerScript([("pause", 600), ("dtmf", "1")], end="wait_bye", wait_bye_ms=30_000)
    t0 = time.time()
    # From: <sip:trunk@127.0.0.2>, sent from 127.0.0.2 (the trunk is matched on 127.0.0.1 only)
    spoof = stack.sipp.call(script, extension=stack.extension, caller="trunk", source="127.0.0.2", timeout_s=15)
    assert spoof.successful == 0 and not spoof.ok, spoof.stdout
    line = wait_for(lambda: [ln for ln in security.read_text(errors="replace").splitlines()
                             if 'RemoteAddress="IPV4/UDP/127.0.0.2/' in ln
                             and 'SecurityEvent="InvalidAccountID"' in ln and 'AccountID="trunk"' in ln],
                    timeout=10, what="the refused INVITE in the security log")[0]
    m = fail2ban_regex("ivr-asterisk").search(line)   # fail2ban bans the address that tried
    assert m and m.group("host") == "127.0.0.2", line
    time.sleep(1.0)
    assert short_menu_calls(t0) == [], "the spoofed call must not reach the menu"
    # the carrier's address still reaches the menu, whatever user its From header carries
    for caller in ("trunk", "5557300"):
        t1 = time.time()
        real = stack.sipp.call(script, extension=stack.extension, caller=caller, timeout_s=40)
        assert real.ok, (caller, real.errors)
        wait_for(lambda t1=t1: len(short_menu_calls(t1)) == 1, timeout=10, what=f"the call from {caller} in the menu")
