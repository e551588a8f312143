"""Hostile caller IDs on the real stack: whatever a caller puts in the From header is data, never dialplan,
AGI or AMI syntax (the dialplan keeps only digits and +); the call runs the menu like any other and leaves
a record."""

from __future__ import annotations

import time

from ivr.sipp import CallerScript

from .harness import TestStack, wait_for

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
