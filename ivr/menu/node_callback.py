"""The ``callback`` node kind and the callback offer after the fallback queue's timeout (``fallback_offer``):
the number to call back confirmed or keyed in (``confirm_number``, asked of the outbound guard), the request
stored with its promise, and the last words before the caller is let go. Without the callback services the
caller goes to the queue instead (``node_queue.queue_node``).
"""

from __future__ import annotations

import logging
import math

from ..asterisk.agi_server import AgiSession
from ..balance.forecast import Promise
from .context import CallContext, Engine
from .node_queue import callback_promise, queue_node
from .schema import Node
from .validators import VALIDATORS

log = logging.getLogger(__name__)


async def _booked(engine: Engine, s: AgiSession, ctx: CallContext, prompts: tuple[str, ...],
                  promise: Promise, next_node: str | None) -> None:
    """The last words after a callback is stored: the node's prompts, then "we will call you back within" N
    "minutes" when a promise was made, else ``callback-booked`` (no deadline). Without ``next_node`` the call is
    handed back to hang up, its last prompt played by the dialplan."""
    if promise.seconds is None:
        words: tuple[str, ...] = prompts or ("callback-booked",)
    else:
        await engine.play(s, ctx, prompts + ("callback-promise",))
        await s.say_number(max(1, math.ceil(promise.seconds / 60)))
        words = ("minutes",)
    if next_node:
        await engine.play(s, ctx, words)
    else:
        await engine.hand_back(s, ctx, words, {"IVR_NEXT": "hangup"})


async def _store_callback(engine: Engine, ctx: CallContext, number: str, queue: str) -> tuple[dict, Promise]:
    """Store the request with its promise: the one the caller was offered on for this queue, else a new one."""
    offered = ctx.promise
    promise = offered[1] if offered is not None and offered[0] == queue else await callback_promise(engine, ctx, queue)
    assert engine.services.callbacks is not None   # the callers checked _callbacks_ready()
    record = await engine.services.callbacks.request(number, queue=queue, lang=ctx.lang, call_uid=ctx.uid,
                                                     joined_at=ctx.started, caller=ctx.callerid,
                                                     promise_s=promise.seconds)
    engine.services.events.publish("callback.requested", {**record, "source": "menu"})
    if promise.seconds is not None and engine.services.promises is not None:
        engine.services.promises.promised(queue, promise.seconds)
    ctx.vars["callback_id"] = str(record["id"])
    ctx.outcome = "callback_requested"
    return record, promise


async def _allowed(engine: Engine, ctx: CallContext, number: str) -> bool:
    """May the line call this number back? (the outbound guard, without using up its hourly caps: the
    dispatcher counts the dial itself). A refusal is logged, counted and audited by the guard."""
    verdict = await engine.services.outbound.check(number, "callback", count=False, ref=f"call {ctx.uid}")
    return bool(verdict.ok)


async def confirm_number(engine: Engine, s: AgiSession, ctx: CallContext) -> str:
    """The number to call back: the caller ID confirmed with 1, or one keyed in (three tries); '' if none.

    Only a number the outbound guard allows is offered or returned: a typed number it refuses is answered
    with ``callback-number-refused``, then the caller's own number is offered if the guard allows that,
    else '' (nothing is stored)."""
    own = ctx.callerid if VALIDATORS["phone"](ctx.callerid) and await _allowed(engine, ctx, ctx.callerid) else ""
    number = own
    for _ in range(3):
        if not number:
            digits = await engine.ask(s, ctx, ("enter-number",), 10.0, max_digits=15)
            if not VALIDATORS["phone"](digits):
                await engine.play(s, ctx, ("invalid",) if digits else ("no-input",))
                continue
            if not await _allowed(engine, ctx, digits):
                log.info("call %s: callback to a typed number refused by the outbound guard", ctx.uid)
                ctx.path.append("callback-number-refused")
                await engine.play(s, ctx, ("callback-number-refused",))
                if not own:
                    return ""
                number = own
            else:
                number = digits
        # 1 or 2 may be pressed as soon as the caller recognises (or not) the number
        digit = await engine.play(s, ctx, ("callback-number-is",), "12") or await s.say_digits(number, "12") \
            or await engine.ask(s, ctx, ("callback-confirm",), 5.0)
        if digit == "1":
            return number
        if digit == "2":
            number = ""
    return ""


def _callbacks_ready(engine: Engine) -> bool:
    return engine.services.callbacks is not None and engine.services.outbound is not None


async def fallback_offer(engine: Engine, s: AgiSession, ctx: CallContext, queue: str) -> bool:
    """A caller the fallback queue did not serve in time: offer a callback that keeps their place (from
    ``ctx.started``). True when it is stored and handed back (IVR_NEXT=hangup with the confirmation);
    otherwise the dialplan apologises and hangs up."""
    if not _callbacks_ready(engine):
        return False
    if await engine.ask(s, ctx, ("fallback-offer",), 6.0) != "1":
        log.info("call %s: fallback queue timed out; callback offer declined", ctx.uid)
        return False
    number = await confirm_number(engine, s, ctx)
    if not number:
        log.info("call %s: fallback queue timed out; callback number not confirmed", ctx.uid)
        return False
    record, promise = await _store_callback(engine, ctx, number, queue)
    log.info("call %s: fallback queue timed out; callback %s stored for %s (queue %s, place since %.0f, %s)",
             ctx.uid, record["id"], number, queue, ctx.started, _promised(promise))
    await _booked(engine, s, ctx, (), promise, None)
    return True


def _promised(promise: Promise) -> str:
    return "no promise" if promise.seconds is None else f"promised within {promise.seconds / 60:.0f} min"


async def callback_node(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    """Confirm (or enter) the number to call back, store the request, keep the caller's place."""
    # the queue the caller was offered the callback from, else the node's, else the fallback queue
    queue = ctx.queue or node.get("queue") or engine.services.fallback_queue
    if not _callbacks_ready(engine):
        log.info("call %s: callbacks are not available; the caller goes to %s", ctx.uid, queue)
        ctx.path.append("callback-unavailable")
        return await queue_node(engine, s, ctx, Node(node.id, "queue", node.line, {"queue": queue}))
    number = await confirm_number(engine, s, ctx)
    if not number:
        log.info("call %s: callback not confirmed; the caller goes to %s", ctx.uid, queue)
        ctx.path.append("callback-not-confirmed")
        return await queue_node(engine, s, ctx, Node(node.id, "queue", node.line, {"queue": queue}))
    record, promise = await _store_callback(engine, ctx, number, queue)
    ctx.queue = queue
    log.info("call %s: callback %s stored for %s (queue %s, %s)", ctx.uid, record["id"], number, queue,
             _promised(promise))
    await _booked(engine, s, ctx, node.prompts, promise, node.get("next"))
    return node.get("next")

