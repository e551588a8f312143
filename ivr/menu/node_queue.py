"""The ``queue`` and ``continuity`` node kinds: a caller handed to an Asterisk queue (wait estimate, priority,
a returning caller's place, a callback offer on a long wait with its promise: ``callback_promise``, also used
by ``node_callback.py``), and the recognition of who is calling (a caller back after dropping out rejoins at
their place; one notified by a campaign takes the short path).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from ..asterisk.agi_server import AgiSession
from ..balance.forecast import Promise, spoken_and_offer
from .context import CallContext, Engine
from .node_input import set_language
from .schema import Node
from .validators import is_digits

log = logging.getLogger(__name__)

PROMISE_TIMEOUT = 3.0


async def callback_promise(engine: Engine, ctx: CallContext, queue: str) -> Promise:
    """The callback promise for ``queue`` now, logged once per call with why (no service, an error or a
    time-out: no promise)."""
    promises = engine.services.promises
    if promises is None:
        promise = Promise(None, None, "no promise service")
    else:
        try:
            promise = await asyncio.wait_for(promises.callback_promise(queue), PROMISE_TIMEOUT)
        except Exception as exc:   # never keep a caller waiting on this: no promise, no offer
            promise = Promise(None, None, f"promise unavailable ({exc or type(exc).__name__})")
    ctx.promise = (queue, promise)
    log.info("call %s: callback promise for %s: %s (%s)", ctx.uid, queue,
             "none" if promise.seconds is None else f"{promise.seconds:.0f}s", promise.why)
    return promise


async def _offer_callback(engine: Engine, ctx: CallContext, queue: str, estimate: float | None,
                          over: float | str | None) -> bool:
    """Whether to offer a callback: the node's ``callback_over`` (seconds or auto) and a promise that can be
    kept (ivr/balance/forecast.py offer_callback); the promise is only computed when an offer is possible."""
    promises = engine.services.promises
    if over is None or promises is None or not promises.might_offer(estimate, over):
        return False
    promise = await callback_promise(engine, ctx, queue)
    offered = promises.offer(estimate, promise, over)
    log.info("call %s: estimated wait %s in %s: %s", ctx.uid,
             "unknown" if estimate is None or not math.isfinite(estimate) else f"{estimate:.0f}s", queue,
             "offering a callback" if offered else f"no callback offered (callback_over {over})")
    return offered


async def queue_node(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    queue = node.get("queue")
    ctx.queue = queue
    model, ast_estimate = engine.services.estimate_wait(queue), engine.services.asterisk_estimate(queue)
    estimate, offer_on = spoken_and_offer(model, ast_estimate)
    if node.get("callback") and await _offer_callback(engine, ctx, queue, offer_on, node.get("callback_over")):
        digit = await engine.ask(s, ctx, node.get("offer_prompt", ("callback-offer",)), 5.0)
        if digit == "1":
            return node.get("callback")
    last_words = node.prompts      # played by the dialplan just before Queue() (see MenuEngine.hand_back)
    if node.get("announce_wait") and estimate is not None and 60 <= estimate < 4 * 3600:
        await engine.play(s, ctx, node.prompts)
        await engine.play(s, ctx, ("wait-estimate",))
        await s.say_number(max(1, int(estimate / 60 + 0.5)))   # half a minute rounds up
        last_words = ("minutes",)
    ctx.outcome = "queued"
    # both estimates at the moment the caller joins, kept in the record so they can be checked against the
    # wait that followed (benchmarks/surge_load.py --mode hold)
    if model is not None and math.isfinite(model):
        ctx.estimates["estimate"] = str(round(model))
    if ast_estimate is not None:
        ctx.estimates["ast_estimate"] = str(round(ast_estimate))
    priority = int(node.get("priority", 0))
    if ctx.vars.get("repeat") and engine.services.repeat_priority:
        priority = max(priority, engine.services.repeat_priority)
    if ctx.vars.get("priority_group") and engine.services.continuity is not None:
        priority = max(priority, engine.services.continuity.group_priority(ctx.vars["priority_group"]))
    position = None
    if ctx.vars.get("place_since"):   # a returning caller: back to the place their first call earned
        position = engine.services.queue_position(queue, float(ctx.vars["place_since"]))
    values = {"IVR_QUEUE": queue, "IVR_PRIORITY": str(priority),
              "IVR_QUEUE_TIMEOUT": str(int(node.get("timeout", 0)) or ""),
              "IVR_POSITION": str(position) if position else "",
              "IVR_SURVEY": ctx.menu.name if ctx.menu.survey else "", "IVR_NEXT": "queue"}
    await engine.hand_back(s, ctx, last_words, {k: v for k, v in values.items() if v != ""})
    log.info("call %s: to queue %s (estimated wait %s%s)", ctx.uid, queue,
             "unknown" if estimate is None or not math.isfinite(estimate) else f"{estimate:.0f}s",
             f", position {position}" if position else "")
    return None


CONTINUITY_TIMEOUT = 2.0


async def continuity_node(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    """Who is calling: a caller who dropped out of a queue rejoins it at their place; a caller notified by
    a campaign goes to ``notified``; everyone else to ``next``. Redis trouble: the caller is treated as new."""
    svc = engine.services.continuity
    if svc is None or not ctx.callerid:
        return node.get("next")
    try:
        found = await asyncio.wait_for(svc.recognise(ctx.uid, ctx.callerid), CONTINUITY_TIMEOUT)
    except Exception as exc:   # never keep a caller waiting on this: they are served as a new caller
        log.warning("call %s: caller history unavailable (%s); treated as a new caller", ctx.uid,
                    exc or type(exc).__name__)
        return node.get("next")
    if found.repeat:
        ctx.vars["repeat"] = "1"
    if found.group:
        ctx.vars["priority_group"] = found.group
        log.info("call %s: caller flagged %s", ctx.uid, found.group)
    drop = found.dropped
    queues = getattr(engine.menus, "queues", None)
    if drop and node.get("rejoin", True) and (queues is None or drop.get("queue") in queues):
        await set_language(s, ctx, str(drop.get("lang") or ""))
        ctx.vars["place_since"] = f"{float(drop['place_since']):.3f}"
        ctx.path.append("returning")
        log.info("call %s: %s returns %.0fs after dropping out of %s (waited %ss): rejoins at their place",
                 ctx.uid, found.number, time.time() - float(drop.get("dropped_at") or time.time()), drop["queue"],
                 drop.get("waited", "?"))
        await s.set_variable("IVR_RETURNING", "1")
        rejoin = Node(node.id, "queue", node.line, {"queue": drop["queue"],
                                                    "prompts": tuple(node.get("welcome_back", ("welcome-back",)))})
        return await queue_node(engine, s, ctx, rejoin)
    notice = found.notice
    if notice and node.get("notified"):
        await set_language(s, ctx, str(notice.get("lang") or ""))
        action = str(notice.get("action") or "")
        ctx.vars["notice_campaign"] = str(notice.get("campaign") or "")
        ctx.vars["notice_action"] = action
        booking, reference = str(notice.get("booking") or ""), str(notice.get("reference") or "")
        if is_digits(booking) and len(booking) <= 12:
            ctx.vars.setdefault("booking", booking)
        if is_digits(reference) and len(reference) <= 12:
            ctx.vars["notice_refund"] = reference
        log.info("call %s: %s was notified by campaign %s (%s): short path", ctx.uid, found.number,
                 ctx.vars["notice_campaign"], action or "no key")
        values = {"IVR_NOTICE_CAMPAIGN": ctx.vars["notice_campaign"], "IVR_NOTICE_ACTION": action,
                  "IVR_NOTICE_REF": ctx.vars.get("notice_refund", ""), "IVR_BOOKING": ctx.vars.get("booking", "")}
        values = {k: v for k, v in values.items() if v and all(c.isalnum() or c in "-_" for c in v)}
        if values:
            await engine.mset(s, values)
        return node.get("notified")
    return node.get("next")

