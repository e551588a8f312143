"""Webhooks on a real stack (Asterisk, Redis, controller) with a real receiver (aiohttp on 127.0.0.1, in a thread
of the test): refund events arrive signed, the deliveries are in the API and /metrics, and a controller
SIGKILLed mid-delivery delivers every event at least once, in order, after its restart."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import threading
import time
import urllib.request
from typing import Any, Iterator

import pytest
import yaml


from ivr.devtools.sipp import CallerScript

from .harness import TestStack, create_token, start_test_stack, stop_test_stack, wait_for
from .test_webhooks import SECRET, Receiver


class ThreadedReceiver:
    """``Receiver`` running on its own event loop in a thread (the stack's tests are synchronous)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.receiver = Receiver()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.receiver.start(), self.loop).result(10)
        self.hold_booking = ""
        self.released = asyncio.Event()
        self.held = threading.Event()
        self.receiver.answer = self._answer

    async def _answer(self, event: dict[str, Any], n: int) -> int:
        if event["data"].get("booking") == self.hold_booking and n == 1:
            self.held.set()
            await self.released.wait()
            return 503                        # to a controller that is gone: not recorded
        return 200

    def release(self) -> None:
        self.loop.call_soon_threadsafe(self.released.set)

    def events(self) -> list[dict[str, Any]]:
        return list(self.receiver.events)

    def stop(self) -> None:
        self.release()
        asyncio.run_coroutine_threadsafe(self.receiver.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def hooked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestStack, ThreadedReceiver]]:
    receiver = ThreadedReceiver()
    workdir = tmp_path_factory.mktemp("webhooks-stack")
    secrets = workdir / "secrets.yaml"
    secrets.write_text(yaml.safe_dump({"webhook_crm": SECRET}), encoding="utf-8")
    os.chmod(secrets, 0o600)
    hooks = [{"name": "crm", "url": receiver.receiver.url, "events": ["refund.requested", "refund.decided", "call.finished"],
              "max_attempts": 50, "timeout": 30}]
    ts = start_test_stack(workdir, extra={"webhooks": hooks})
    try:
        yield ts, receiver
    finally:
        stop_test_stack(ts)
        receiver.stop()


def refund(ts: TestStack, booking: str) -> dict[str, Any]:
    status, rec = ts.api.request("POST", "/api/v1/refunds", {"booking": booking, "amount": "20"})
    assert status == 201, rec
    return rec  # type: ignore[no-any-return]  # the API answers JSON


def of_booking(receiver: ThreadedReceiver, prefix: str) -> list[tuple[str, str]]:
    return [(e["type"], e["data"]["booking"]) for e in receiver.events()
            if str(e["data"].get("booking", "")).startswith(prefix)]


def test_refund_events_arrive_signed_and_show_in_the_api(hooked: tuple[TestStack, ThreadedReceiver]) -> None:
    ts, receiver = hooked
    rec = refund(ts, "88010001")
    ts.api.post(f"/api/v1/refunds/{rec['reference']}/status", {"status": "rejected", "note": "duplicate"})
    wait_for(lambda: len(of_booking(receiver, "8801")) == 2, timeout=20, what="two events at the receiver")
    assert of_booking(receiver, "8801") == [("refund.requested", "88010001"), ("refund.decided", "88010001")]
    decided = receiver.events()[-1]
    assert decided["data"]["status"] == "rejected" and decided["data"]["previous_status"] == "received"
    assert receiver.receiver.bad_signatures == 0                    # every request verified with webhook_crm
    view = ts.api.get("/api/v1/webhooks/deliveries?webhook=crm&count=5")["webhooks"][0]
    assert view["name"] == "crm" and view["url"] == receiver.receiver.url and view["dead_total"] == 0
    assert view["recent"][0]["status"] == 200 and view["recent"][0]["event"] == decided["id"]
    assert ts.api.request("GET", "/api/v1/webhooks/deliveries?webhook=nope")[0] == 404
    viewer = create_token(ts, "webhooks-viewer", "viewer")
    assert ts.api.request("GET", "/api/v1/webhooks/deliveries", token=viewer)[0] == 403
    supervisor = create_token(ts, "webhooks-supervisor", "supervisor")
    assert ts.api.request("GET", "/api/v1/webhooks/deliveries", token=supervisor)[0] == 200
    req = urllib.request.Request(ts.api.base + "/metrics", headers={"Authorization": f"Bearer {ts.api.token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read().decode()
    assert re.search(r'ivr_webhook_deliveries_total\{result="delivered",webhook="crm"\} [1-9]', text), text[-2000:]
    assert re.search(r'ivr_events_published_total\{type="refund.decided"\} [1-9]', text)


def test_a_sigkill_mid_delivery_loses_nothing(hooked: tuple[TestStack, ThreadedReceiver]) -> None:
    ts, receiver = hooked
    receiver.hold_booking = "88020002"
    refund(ts, "88020001")
    refund(ts, "88020002")                   # the receiver takes it and does not answer
    refund(ts, "88020003")
    assert receiver.held.wait(20), "the held event did not reach the receiver"
    time.sleep(0.5)                          # the third is in the stream behind it
    assert of_booking(receiver, "8802") == [("refund.requested", "88020001")]
    pid = int((ts.stack.pids / "controller.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    (ts.stack.pids / "controller.pid").unlink(missing_ok=True)
    receiver.release()
    ts.stack.restart_controller()
    refund(ts, "88020004")
    wait_for(lambda: len(of_booking(receiver, "8802")) >= 4, timeout=60, what="every event after the restart")
    assert [b for _, b in of_booking(receiver, "8802")] == ["88020001", "88020002", "88020003", "88020004"]


def test_a_finished_call_is_sent_with_its_record(hooked: tuple[TestStack, ThreadedReceiver]) -> None:
    ts, receiver = hooked
    result = ts.sipp.call(CallerScript(steps=[("pause", 1500)], end="hangup"), extension=ts.extension,
                          caller="5551777", timeout_s=30)
    assert result.ok, result.errors
    finished = wait_for(lambda: [e for e in receiver.events() if e["type"] == "call.finished"
                                 and e["data"].get("caller") == "5551777"], timeout=20, what="call.finished")
    record = finished[0]["data"]
    assert record["outcome"] == "ivr_hangup" and record["uniqueid"]
    assert ts.call_record(record["uniqueid"]) is not None
