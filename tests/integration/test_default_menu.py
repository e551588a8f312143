"""Every branch of the shipped default menu (dialplans/main.yaml), in English, Persian and Chinese,
through the real Asterisk with SIPp callers sending RFC 2833 DTMF."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from ivr.devtools.demo import prompt_seconds
from ivr.devtools.sipp import CallerScript
from ivr.store.redis_store import Store

from .harness import TestStack, start_test_stack, stop_test_stack, wait_for

LANG_KEYS = {"en": "1", "fa": "2", "zh": "3"}


def intro(lang: str) -> list[tuple[str, str | int]]:
    """Choose the language during the language prompt, skip the crisis message with #."""
    return [("pause", 800), ("dtmf", LANG_KEYS[lang]), ("pause", 500), ("dtmf", "#"), ("pause", 700)]


@dataclass
class Case:
    name: str
    steps: list[tuple[str, str | int]]
    end: str = "wait_bye"
    patience_ms: int = 0


def cases(lang: str, booking_known: str, booking_new: str, prompts: Path | None = None) -> dict[str, Case]:
    i = intro(lang)
    invalid_ms = int(prompt_seconds(prompts, lang, "booking-invalid") * 1000) + 900 if prompts else 0
    wrong_key_ms = int(prompt_seconds(prompts, lang, "invalid") * 1000) + 900 if prompts else 0
    return {
        "status_found": Case("status_found", i + [("dtmf", "1"), ("pause", 900), ("dtmf", booking_known)]),
        "status_none": Case("status_none", i + [("dtmf", "1"), ("pause", 900), ("dtmf", "987654"), ("pause", 4000)],
                            end="hangup"),
        "request": Case("request", i + [("dtmf", "2"), ("pause", 900), ("dtmf", booking_new)]),
        "callback": Case("callback", i + [("dtmf", "9"), ("pause", 4500), ("dtmf", "1")]),
        "bad_booking": Case("bad_booking", i + [("dtmf", "2"), ("pause", 900), ("dtmf", "000000"),
                                                ("pause", invalid_ms), ("dtmf", "000000"), ("pause", invalid_ms),
                                                ("dtmf", "000000")]),
        "rebooking_declines_callback": Case("rebooking_declines_callback", i + [("dtmf", "3"), ("pause", 900), ("dtmf", "2")],
                                            end="wait_bye", patience_ms=9000),
        "invalid_then_support": Case("invalid_then_support", i + [("dtmf", "7"), ("pause", wrong_key_ms), ("dtmf", "4")]),
        "timeout_to_support": Case("timeout_to_support", i, end="wait_bye", patience_ms=120_000),
        "hangup_in_menu": Case("hangup_in_menu", i + [("pause", 1500)], end="hangup"),
    }


def caller_number(lang: str, case: str) -> str:
    """A valid +1 202 555 7xx0-9xx0 number per branch and language (no other test's campaign notifies these):
    the callback branch's number is dialled, and the stack's outbound guard allows only valid +1202 numbers."""
    return f"1202555{7 + list(LANG_KEYS).index(lang)}{sorted(cases('en', '1', '1')).index(case):02d}0"


def records_for(stack: TestStack, caller: str) -> list[dict]:
    return [c for c in stack.api.get("/api/v1/calls?count=500")["calls"] if c.get("caller") == caller]


def store_for(stack: TestStack) -> Store:
    cfg = stack.stack.config()
    return Store.from_config(cfg.redis)


def create_refund(stack: TestStack, booking: str) -> dict:
    async def go() -> dict:
        store = store_for(stack)
        try:
            return await store.refunds.create(booking, caller="5559999", source="test")
        finally:
            await store.close()
    return asyncio.run(go())


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestStack]:
    """This file's own stack, started fresh: whether support can promise a callback depends on its recent past
    (arrivals in the last 15 min, handle time measured once 5 calls were answered), and on the session stack that
    past is whatever the files run before on the same worker left (with 4 workers, not the same files each run)."""
    ts = start_test_stack(tmp_path_factory.mktemp("default_menu"))
    try:
        yield ts
    finally:
        stop_test_stack(ts)


def test_every_branch_of_the_default_menu_in_three_languages(stack: TestStack) -> None:
    """27 callers at once (9 branches x 3 languages), then each record and side effect is checked."""
    prompts = Path(stack.stack.config().prompts_dir)
    procs = {}
    for lang in LANG_KEYS:
        n = list(LANG_KEYS).index(lang)
        booking_known, booking_new = f"31415{n}", f"27182{n}"
        known = create_refund(stack, booking_known)
        stack.api.post(f"/api/v1/refunds/{known['reference']}/status", {"status": "approved"})
        for name, case in cases(lang, booking_known, booking_new, prompts).items():
            script = CallerScript(steps=case.steps, end=case.end, patience_ms=case.patience_ms, wait_bye_ms=150_000)
            procs[(lang, name)] = stack.sipp.start_calls(script, extension=stack.main_extension,
                                                         caller=caller_number(lang, name), timeout_s=180)
    results = {key: stack.sipp.finish(p, timeout=240) for key, p in procs.items()}
    for (lang, name), res in results.items():
        assert res.ok, f"{lang}/{name}: SIPp failed: {res.errors[-800:]}"
    for lang in LANG_KEYS:
        check_branches(stack, lang, f"27182{list(LANG_KEYS).index(lang)}")


def check_branches(stack: TestStack, lang: str, booking_new: str) -> None:
    def rec(name: str) -> dict:
        # only the IVR call: a stored callback may already have been dialled (a second record, no menu)
        found = wait_for(lambda: [r for r in records_for(stack, caller_number(lang, name))
                                  if r.get("outcome") and r.get("menu") == "main"],
                         timeout=15, what=f"the record of {lang}/{name}")
        assert len(found) == 1, found
        r = found[0]
        assert r["language"] == lang, r
        assert r["path"][:4] == ["recognise", "language", "banner", "main"], r
        return r

    r = rec("status_found")
    assert r["path"][4:] == ["refund_status", "refund_status_lookup", "goodbye_self_service"]
    assert r["outcome"] == "self_service"
    assert json.loads(r["vars"])["refund_status"] == "approved"

    r = rec("status_none")
    assert r["path"][4:7] == ["refund_status", "refund_status_lookup", "refund_status_none"]
    assert r["outcome"] == "ivr_hangup"

    r = rec("request")
    assert r["path"][4:] == ["refund_request", "refund_create", "goodbye_self_service"]
    assert r["outcome"] == "self_service"
    ref = json.loads(r["vars"])["refund_reference"]
    refund = stack.api.get(f"/api/v1/refunds/{ref}")
    assert refund["booking"] == booking_new and refund["status"] == "received"
    assert refund["caller"] == caller_number(lang, "request") and refund["lang"] == lang

    r = rec("callback")
    assert r["path"][4:] == ["callback"]
    assert r["outcome"] == "callback_requested"
    cb_id = json.loads(r["vars"])["callback_id"]
    cb = stack.api.get(f"/api/v1/callbacks/{cb_id}")   # may already have been dialled by the balancing loop
    assert cb["number"] == caller_number(lang, "callback")
    assert cb["lang"] == lang and cb["queue"] == "support" and cb["status"] in ("pending", "dialling", "done")
    # support has agents to spare: the caller was promised a callback (the 15-minute floor at least)
    assert int(cb["promise_s"]) >= 900 and float(cb["due"]) == pytest.approx(
        float(cb["requested_at"]) + int(cb["promise_s"]), abs=1), cb

    r = rec("bad_booking")
    assert r["path"][4:] == ["refund_request", "retries-exhausted", "q_refunds"]
    assert r["queue"] == "refunds"

    r = rec("rebooking_declines_callback")
    # nobody serves rebooking: no callback can be promised, so none is offered (callback_over: auto); queued
    assert r["path"][4:] == ["q_rebooking"]
    assert r["queue"] == "rebooking" and r["outcome"] in ("abandoned", "left_queue")

    r = rec("invalid_then_support")
    assert r["path"][4:] == ["q_support"] and r["outcome"] == "answered"

    r = rec("timeout_to_support")
    assert r["path"][4:] == ["retries-exhausted", "q_support"] and r["outcome"] == "answered"

    r = rec("hangup_in_menu")
    assert r["path"] == ["recognise", "language", "banner", "main"] and r["outcome"] == "ivr_hangup"


def test_post_call_survey_is_stored_in_each_language(stack: TestStack) -> None:
    prompts = Path(stack.stack.config().prompts_dir)
    procs = {}
    for lang in LANG_KEYS:
        hold = prompt_seconds(prompts, lang, "please-hold")
        intro_s = prompt_seconds(prompts, lang, "survey-intro")
        # after choosing 4: please-hold, answer (~0.2 s), 2 s of talk, then the survey prompt
        press_at = int((hold + 0.4 + 2.0 + min(1.5, intro_s / 2)) * 1000)
        caller = f"55599{list(LANG_KEYS).index(lang)}1"
        script = CallerScript(steps=intro(lang) + [("dtmf", "4"), ("pause", press_at), ("dtmf", "4")],
                              end="wait_bye", wait_bye_ms=60_000)
        procs[lang] = (caller, stack.sipp.start_calls(script, extension=stack.main_extension, caller=caller,
                                                      timeout_s=90))
        time.sleep(3.0)  # two agents serve support (2 s talk): stagger so each caller is answered at once
    for lang, (caller, proc) in procs.items():
        res = stack.sipp.finish(proc, timeout=120)
        assert res.ok, f"{lang}: {res.errors}"
        r = wait_for(lambda caller=caller: [x for x in records_for(stack, caller) if x.get("outcome")], timeout=15,
                     what=f"the survey call's record ({lang})")[0]
        assert r["outcome"] == "answered" and r["survey"] == "4", r
        assert r["language"] == lang
        surveys = [s for s in stack.api.get("/api/v1/surveys")["surveys"] if s["uid"] == r["uniqueid"]]
        assert surveys and surveys[0]["score"] == "4" and surveys[0]["queue"] == "support"
