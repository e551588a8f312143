"""The register of this node's waiting callers in Redis, and the callers' order across nodes.

Why: app_queue keeps its callers in memory. If the node dies they are gone, and nobody else knows who was
waiting, where, and since when. So each node keeps, in Redis, every caller waiting in its queues: uid ->
place (the time they first joined: a returning caller's kept place counts), plus number, queue and language.
The leader turns a lost node's register into callbacks in that order (ivr/cluster/lost.py).

The AMI event handler only puts a small operation on a queue (it never waits on Redis); one worker writes
what gathered in one transaction, in order. After an AMI resync the register is rebuilt from the live queues.

The same register measures the order across nodes: when a caller is answered here while an older caller
(an earlier place) still waits in the same queue on another live node, that caller has been passed over by
the difference of their places: ``out_of_order`` seconds (observed into a histogram, and counted).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Union

from ..app.aiotasks import drain_then_stop
from ..callbacks.service import ACCOUNT_PREFIX as CALLBACK_PREFIX
from ..campaigns.transfers import CAMPAIGN_PREFIX
from ..core import names as ev
from ..store.cluster_nodes import Waiter
from ..store.errors import StoreError, StoreUnavailable

log = logging.getLogger(__name__)

RECENT_MAX = 2000        # callers who left a queue remembered for their AgentConnect (which follows the leave)
BACKLOG_MAX = 100_000


class RegisterStore(Protocol):
    """``ivr.store.cluster_nodes.ClusterStore``'s register part."""
    async def register(self, node: str, joined: Sequence[Waiter], left: Sequence[tuple[str, str]]) -> None: ...
    async def rebuild(self, node: str, waiting: Sequence[Waiter]) -> None: ...
    async def oldest_in_queue(self, nodes: Sequence[str], queue: str) -> list[tuple[str, str, float]]: ...
    async def origins(self, callbacks: Sequence[str], contacts: Sequence[tuple[str, str]]) -> tuple[
        dict[str, tuple[str, float | None]], dict[tuple[str, str], str]]: ...


@dataclass(frozen=True, slots=True)
class Answered:
    """A caller of this node answered: measured against the other nodes' waiting callers."""

    uid: str
    queue: str
    place: float


@dataclass(frozen=True, slots=True)
class Rebuild:
    waiting: tuple[Waiter, ...]


@dataclass(frozen=True, slots=True)
class Left:
    uid: str
    queue: str


Op = Union[Waiter, Left, Answered, Rebuild]


def callback_number(raw: str) -> str:
    """The digits a callback dials for caller ID ``raw``: '' when it is withheld or not a phone number
    (anonymous, a name, an internal extension). As the trunk delivers them: the outbound guard reads them
    with the configured region when the callback is dialled."""
    digits = (raw or "").strip()
    if digits.startswith("+"):
        digits = digits[1:]
    return digits if digits.isascii() and digits.isdigit() and 6 <= len(digits) <= 15 else ""


def origin_of(account_code: str) -> tuple[str, str] | None:
    """A call we placed, from its account code: ("callback", id) or ("contact", "<campaign>:<contact>");
    None for a call that came in (its caller ID is the caller's own number)."""
    if account_code.startswith(CALLBACK_PREFIX) and account_code[len(CALLBACK_PREFIX):]:
        return ("callback", account_code[len(CALLBACK_PREFIX):])
    parts = account_code.split(":")
    if account_code.startswith(CAMPAIGN_PREFIX) and len(parts) >= 3 and parts[1] and parts[2]:
        return ("contact", f"{parts[1]}:{parts[2]}")
    return None


async def resolve_origins(store: RegisterStore, joined: Sequence[Waiter]) -> list[Waiter]:
    """``joined`` with the callers we called made right: a callback's customer keeps the callback's place (and
    number); a campaign callee's number is the contact's (the channel shows our own caller ID). A callee whose
    number cannot be found gets none: better no callback than a call to ourselves."""
    wanted = [(w, origin_of(w.origin)) for w in joined]
    callbacks = sorted({o[1] for _, o in wanted if o and o[0] == "callback"})
    contacts = sorted({(o[1].split(":")[0], o[1].split(":")[1]) for _, o in wanted if o and o[0] == "contact"})
    if not callbacks and not contacts:
        return list(joined)
    by_callback, by_contact = await store.origins(callbacks, contacts)
    out = []
    for w, o in wanted:
        if o is None:
            out.append(w)
        elif o[0] == "callback":
            number, place = by_callback.get(o[1], (w.number, None))
            out.append(dataclasses.replace(w, number=number, place=min(w.place, place or w.place)))
        else:
            cid, n = o[1].split(":")
            out.append(dataclasses.replace(w, number=callback_number(by_contact.get((cid, n), ""))))
    return out


def out_of_order(answered_place: float, others: Iterable[tuple[str, str, float]]) -> float:
    """Seconds the longest-waiting caller of the same queue on another node (``others``: (node, uid, place))
    had waited beyond the caller just answered (place ``answered_place``); 0 when none had waited longer."""
    oldest = min((place for _, _, place in others), default=answered_place)
    return max(0.0, answered_place - oldest)


@dataclass(slots=True)
class OrderStats:
    """Answers measured against the other nodes, and how out of order they were."""

    answered: int = 0
    out_of_order: int = 0
    total_s: float = 0.0
    worst_s: float = 0.0

    def add(self, seconds: float) -> None:
        self.answered += 1
        if seconds > 0:
            self.out_of_order += 1
            self.total_s += seconds
            self.worst_s = max(self.worst_s, seconds)

    def as_dict(self) -> dict[str, Any]:
        return {"answered": self.answered, "out_of_order": self.out_of_order,
                "mean_s": round(self.total_s / self.out_of_order, 1) if self.out_of_order else 0.0,
                "worst_s": round(self.worst_s, 1)}


class WaitingRegister:
    """This node's waiting callers, mirrored into Redis off the event path."""

    def __init__(self, store: RegisterStore, node: str, *, place_of: Callable[[str], float | None],
                 others: Callable[[], list[str]], on_measured: Callable[[str, float], None] | None = None,
                 clock: Callable[[], float] = time.time, linger: float = 0.05, batch_max: int = 500) -> None:
        self.store, self.node = store, node
        self.place_of = place_of          # a returning caller's kept place (Continuity.place_since.get)
        self.others = others              # the other live nodes (NodeHeartbeats.others_alive)
        self.on_measured = on_measured    # told (queue, seconds out of order) of each answer measured
        self.clock = clock
        self.linger, self.batch_max = linger, batch_max
        self.waiting: dict[str, tuple[str, float]] = {}          # uid -> (queue, place)
        self._recent: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._ops: asyncio.Queue[Op] = asyncio.Queue(BACKLOG_MAX)
        self._worker: asyncio.Task[None] | None = None
        self.order = OrderStats()
        self.written = 0
        self.dropped = 0
        self.errors = 0

    # --------------------------------------------------------- from AMI (sync)
    def on_event(self, e: Mapping[str, Any]) -> None:
        """Apply one AMI event: never waits, never raises for a full backlog (counted, logged)."""
        name, uid = e.get("Event"), str(e.get("Uniqueid") or "")
        if not uid:
            return
        if name == ev.QUEUE_CALLER_JOIN and e.get("Queue"):
            queue = str(e["Queue"])
            place = self.place_of(uid) or self.clock()
            self.waiting[uid] = (queue, place)
            caller = str(e.get("CallerIDNum") or "")
            code = str(e.get("AccountCode") or "")
            self._submit(Waiter(uid, queue, round(place, 3), callback_number(caller), str(e.get("Language") or ""),
                                caller, code if origin_of(code) else ""))
        elif name in (ev.QUEUE_CALLER_LEAVE, ev.HANGUP):
            gone = self.waiting.pop(uid, None)
            if gone is not None:
                self._remember(uid, gone)
                self._submit(Left(uid, gone[0]))
        elif name == ev.AGENT_CONNECT:
            seen = self.waiting.pop(uid, None)
            if seen is not None:
                self._submit(Left(uid, seen[0]))
            else:
                seen = self._recent.pop(uid, None)
            if seen is not None:
                self._submit(Answered(uid, seen[0], seen[1]))

    def resync(self, callers: Iterable[tuple[str, str, float, str]]) -> None:
        """After an AMI resync: the register becomes the live queues' callers ((uid, queue, joined_at, caller
        ID) each; a returning caller keeps their older place)."""
        self.waiting = {}
        out = []
        for uid, queue, joined_at, caller in callers:
            place = round(self.place_of(uid) or joined_at, 3)
            self.waiting[uid] = (queue, place)
            out.append(Waiter(uid, queue, place, callback_number(caller), "", caller))
        self._submit(Rebuild(tuple(out)))

    def _remember(self, uid: str, seen: tuple[str, float]) -> None:
        self._recent[uid] = seen
        while len(self._recent) > RECENT_MAX:
            self._recent.popitem(last=False)

    def _submit(self, op: Op) -> None:
        try:
            self._ops.put_nowait(op)
        except asyncio.QueueFull:
            self.dropped += 1
            log.error("waiting register backlog full: an update was dropped")

    # ----------------------------------------------------------------- worker
    async def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="waiting-register")

    async def stop(self, grace: float = 3.0) -> None:
        """Write what is queued (bounded by ``grace``), then stop."""
        if self._worker is None:
            return
        await drain_then_stop(self._ops, self._worker, grace, "waiting register updates")
        self._worker = None

    @property
    def pending(self) -> int:
        return self._ops.qsize()

    async def flush(self) -> None:
        """Wait until everything submitted so far is written (tests, stop)."""
        await self._ops.join()

    async def _run(self) -> None:
        while True:
            batch = [await self._ops.get()]
            try:
                if self.linger > 0 and self._ops.qsize() < self.batch_max:
                    await asyncio.sleep(self.linger)
                while len(batch) < self.batch_max and not self._ops.empty():
                    batch.append(self._ops.get_nowait())
                answered = await self._write(batch)
                for a in answered:   # a measure Redis cannot answer is skipped, not retried (counted once)
                    try:
                        await self._measure(a)
                    except (StoreError, OSError) as exc:
                        log.debug("call %s: order across nodes not measured (%s)", a.uid, exc)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.errors += 1
                log.exception("waiting register: a batch of %d updates failed", len(batch))
            finally:
                for _ in batch:
                    self._ops.task_done()

    async def _retrying(self, what: Callable[[], Any]) -> None:
        """Retry while Redis cannot be reached (back-off up to 5 s); the updates behind wait in order."""
        delay = 0.25
        while True:
            try:
                await what()
                return
            except (StoreUnavailable, ConnectionError, OSError, asyncio.TimeoutError) as exc:
                self._note_unreachable(exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _resolving(self, joined: list[Waiter]) -> list[Waiter]:
        try:
            return await resolve_origins(self.store, joined)
        except (StoreError, OSError) as exc:
            # a callback's customer keeps the number the dialplan gave the channel and their join as place; a
            # campaign callee's channel shows our own caller ID: no number rather than a call to ourselves
            log.warning("waiting register: numbers of called customers not read (%s)", exc)
            return [dataclasses.replace(w, number="") if (origin_of(w.origin) or ("",))[0] == "contact" else w
                    for w in joined]

    def _note_unreachable(self, exc: BaseException) -> None:
        self.errors += 1
        if self.errors % 20 == 1:
            log.warning("waiting register: Redis unreachable (%s): updates kept in memory, written when it is back",
                        exc)

    async def _write(self, batch: Sequence[Op]) -> list[Answered]:
        """Joins and leaves in one transaction per run between rebuilds (each retried while Redis is away:
        they are safe to apply twice); returns the answers to measure."""
        joined: list[Waiter] = []
        left: list[tuple[str, str]] = []
        answered: list[Answered] = []

        async def flush() -> None:
            if joined or left:
                if any(w.origin for w in joined):
                    joined[:] = await self._resolving(joined)
                await self._retrying(lambda: self.store.register(self.node, joined, left))
                self.written += len(joined) + len(left)
                joined.clear()
                left.clear()

        for op in batch:
            if isinstance(op, Waiter):
                joined.append(op)
            elif isinstance(op, Left):
                left.append((op.uid, op.queue))
            elif isinstance(op, Answered):
                answered.append(op)
            else:
                await flush()
                await self._retrying(functools.partial(self.store.rebuild, self.node, op.waiting))
                log.info("waiting register of %s rebuilt: %d callers", self.node, len(op.waiting))
        await flush()
        return answered

    async def _measure(self, a: Answered) -> None:
        others = self.others()
        if not others:
            return
        older = await self.store.oldest_in_queue(others, a.queue)
        seconds = out_of_order(a.place, older)
        self.order.add(seconds)
        if seconds > 0:
            node, uid, _ = min(older, key=lambda o: o[2])
            log.info("call %s answered in %s while %s on %s had waited %.1fs longer", a.uid, a.queue, uid, node,
                     seconds)
        if self.on_measured is not None:
            self.on_measured(a.queue, seconds)

    def describe(self) -> dict[str, Any]:
        return {"waiting": len(self.waiting), "written": self.written, "pending": self.pending,
                "dropped": self.dropped, "errors": self.errors, "order": self.order.as_dict()}
