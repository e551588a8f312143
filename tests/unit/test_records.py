"""Tests for ivr.outcomes.records: outcome_of, and CallRecorder against an in-memory Store."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Mapping

import pytest

from ivr.outcomes import records as records_mod
from ivr.outcomes.records import CallRecorder, outcome_of


# ------------------------------------------------------------------ outcome_of

@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"answered_at": "1700000000.1", "queue": "support", "abandoned": "1"}, "answered"),
        ({"abandoned": "1", "queue": "support", "ivr_outcome": "queued"}, "abandoned"),
        ({"queue": "support", "ivr_outcome": "queued"}, "left_queue"),
        ({"ivr_outcome": "self_service"}, "self_service"),
        ({"ivr_outcome": "queued"}, "ivr_hangup"),
        ({"ivr_outcome": ""}, "ivr_hangup"),
        ({"menu": "main"}, "ivr_hangup"),
        ({}, "ivr_hangup"),
        ({"answered_at": "", "abandoned": "", "queue": "", "ivr_outcome": "callback"}, "callback"),
    ],
)
def test_outcome_of(record: dict[str, Any], expected: str) -> None:
    assert outcome_of(record) == expected


# ------------------------------------------------------------ in-memory store

def _flat(mapping: Mapping[str, Any]) -> dict[str, str]:
    """Same flattening as ivr.store.redis_store._flat (what Redis hashes hold: text)."""
    return {k: (json.dumps(v) if isinstance(v, (list, dict)) else str(v)) for k, v in mapping.items() if v is not None}


class MemoryStore:
    """The call-record part of ivr.store.redis_store.Store, in dicts, step for step."""

    def __init__(self) -> None:
        self.hashes: dict[str, dict[str, str]] = {}
        self.stream: list[dict[str, str]] = []
        self.calls: list[str] = []

    async def call_update(self, uid: str, fields: Mapping[str, Any]) -> None:
        self.calls.append("call_update")
        self.hashes.setdefault(uid, {}).update(_flat(fields))

    async def call_update_if_new(self, uid: str, fields: Mapping[str, Any]) -> None:
        self.calls.append("call_update_if_new")
        h = self.hashes.setdefault(uid, {})
        for k, v in _flat(fields).items():
            h.setdefault(k, v)

    async def call_get(self, uid: str) -> dict[str, Any]:
        record: dict[str, Any] = dict(self.hashes.get(uid, {}))
        if not record:
            return {}
        raw = record.get("path")
        record["path"] = json.loads(raw) if raw else []
        record["uniqueid"] = uid
        return record

    async def _hsetnx_finished(self, uid: str) -> bool:
        h = self.hashes.setdefault(uid, {})
        if "finished" in h:
            return False
        h["finished"] = "1"
        return True

    async def _xadd(self, entry: dict[str, str]) -> None:
        self.stream.append(entry)

    async def call_finish(self, uid: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Like the Redis version: 'finished' and the stream entry are written together (MULTI/EXEC)."""
        self.calls.append("call_finish")
        if self.hashes.get(uid, {}).get("finished") == "1":
            return await self.call_get(uid)
        merged = {**self.hashes.get(uid, {}), **_flat(fields), "finished": "1"}
        record = dict(merged, path=json.loads(merged.get("path") or "[]"), uniqueid=uid)
        await self._xadd(_flat(record))          # may fail: then nothing was written
        self.hashes.setdefault(uid, {}).update(_flat(fields), finished="1")
        return record


    async def call_batch(self, ops: list[tuple[str, str, Any]]) -> list[Any]:
        """Like the Redis version: the operations of many calls in order (there, one round trip)."""
        out: list[Any] = []
        for kind, uid, fields in ops:
            if kind == "set":
                await self.call_update(uid, fields)
                out.append(None)
            elif kind == "setnx":
                await self.call_update_if_new(uid, fields)
                out.append(None)
            else:
                out.append(await self.call_get(uid))
        return out

    async def call_finish_many(self, items: list[tuple[str, Mapping[str, Any]]]) -> list[Any]:
        return [await self.call_finish(uid, fields) for uid, fields in items]


class FlakyStore(MemoryStore):
    """Raises ConnectionError on the first `failures` calls of every write method."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.attempts: dict[str, int] = {}

    def _maybe_fail(self, name: str) -> None:
        n = self.attempts[name] = self.attempts.get(name, 0) + 1
        if n <= self.failures:
            raise ConnectionError(f"redis down ({name} attempt {n})")

    async def call_update(self, uid: str, fields: Mapping[str, Any]) -> None:
        self._maybe_fail("call_update")
        await super().call_update(uid, fields)


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Make the recorder's retry back-off instant; returns the delays it asked for."""
    delays: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float, *args: Any, **kwargs: Any) -> Any:
        delays.append(delay)
        return await real_sleep(0)

    monkeypatch.setattr(records_mod.asyncio, "sleep", sleep)
    return delays


_real_sleep = asyncio.sleep  # captured before any test patches asyncio.sleep


async def wait_until(predicate: Any, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await _real_sleep(0.005)


# ----------------------------------------------------------------- AMI events

def chan(uid: str) -> dict[str, str]:
    return {"Channel": "PJSIP/trunk-00000000", "CallerIDNum": "5551234", "CallerIDName": "caller",
            "Context": "ivr-route", "Exten": "queue", "Priority": "2", "Uniqueid": uid, "Linkedid": uid}


def ev_join(uid: str, queue: str = "support") -> dict[str, str]:
    return {"Event": "QueueCallerJoin", **chan(uid), "Queue": queue, "Position": "1", "Count": "1"}


def ev_leave(uid: str, queue: str = "support") -> dict[str, str]:
    return {"Event": "QueueCallerLeave", **chan(uid), "Queue": queue, "Position": "1", "Count": "0"}


def ev_connect(uid: str, hold: int = 7, queue: str = "support") -> dict[str, str]:
    return {"Event": "AgentConnect", **chan(uid), "DestChannel": "PJSIP/1001-00000001", "Queue": queue,
            "Interface": "PJSIP/1001", "MemberName": "Agent 1001", "HoldTime": str(hold), "RingTime": "2"}


def ev_complete(uid: str, talk: int = 95, queue: str = "support") -> dict[str, str]:
    return {"Event": "AgentComplete", **chan(uid), "DestChannel": "PJSIP/1001-00000001", "Queue": queue,
            "Interface": "PJSIP/1001", "MemberName": "Agent 1001", "HoldTime": "7", "TalkTime": str(talk),
            "Reason": "agent"}


def ev_abandon(uid: str, hold: int = 42, queue: str = "refunds") -> dict[str, str]:
    return {"Event": "QueueCallerAbandon", **chan(uid), "Queue": queue, "Position": "1",
            "OriginalPosition": "1", "HoldTime": str(hold)}


def ev_hangup(uid: str) -> dict[str, str]:
    return {"Event": "Hangup", **chan(uid), "Cause": "16", "Cause-txt": "Normal Clearing"}


def ivr_fields(menu: str = "main", queue: str = "support") -> dict[str, Any]:
    """What MenuEngine.run saves at the end of the IVR."""
    return {"caller": "5551234", "channel": "PJSIP/trunk-00000000", "menu": menu, "language": "en",
            "path": json.dumps(["banner", "language", "main", "q_support"]), "started_at": round(time.time() - 30, 3),
            "ivr_queue": queue, "ivr_outcome": "queued", "ivr_seconds": 12.5}


@pytest.fixture
async def recorder() -> Any:
    store = MemoryStore()
    rec = CallRecorder(store, finalize_delay=0.01, late_complete_delay=0.05)  # type: ignore[arg-type]
    finished: list[dict[str, Any]] = []
    rec.on_finished = finished.append
    await rec.start()
    rec.test_store = store          # type: ignore[attr-defined]
    rec.test_finished = finished    # type: ignore[attr-defined]
    yield rec
    await rec.stop(grace=1.0)


# ---------------------------------------------------------------------- tests

async def test_answered_call_record(recorder: CallRecorder) -> None:
    store: MemoryStore = recorder.test_store  # type: ignore[attr-defined]
    uid = "1795612320.0"
    recorder.track(uid)                                   # the menu engine starts the call
    await recorder.save(uid, ivr_fields())               # ... and saves the IVR part
    for e in (ev_join(uid), ev_leave(uid), ev_connect(uid, hold=7), ev_complete(uid, talk=95)):
        recorder.on_event(e)
    assert recorder.active == 1
    recorder.on_event(ev_hangup(uid))
    assert recorder.active == 0
    await wait_until(lambda: recorder.records_written == 1)
    rec = store.hashes[uid]
    assert rec["finished"] == "1"
    assert rec["queue"] == "support" and rec["wait"] == "7" and rec["ring"] == "2"
    assert rec["talk"] == "95" and rec["ended_by"] == "agent"
    assert rec["agent"] == "Agent 1001"
    assert rec["outcome"] == "answered"
    assert rec["fallback"] == "0"                      # a menu was recorded
    assert rec["hangup_cause"] == "Normal Clearing"
    assert rec["menu"] == "main" and rec["caller"] == "5551234"
    assert 29 <= float(rec["duration"]) <= 40            # from started_at saved by the IVR
    assert len(store.stream) == 1 and store.stream[0]["outcome"] == "answered"
    (done,) = recorder.test_finished  # type: ignore[attr-defined]
    assert done["uniqueid"] == uid and done["path"] == ["banner", "language", "main", "q_support"]
    assert recorder.write_errors == 0


async def test_abandoned_call_without_menu_is_a_fallback_call(recorder: CallRecorder) -> None:
    store: MemoryStore = recorder.test_store  # type: ignore[attr-defined]
    uid = "1795612400.7"
    # no AGI at all: the dialplan's fallback put the caller straight into a queue
    recorder.on_event(ev_join(uid, "refunds"))
    assert recorder.active == 1
    recorder.on_event(ev_abandon(uid, hold=42))
    recorder.on_event(ev_leave(uid, "refunds"))
    recorder.on_event(ev_hangup(uid))
    await wait_until(lambda: recorder.records_written == 1)
    rec = store.hashes[uid]
    assert rec["queue"] == "refunds" and rec["wait"] == "42" and rec["abandoned"] == "1"
    assert rec["outcome"] == "abandoned"
    assert rec["fallback"] == "1"
    assert "agent" not in rec and "talk" not in rec
    assert float(rec["duration"]) == pytest.approx(float(rec["ended_at"]) - float(rec["joined_at"]), abs=0.01)
    assert rec["caller"] == "5551234"


async def test_two_calls_are_recorded_independently(recorder: CallRecorder) -> None:
    store: MemoryStore = recorder.test_store  # type: ignore[attr-defined]
    recorder.track("a")
    await recorder.save("a", ivr_fields())
    recorder.on_event(ev_join("a"))
    recorder.on_event(ev_join("b", "refunds"))
    recorder.on_event(ev_connect("a"))
    recorder.on_event(ev_abandon("b"))
    recorder.on_event(ev_hangup("b"))
    recorder.on_event(ev_hangup("a"))
    await wait_until(lambda: recorder.records_written == 2)
    assert store.hashes["a"]["outcome"] == "answered" and store.hashes["a"]["fallback"] == "0"
    assert store.hashes["b"]["outcome"] == "abandoned" and store.hashes["b"]["fallback"] == "1"
    assert sorted(e["uniqueid"] for e in store.stream) == ["a", "b"]


async def test_join_does_not_overwrite_ivr_caller(recorder: CallRecorder) -> None:
    store: MemoryStore = recorder.test_store  # type: ignore[attr-defined]
    recorder.track("u")
    await recorder.save("u", {**ivr_fields(), "caller": "from-ivr"})
    recorder.on_event(ev_join("u"))
    await wait_until(lambda: "joined_at" in store.hashes.get("u", {}))
    assert store.hashes["u"]["caller"] == "from-ivr"
    assert store.calls[:2] == ["call_update", "call_update_if_new"]  # ordered worker


async def test_duplicate_hangup_writes_one_record(recorder: CallRecorder) -> None:
    store: MemoryStore = recorder.test_store  # type: ignore[attr-defined]
    uid = "dup"
    recorder.on_event(ev_join(uid))
    recorder.on_event(ev_hangup(uid))
    recorder.on_event(ev_hangup(uid))
    await wait_until(lambda: recorder.records_written == 1)
    await asyncio.sleep(0.05)
    assert recorder.records_written == 1
    assert len(store.stream) == 1
    assert store.calls.count("call_finish") == 1


async def test_second_finish_job_for_same_call_is_a_no_op(recorder: CallRecorder) -> None:
    """Even if two finish jobs ran (e.g. a re-tracked call), the record is finished once."""
    store: MemoryStore = recorder.test_store  # type: ignore[attr-defined]
    uid = "twice"
    recorder.on_event(ev_join(uid))
    recorder.on_event(ev_hangup(uid))
    await wait_until(lambda: recorder.records_written == 1)
    recorder.adopt([uid])
    recorder.on_event(ev_hangup(uid))
    await asyncio.sleep(0.05)
    assert recorder.records_written == 1 and len(store.stream) == 1


async def test_events_for_untracked_calls_are_ignored(recorder: CallRecorder) -> None:
    store: MemoryStore = recorder.test_store  # type: ignore[attr-defined]
    for e in (ev_connect("x"), ev_complete("x"), ev_abandon("x"), ev_hangup("x"), {"Event": "Hangup"}):
        recorder.on_event(e)
    await asyncio.sleep(0.05)
    assert store.hashes == {} and store.calls == [] and recorder.records_written == 0


async def test_hangup_of_call_without_record_writes_nothing(recorder: CallRecorder) -> None:
    store: MemoryStore = recorder.test_store  # type: ignore[attr-defined]
    recorder.track("gone")
    recorder.on_event(ev_hangup("gone"))
    await asyncio.sleep(0.05)
    assert store.stream == [] and recorder.records_written == 0 and recorder.write_errors == 0


async def test_ivr_only_call_outcome(recorder: CallRecorder) -> None:
    store: MemoryStore = recorder.test_store  # type: ignore[attr-defined]
    recorder.track("self")
    await recorder.save("self", {**ivr_fields(queue=""), "ivr_outcome": "self_service"})
    recorder.on_event(ev_hangup("self"))
    await wait_until(lambda: recorder.records_written == 1)
    assert store.hashes["self"]["outcome"] == "self_service" and store.hashes["self"]["fallback"] == "0"


async def test_store_failing_twice_then_working_still_gets_the_write(fast_retries: list[float]) -> None:
    store = FlakyStore(failures=2)
    rec = CallRecorder(store, finalize_delay=0.01, linger=0)  # type: ignore[arg-type]
    await rec.start()
    try:
        rec.track("r")
        await rec.save("r", ivr_fields())
        await wait_until(lambda: "menu" in store.hashes.get("r", {}))
        assert store.attempts["call_update"] == 3
        assert fast_retries == [0.25, 0.5]          # back-off between the attempts
        assert rec.write_errors == 0
    finally:
        await rec.stop(grace=1.0)


async def test_redis_down_for_a_while_delays_writes_and_loses_none(fast_retries: list[float]) -> None:
    """A Redis restart: the head write is retried with a back-off capped at 5 s until Redis is back, the
    writes behind it wait in order, none is dropped or counted as an error."""
    store = FlakyStore(failures=8)
    rec = CallRecorder(store, finalize_delay=0.01, linger=0)  # type: ignore[arg-type]
    await rec.start()
    try:
        await rec.save("r", ivr_fields())
        await rec.save("r", {"menu": "again"})
        await wait_until(lambda: store.hashes.get("r", {}).get("menu") == "again")
        assert store.attempts["call_update"] == 8 + 2
        assert fast_retries == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
        assert rec.write_errors == 0 and rec.dropped == 0 and rec.retries == 8
    finally:
        await rec.stop(grace=1.0)


async def test_non_connection_error_is_not_retried(fast_retries: list[float]) -> None:
    class Broken(MemoryStore):
        async def call_update(self, uid: str, fields: Mapping[str, Any]) -> None:
            self.calls.append("call_update")
            raise ValueError("bad data")

    store = Broken()
    rec = CallRecorder(store, finalize_delay=0.01, linger=0)  # type: ignore[arg-type]
    await rec.start()
    try:
        await rec.save("r", {"x": 1})
        await wait_until(lambda: rec.write_errors == 1)
        assert store.calls == ["call_update"] and fast_retries == []
    finally:
        await rec.stop(grace=1.0)


async def test_full_backlog_drops_and_counts() -> None:
    store = MemoryStore()
    rec = CallRecorder(store, finalize_delay=0.01, max_backlog=2)  # type: ignore[arg-type]
    # worker not started: the queue fills up
    for i in range(4):
        await rec.save(f"u{i}", {"x": i})
    assert rec.dropped == 2
    await rec.start()
    await rec.stop(grace=1.0)
    assert set(store.hashes) == {"u0", "u1"}


async def test_on_finished_hook_failure_is_contained(recorder: CallRecorder) -> None:
    def boom(record: dict[str, Any]) -> None:
        raise RuntimeError("hook broke")

    recorder.on_finished = boom
    recorder.on_event(ev_join("h"))
    recorder.on_event(ev_hangup("h"))
    await wait_until(lambda: recorder.records_written == 1)
    assert recorder.write_errors == 0


# ------------------------------------------------------- regressions (bugs found and fixed)

async def test_bug_stop_loses_records_whose_finalize_timer_is_pending() -> None:
    store = MemoryStore()
    rec = CallRecorder(store, finalize_delay=0.05)  # type: ignore[arg-type]
    await rec.start()
    rec.on_event(ev_join("late"))
    rec.on_event(ev_hangup("late"))
    await rec.stop(grace=1.0)
    await asyncio.sleep(0.1)
    assert len(store.stream) == 1


async def test_bug_retry_after_partial_finish_loses_the_stream_entry(fast_retries: list[float]) -> None:
    class XaddFailsOnce(MemoryStore):
        failed = False

        async def _xadd(self, entry: dict[str, str]) -> None:
            if not self.failed:
                self.failed = True
                raise ConnectionError("connection reset during XADD")
            await super()._xadd(entry)

    store = XaddFailsOnce()
    rec = CallRecorder(store, finalize_delay=0.01, linger=0)  # type: ignore[arg-type]
    await rec.start()
    try:
        rec.on_event(ev_join("p"))
        rec.on_event(ev_hangup("p"))
        await wait_until(lambda: store.failed and rec._jobs.empty())
        await _real_sleep(0.05)
        assert len(store.stream) == 1
    finally:
        await rec.stop(grace=1.0)


async def test_answered_call_waits_for_a_late_agent_complete_then_estimates_talk() -> None:
    store = MemoryStore()
    rec = CallRecorder(store, finalize_delay=0.01, late_complete_delay=0.05)  # type: ignore[arg-type]
    await rec.start()
    try:
        rec.track("late")
        rec.on_event(ev_join("late"))
        rec.on_event(ev_connect("late"))
        rec.on_event(ev_hangup("late"))          # AgentComplete has not come yet
        await _real_sleep(0.03)
        assert rec.records_written == 0          # it waits for it once
        await wait_until(lambda: rec.records_written == 1)
        h = store.hashes["late"]
        assert h["outcome"] == "answered" and h["talk_estimated"] == "1" and int(h["talk"]) >= 0
    finally:
        await rec.stop(grace=1.0)


async def test_calls_gone_while_ami_was_away_are_written_after_the_resync(recorder: CallRecorder) -> None:
    import time as _time
    store: MemoryStore = recorder.test_store  # type: ignore[attr-defined]
    for uid in ("10.1", "10.2"):
        recorder.on_event(ev_join(uid))
    cut = _time.time() + 0.001
    recorder.on_event(ev_join("10.3"))          # joined after the channel list was taken: not judged
    recorder._active["10.3"] = cut + 1          # (as if tracked after the resync began)
    assert recorder.reconcile({"10.2"}, before=cut) == 1      # 10.1 is gone, 10.2 still up
    await wait_until(lambda: recorder.records_written == 1)
    rec = store.hashes["10.1"]
    assert rec["finished"] == "1" and rec["hangup_cause"] == "ended while AMI was disconnected"
    assert rec["outcome"] == "left_queue"
    assert recorder.active == 2


async def test_a_caller_who_hangs_up_before_the_ivr_still_gets_a_record() -> None:
    """Recorded from the inbound channel's Newchannel: a call that ends before the AGI starts is not lost;
    channels of other contexts or numbers (agents' legs, originated calls) are not callers."""
    store = MemoryStore()
    rec = CallRecorder(store, finalize_delay=0.01, inbound=frozenset({"500"}))  # type: ignore[arg-type]
    await rec.start()
    try:
        new = {"Event": "Newchannel", "Channel": "PJSIP/trunk-00000009", "CallerIDNum": "442079460000",
               "Context": "from-trunk", "Exten": "500", "Uniqueid": "early"}
        rec.on_event(new)
        rec.on_event({**new, "Uniqueid": "agentleg", "Context": "from-agents", "Exten": "s"})
        rec.on_event({**new, "Uniqueid": "originated", "Exten": "s"})
        for uid in ("early", "agentleg", "originated"):
            rec.on_event(ev_hangup(uid))
        await wait_until(lambda: rec.records_written == 1)
        await asyncio.sleep(0.05)
        assert [r["uniqueid"] for r in store.stream] == ["early"]
        r = store.hashes["early"]
        assert (r["outcome"], r["caller"], r["dialled"], r["fallback"]) == ("before_ivr", "442079460000", "500", "0")
    finally:
        await rec.stop(grace=1.0)


# ------------------------------------------------------------ batched writes

class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.batch_sizes: list[int] = []
        self.finish_sizes: list[int] = []

    async def call_batch(self, ops: list[tuple[str, str, Any]]) -> list[Any]:
        self.batch_sizes.append(len(ops))
        return await super().call_batch(ops)

    async def call_finish_many(self, items: list[tuple[str, Mapping[str, Any]]]) -> list[Any]:
        self.finish_sizes.append(len(items))
        return await super().call_finish_many(items)


async def test_a_burst_of_calls_shares_round_trips_and_keeps_each_calls_order() -> None:
    store = CountingStore()
    rec = CallRecorder(store, finalize_delay=0.01, linger=0.02)  # type: ignore[arg-type]
    await rec.start()
    try:
        for i in range(40):
            rec.on_event(ev_join(f"b{i}"))
            await rec.save(f"b{i}", ivr_fields())
            rec.on_event(ev_abandon(f"b{i}"))
            rec.on_event(ev_hangup(f"b{i}"))
        await wait_until(lambda: rec.records_written == 40)
        assert sum(store.batch_sizes) == 40 * 4               # every write went through, 120 writes + 40 reads
        assert len(store.batch_sizes) <= 4                      # in a handful of round trips, not 160
        assert len(store.finish_sizes) <= 3 and sum(store.finish_sizes) == 40
        assert all(store.hashes[f"b{i}"]["outcome"] == "abandoned" for i in range(40))
        assert len(store.stream) == 40 and rec.write_errors == 0 and rec.batches == len(store.batch_sizes)
    finally:
        await rec.stop(grace=1.0)


async def test_a_write_after_the_calls_finish_waits_for_the_next_batch() -> None:
    """A finish reads the record, then writes it in a second round trip: a write of the same call queued
    behind the finish must not slip between the two (its fields would be in the stream entry while the
    outcome was worked out without them)."""
    store = CountingStore()
    rec = CallRecorder(store, finalize_delay=0.01, linger=0.02)  # type: ignore[arg-type]
    rec._submit(("set", "c", {"queue": "support", "menu": "main"}))
    rec._submit(("finish", "c", (time.time(), "Normal Clearing", False)))
    rec._submit(("set", "c", {"abandoned": 1}))
    rec._submit(("set", "d", {"menu": "main"}))
    await rec.start()
    try:
        await wait_until(lambda: rec._jobs.empty() and rec._carry is None and len(store.batch_sizes) == 2)
        assert store.batch_sizes == [2, 2] and store.finish_sizes == [1]
        assert store.calls == ["call_update", "call_finish", "call_update", "call_update"]
        assert store.stream[0]["outcome"] == "left_queue" and "abandoned" not in store.stream[0]
    finally:
        await rec.stop(grace=1.0)


async def test_an_operation_redis_refuses_is_counted_and_spares_the_rest_of_the_batch() -> None:
    class OneBadKey(MemoryStore):
        async def call_batch(self, ops: list[tuple[str, str, Any]]) -> list[Any]:
            out = await super().call_batch([op for op in ops if op[1] != "bad"])
            return [RuntimeError("WRONGTYPE Operation against a key holding the wrong kind of value")
                    if op[1] == "bad" else out.pop(0) for op in ops]

    store = OneBadKey()
    rec = CallRecorder(store, finalize_delay=0.01, linger=0.02)  # type: ignore[arg-type]
    for uid in ("a", "bad", "b"):
        await rec.save(uid, ivr_fields())
    await rec.start()
    try:
        await wait_until(lambda: rec.write_errors == 1 and "b" in store.hashes)
        assert set(store.hashes) == {"a", "b"} and rec.retries == 0
    finally:
        await rec.stop(grace=1.0)


async def test_pending_counts_writes_until_they_are_in_the_store(recorder: CallRecorder) -> None:
    store: MemoryStore = recorder.test_store  # type: ignore[attr-defined]
    recorder.on_event(ev_join("w"))
    recorder.on_event(ev_hangup("w"))
    assert recorder.pending == 2 and recorder.active == 0     # the join queued, the finish waiting out its delay
    await wait_until(lambda: recorder.pending == 0)
    assert store.stream and store.stream[-1]["uniqueid"] == "w"


async def test_a_finish_waiting_for_a_late_agent_complete_is_pending_and_written_at_stop() -> None:
    store = MemoryStore()
    rec = CallRecorder(store, finalize_delay=0.01, late_complete_delay=30)  # type: ignore[arg-type]
    await rec.start()
    rec.track("lc")
    rec.on_event(ev_join("lc"))
    rec.on_event(ev_connect("lc"))
    rec.on_event(ev_hangup("lc"))                  # no AgentComplete: the finish waits 30 s for it
    await wait_until(lambda: rec.pending == 1 and "lc" in rec._timers and rec._jobs.empty())
    assert store.stream == []
    await rec.stop(grace=1.0)                      # stopping does not lose it: written now, talk estimated
    assert len(store.stream) == 1 and store.stream[0]["talk_estimated"] == "1" and rec.pending == 0
