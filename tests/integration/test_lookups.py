"""Look-ups against the business's own system on the real stack: a SIPp caller keys a booking number and hears
its status read out from an HTTP server this test runs on 127.0.0.1 (``lookups:`` in ivr.yaml, the auth header
from secrets.yaml); a slow answer sends the next caller to the node's error branch within the time-out; a
backend that keeps failing opens its circuit (no more requests reach it) and /metrics shows it."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from typing import Any, Iterator

import pytest
import yaml
from aiohttp import web

from ivr.app.config_load import write_secrets
from ivr.devtools.sipp import CallerScript

from .harness import BROKEN_MENU_DID, OUTCOMES_MENU_DID, SHORT_MENU_DID, TestStack, start_test_stack, \
    stop_test_stack, wait_for
from .test_continuity import records_of

LOOKUP_DID = "504"
TOKEN = "Bearer it-s3cret"       # written to the test stack's secrets.yaml, never to ivr.yaml

LOOKUP_MENU = {
    "name": "lookup", "start": "ask", "languages": ["en", "fa", "zh"],
    "nodes": {
        "ask": {"type": "collect", "prompts": ["enter-booking"], "min": 6, "max": 6, "timeout": 8,
                "save_as": "booking", "next": "look", "on_fail": "bye"},
        "look": {"type": "lookup", "backend": "bookings", "operation": "get", "params": {"booking": "{booking}"},
                 "say": [{"prompt": "refund-status-intro"}, {"prompt": "status-{status}"},
                         {"digits": "{reference}"}],
                 "save_as": "bk", "found": "bye", "not_found": "none", "error": "err"},
        "bye": {"type": "hangup", "outcome": "self_service"},
        "none": {"type": "hangup", "prompts": ["status-not-found"], "outcome": "self_service"},
        "err": {"type": "hangup", "prompts": ["sound:beep"], "outcome": "self_service"},
    },
}


class Bookings:
    """The business's booking system: an aiohttp server in a thread of its own, on 127.0.0.1."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None]] = []
        self.down = False
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ref = request.match_info["ref"]
        self.requests.append((ref, request.headers.get("Authorization")))
        if request.headers.get("Authorization") != TOKEN:
            return web.Response(status=401)
        if self.down:
            return web.Response(status=500, text="database is on fire")
        if ref == "777777":
            await asyncio.sleep(4)
        return web.json_response({"data": {"state": "approved", "ref": f"9{ref}"}})

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/api/bookings/{ref}", self.handle)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # the bound socket
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="module")
def bookings() -> Iterator[Bookings]:
    b = Bookings()
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def lstack(tmp_path_factory: pytest.TempPathFactory, bookings: Bookings) -> Iterator[TestStack]:
    workdir = tmp_path_factory.mktemp("lookups")
    (workdir / "dialplans").mkdir()
    (workdir / "dialplans" / "lookup.yaml").write_text(yaml.safe_dump(LOOKUP_MENU), encoding="utf-8")
    lookups = {"bookings": {"url": f"http://127.0.0.1:{bookings.port}/api/bookings/{{booking}}",
                            "auth_header": "Authorization", "timeout": 1, "retries": 0,
                            "breaker_failures": 3, "breaker_window": 60, "breaker_cooldown": 600,
                            "map": {"status": "data.state", "reference": "data.ref"}}}
    write_secrets(workdir / "secrets.yaml", {"lookup_bookings_auth": TOKEN})   # the stack adds its own beside it
    ts = start_test_stack(workdir, extra={
        "lookups": lookups,
        "dids": {SHORT_MENU_DID: "short", BROKEN_MENU_DID: "nosuchmenu", OUTCOMES_MENU_DID: "outcomes",
                 LOOKUP_DID: "lookup"}})
    try:
        yield ts
    finally:
        stop_test_stack(ts)


def call(stack: TestStack, caller: str, booking: str) -> dict[str, Any]:
    res = stack.sipp.call(CallerScript([("pause", 1500), ("dtmf", booking)], end="wait_bye", wait_bye_ms=30_000),
                          extension=LOOKUP_DID, caller=caller, timeout_s=60)
    assert res.ok, res.errors
    return wait_for(lambda: [r for r in records_of(stack, caller) if r.get("menu") == "lookup"], timeout=15,
                    what=f"the record of {caller}'s call")[0]


def test_a_caller_hears_the_status_the_business_system_answers(lstack: TestStack, bookings: Bookings) -> None:
    rec = call(lstack, "5554101", "314159")
    assert rec["path"] == ["ask", "look", "bye"], rec["path"]
    assert json.loads(rec["vars"])["bk_status"] == "approved"
    assert ("314159", TOKEN) in bookings.requests
    log = (lstack.stack.logs / "controller.log").read_text(errors="replace")
    uid = rec["uniqueid"]
    lines = [ln for ln in log.splitlines() if f"call {uid}: AGI >> " in ln]
    assert any("STREAM FILE" in ln and "en/status-approved" in ln for ln in lines), lines
    assert any('SAY DIGITS "9314159"' in ln for ln in lines), lines
    assert TOKEN not in log


def test_a_slow_then_failing_backend_never_keeps_callers_and_its_circuit_opens(lstack: TestStack,
                                                                               bookings: Bookings) -> None:
    started = time.monotonic()
    rec = call(lstack, "5554102", "777777")              # 4 s to answer, 1 s allowed
    assert rec["path"] == ["ask", "look", "lookup-error", "err"], rec["path"]
    assert time.monotonic() - started < 15

    bookings.down = True
    for i in range(3):                                   # 1 failure so far: 2 more open it (3 within 60 s)
        rec = call(lstack, f"555420{i}", "271828")
        assert rec["path"] == ["ask", "look", "lookup-error", "err"], rec["path"]
    asked = len(bookings.requests)
    rec = call(lstack, "5554210", "271828")              # the circuit is open: the backend is not asked
    assert rec["path"] == ["ask", "look", "lookup-error", "err"], rec["path"]
    assert len(bookings.requests) == asked
    log = (lstack.stack.logs / "controller.log").read_text(errors="replace")
    assert log.count("look-up backend bookings: circuit opened") == 1
    req = urllib.request.Request(f"{lstack.api.base}/metrics", headers={"Authorization": f"Bearer {lstack.api.token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        metrics = resp.read().decode()
    assert 'ivr_lookup_breaker_state{backend="bookings"} 1.0' in metrics
    assert 'ivr_lookup_errors_total{backend="bookings",kind="timeout"} 1.0' in metrics
    assert 'ivr_lookup_errors_total{backend="bookings",kind="http"} 2.0' in metrics
    assert 'ivr_lookup_errors_total{backend="bookings",kind="breaker_open"}' in metrics

