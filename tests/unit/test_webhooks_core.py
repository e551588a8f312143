"""The pure part of webhooks (ivr/webhooks/core.py): the envelope, the signature (checked with the verifier
docs/integrations.md shows receivers), the back-off schedule; and the ``Events`` publisher on a fake sink."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
from pathlib import Path
from typing import Any, Callable, Mapping

import pytest

from ivr.webhooks import core
from ivr.webhooks.events import Events

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"
SECRET = "s3cret-s3cret-s3cret"


def doc_verifier() -> Callable[..., bool]:
    """``verify_ivr_signature`` exactly as docs/integrations.md shows it."""
    text = DOC.read_text(encoding="utf-8")
    block = text[text.index("<!-- verifier:begin -->"):text.index("<!-- verifier:end -->")]
    code = re.search(r"```python\n(.*?)```", block, re.S)
    assert code is not None
    ns: dict[str, Any] = {}
    exec(code.group(1), ns)   # noqa: S102  (our own documentation's example)
    return ns["verify_ivr_signature"]   # type: ignore[no-any-return]  # defined by the exec above


def test_envelope_has_id_type_created_data_and_encodes_compact() -> None:
    env = core.envelope("refund.requested", {"reference": "R1", "amount": 12.5}, created=1765000000.7)
    assert set(env) == {"id", "type", "created", "data"}
    assert env["type"] == "refund.requested" and env["created"] == 1765000000
    assert re.fullmatch(r"evt_[0-9a-f]{32}", env["id"])
    assert core.envelope("call.finished", {})["id"] != core.envelope("call.finished", {})["id"]
    body = core.encode(env)
    assert json.loads(body) == env and b" " not in body
    with pytest.raises(ValueError, match="unknown event type"):
        core.envelope("refund.eaten", {})


def test_stream_fields_round_trip() -> None:
    env = core.envelope("feedback.recorded", {"id": "7", "score": "", "nested": {"a": [1, "ü"]}}, event_id="evt_x",
                        created=5)
    fields = core.to_fields(env)
    assert all(isinstance(v, str) for v in fields.values())
    assert core.from_fields(fields) == env


def test_signature_header_form_and_hmac() -> None:
    body = b'{"id":"evt_1"}'
    header = core.sign(SECRET, body, timestamp=1765000000)
    assert header.startswith("t=1765000000,v1=")
    expected = hmac.new(SECRET.encode(), b"1765000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1765000000,v1={expected}"


@pytest.mark.parametrize("verify", ["core", "docs"])
def test_verifier_accepts_ours_and_refuses_tampering(verify: str) -> None:
    check = doc_verifier() if verify == "docs" else core.verify
    body = core.encode(core.envelope("refund.decided", {"reference": "R9", "status": "approved"}))
    header = core.sign(SECRET, body)
    assert check(SECRET, header, body)
    assert not check("another-secret-xxxxxx", header, body)                 # wrong secret
    assert not check(SECRET, header, body.replace(b"approved", b"rejected"))  # body changed
    t = header.split(",")[0][2:]
    assert not check(SECRET, header.replace(f"t={t}", f"t={int(t) + 1}"), body)   # timestamp changed
    assert not check(SECRET, core.sign(SECRET, body, timestamp=1000), body)    # too old: a replay
    assert not check(SECRET, "", body) and not check(SECRET, "t=abc,v1=00", body)
    assert not check(SECRET, header.split(",")[0], body)                       # no v1


def test_core_verify_takes_a_clock() -> None:
    body = b"{}"
    header = core.sign(SECRET, body, timestamp=1000)
    assert core.verify(SECRET, header, body, now=1000 + 299)
    assert not core.verify(SECRET, header, body, now=1000 + 301)


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [core.backoff(n) for n in range(1, 11)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert core.backoff(0) == 0
    assert core.backoff(1000) == core.BACKOFF_CAP_S                        # no overflow
    assert [core.backoff(n, base=0.05, cap=0.2) for n in range(1, 5)] == [0.05, 0.1, 0.2, 0.2]


def test_success_is_2xx_only() -> None:
    assert core.success(200) and core.success(204) and core.success(299)
    assert not any(core.success(s) for s in (0, 199, 301, 302, 400, 410, 500, 503))


# --------------------------------------------------------------------------- the publisher
class Sink:
    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.entries: list[dict[str, str]] = []
        self.delay, self.fail = delay, fail

    async def publish(self, fields: Mapping[str, str]) -> str:
        await asyncio.sleep(self.delay)
        if self.fail:
            raise ConnectionError("Redis is down")
        self.entries.append(dict(fields))
        return f"{len(self.entries)}-0"


async def test_events_are_written_in_order_and_only_when_subscribed() -> None:
    sink = Sink()
    published: list[str] = []
    ev = Events(sink, {"refund.requested", "refund.decided"}, on_published=published.append)
    ev.start()
    ev.publish("refund.requested", {"reference": "R1"})
    ev.publish("call.finished", {"uid": "1"})            # nobody subscribes: not written
    ev.publish("refund.decided", {"reference": "R1", "status": "approved"})
    await ev.flush()
    assert [core.from_fields(e)["type"] for e in sink.entries] == ["refund.requested", "refund.decided"]
    assert core.from_fields(sink.entries[1])["data"] == {"reference": "R1", "status": "approved"}
    assert published == ["refund.requested", "refund.decided"]
    await ev.stop()


async def test_publish_never_blocks_or_raises_when_redis_is_slow_or_down() -> None:
    lost: list[tuple[str, str]] = []
    ev = Events(Sink(delay=5.0), {"call.finished"}, on_failed=lambda t, why: lost.append((t, why)), timeout=0.05,
                queue_max=2)
    ev.start()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for i in range(5):
        ev.publish("call.finished", {"uid": str(i)})
    assert loop.time() - t0 < 0.01                         # returned at once
    assert ("call.finished", "full") in lost                # the queue holds 2 (one taken by the writer)
    await ev.flush()
    assert ("call.finished", "redis") in lost               # the write timed out: logged and counted
    await ev.stop()
    down = Events(Sink(fail=True), {"call.finished"}, on_failed=lambda t, why: lost.append((t, why)))
    down.start()
    down.publish("call.finished", {"uid": "x"})
    await down.flush()
    assert down.failed == 1
    await down.stop()


async def test_disabled_publisher_drops_everything() -> None:
    ev = Events.disabled()
    ev.publish("call.finished", {"uid": "1"})
    assert not ev.wants("call.finished")
    ev.start()
    await ev.stop()
