"""One coroutine per node kind: ``(engine, session, ctx, node) -> next node id | None``, registered into the
engine by ``default_registry()`` (the only place the standard kinds are listed). The engine is seen through
``context.Engine``: this module never imports ``engine.py``.

Caller input never leaves this module unchecked: digits are matched against
option tables, collected input is digits only within the node's bounds and
passes its validator, and anything spoken back is digits or a plain prompt name.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from zoneinfo import ZoneInfo

from ..asterisk.agi_server import AgiSession
from ..balance.forecast import Promise, spoken_and_offer
from .context import CallContext, Engine
from .registry import NodeRegistry
from .schema import Node
from .services import LookupFailed
from .validators import VALIDATORS, format_part, is_digits, safe_prompt_name

log = logging.getLogger(__name__)

LOOKUP_TIMEOUT = 5.0


ESCALATE_KEY = "0"


def _escalation(ctx: CallContext, node: Node) -> str:
    """Where 0 goes from this self-service step ('' when nowhere: the key means nothing here)."""
    return node.get("escalate") or ctx.menu.escalate


async def _escalate(engine: Engine, s: AgiSession, ctx: CallContext, node: Node, target: str) -> str:
    """The caller pressed 0 in a self-service step: to a human, with the context on the channel.

    The ``__`` variables are inherited by the agent's channel; CALLERID(name) is what a desk phone shows.
    """
    booking = ctx.vars.get("booking", "")
    said = ctx.vars.get("said", "")
    ctx.vars["escalated_from"] = node.id
    ctx.path.append("escalated")
    values = {"__IVR_ESCALATED_FROM": node.id, "__IVR_PATH": ">".join(ctx.path[-12:]),
              "__IVR_BOOKING": booking if is_digits(booking) else "", "__IVR_SAID": said}
    await engine.mset(s, {k: v for k, v in values.items() if v})
    await s.set_variable("CALLERID(name)", " ".join(x for x in ("0", node.id, booking if is_digits(booking) else "")
                                                    if x)[:40])
    if engine.services.continuity is not None:
        engine.services.continuity.context.setdefault(ctx.uid, {}).update(
            escalated_from=node.id, **({"booking": booking} if is_digits(booking) else {}))
    log.info("call %s: 0 pressed in %s: self-service left for %s (booking %s, said %s)", ctx.uid, node.id, target,
             booking or "-", said or "-")
    return target


async def _play(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    target = _escalation(ctx, node)
    keys = node.get("skip_keys", "") + (ESCALATE_KEY if target else "")
    digit = await engine.play(s, ctx, node.prompts, keys)
    if target and digit == ESCALATE_KEY:
        return await _escalate(engine, s, ctx, node, target)
    return node.get("next")


async def _banner(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    """The supervisor's live crisis message in the caller's language, else the node's prompts."""
    live = await engine.services.banner(ctx.lang) if engine.services.banner else None
    if live:
        log.info("call %s: live banner %s", ctx.uid, live.rsplit("/", 1)[-1])
        await s.stream_file(live, node.get("skip_keys", ""))
    else:
        await engine.play(s, ctx, node.prompts, node.get("skip_keys", ""))
    return node.get("next")


async def _choose(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    """Shared by menu and language: the chosen option's target, or None after the retries."""
    options = node.get("options")
    timeout = float(node.get("timeout", 5))
    retries = int(node.get("retries", 2))
    repeat_key = node.get("repeat_key")
    attempt = repeats = 0
    while attempt <= retries:
        digit = await engine.ask(s, ctx, node.prompts, timeout)
        if digit and digit == repeat_key and repeats < 5:
            repeats += 1
            continue
        if digit in options:
            log.info("call %s: %s chose %s", ctx.uid, node.id, digit)
            return options[digit]
        attempt += 1
        if not digit:
            log.info("call %s: %s timed out (%d/%d)", ctx.uid, node.id, attempt, retries + 1)
            extra = node.get("timeout_prompt", ("no-input",))
        else:
            log.info("call %s: %s invalid key %r (%d/%d)", ctx.uid, node.id, digit, attempt, retries + 1)
            extra = node.get("invalid_prompt", ("invalid",))
        if attempt <= retries and extra:
            await engine.play(s, ctx, extra)
    return None


async def _menu(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    target = await _choose(engine, s, ctx, node)
    if target is None:
        ctx.path.append("retries-exhausted")
        return node.get("on_fail")
    return target


async def _language(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    lang = await _choose(engine, s, ctx, node)
    ctx.lang = lang or node.get("default", engine.default_language)
    await s.set_variable("CHANNEL(language)", ctx.lang)
    return node.get("next")


async def _collect(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    lo, hi = int(node.get("min", 1)), int(node.get("max", 20))
    timeout = float(node.get("timeout", 6))
    retries = int(node.get("retries", 2))
    check = VALIDATORS.get(node.get("validate", "digits"), VALIDATORS["digits"])
    target = _escalation(ctx, node)
    for attempt in range(1, retries + 2):
        digits = await engine.ask(s, ctx, node.prompts, timeout, max_digits=hi)
        if target and digits == ESCALATE_KEY:      # 0 alone (then # or a pause): no valid input is just "0"
            return await _escalate(engine, s, ctx, node, target)
        if digits and is_digits(digits) and lo <= len(digits) <= hi and check(digits):
            ctx.vars[node.get("save_as")] = digits
            log.info("call %s: %s collected %d digits", ctx.uid, node.id, len(digits))
            return node.get("next")
        log.info("call %s: %s %s (%d/%d)", ctx.uid, node.id, "invalid input" if digits else "timed out",
                 attempt, retries + 1)
        if attempt <= retries:
            extra = node.get("invalid_prompt", ("invalid",)) if digits else node.get("timeout_prompt", ("no-input",))
            await engine.play(s, ctx, extra)
    ctx.path.append("retries-exhausted")
    return node.get("on_fail")


async def _say(engine: Engine, s: AgiSession, ctx: CallContext, node: Node, values: dict[str, str],
               escape: str = "") -> str | None:
    """Speak the result; a key in ``escape`` stops it and is returned."""
    for kind, template in node.get("say", ()):
        text = format_part(template, values)
        digit = None
        if kind == "prompt":
            name = safe_prompt_name(text)
            if name:
                digit = await engine.play(s, ctx, (name,), escape)
        elif kind == "digits" and is_digits(text) and len(text) <= 20:
            digit = await s.say_digits(text, escape)
        elif kind == "number" and is_digits(text) and len(text) <= 9:
            digit = await s.say_number(int(text), escape)
        if digit:
            return digit
    return None


async def _lookup(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    backend = engine.services.backends.get(node.get("backend"))
    values = ctx.values()
    params = {"uid": ctx.uid, "caller": ctx.callerid, "lang": ctx.lang}
    params.update({k: format_part(t, values) for k, t in (node.get("params") or {"booking": "{booking}"}).items()})
    try:
        if backend is None:
            raise LookupFailed(f"backend {node.get('backend')!r} is not configured")
        result = await asyncio.wait_for(backend.lookup(node.get("operation"), params), LOOKUP_TIMEOUT)
    except (LookupFailed, asyncio.TimeoutError) as exc:
        log.warning("call %s: look-up %s failed: %s", ctx.uid, node.id, exc or "timeout")
        ctx.path.append("lookup-error")
        ctx.vars["said"] = f"{node.id}:error"
        return node.get("error")
    if result is None:
        log.info("call %s: look-up %s found nothing", ctx.uid, node.id)
        ctx.vars["said"] = f"{node.id}:not_found"
        return node.get("not_found")
    flat = {k: str(v) for k, v in result.items() if isinstance(v, (str, int, float)) and not isinstance(v, bool)}
    if node.get("save_as"):
        for k, v in flat.items():
            if k.isidentifier() and len(v) <= 64:
                ctx.vars[f"{node.get('save_as')}_{k}"] = v
    found = flat.get("status") or flat.get("reference") or "found"
    log.info("call %s: look-up %s found %s", ctx.uid, node.id, found)
    ctx.vars["said"] = f"{node.id}:{found}" if found.replace("_", "").replace("-", "").isalnum() else node.id
    target = _escalation(ctx, node)
    if await _say(engine, s, ctx, node, {**values, **flat}, ESCALATE_KEY if target else "") == ESCALATE_KEY:
        return await _escalate(engine, s, ctx, node, target)
    return node.get("found")


PROMISE_TIMEOUT = 3.0


async def _promise(engine: Engine, ctx: CallContext, queue: str) -> Promise:
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
    promise = await _promise(engine, ctx, queue)
    offered = promises.offer(estimate, promise, over)
    log.info("call %s: estimated wait %s in %s: %s", ctx.uid,
             "unknown" if estimate is None or not math.isfinite(estimate) else f"{estimate:.0f}s", queue,
             "offering a callback" if offered else f"no callback offered (callback_over {over})")
    return offered


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
    promise = offered[1] if offered is not None and offered[0] == queue else await _promise(engine, ctx, queue)
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


async def _queue(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
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


async def _continuity(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
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
        await _set_language(s, ctx, str(drop.get("lang") or ""))
        ctx.vars["place_since"] = f"{float(drop['place_since']):.3f}"
        ctx.path.append("returning")
        log.info("call %s: %s returns %.0fs after dropping out of %s (waited %ss): rejoins at their place",
                 ctx.uid, found.number, time.time() - float(drop.get("dropped_at") or time.time()), drop["queue"],
                 drop.get("waited", "?"))
        await s.set_variable("IVR_RETURNING", "1")
        rejoin = Node(node.id, "queue", node.line, {"queue": drop["queue"],
                                                    "prompts": tuple(node.get("welcome_back", ("welcome-back",)))})
        return await _queue(engine, s, ctx, rejoin)
    notice = found.notice
    if notice and node.get("notified"):
        await _set_language(s, ctx, str(notice.get("lang") or ""))
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


async def _set_language(s: AgiSession, ctx: CallContext, lang: str) -> None:
    if lang and lang in ctx.menu.languages and lang != ctx.lang:
        ctx.lang = lang
        await s.set_variable("CHANNEL(language)", lang)


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


async def _callback(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    """Confirm (or enter) the number to call back, store the request, keep the caller's place."""
    # the queue the caller was offered the callback from, else the node's, else the fallback queue
    queue = ctx.queue or node.get("queue") or engine.services.fallback_queue
    if not _callbacks_ready(engine):
        log.info("call %s: callbacks are not available; the caller goes to %s", ctx.uid, queue)
        ctx.path.append("callback-unavailable")
        return await _queue(engine, s, ctx, Node(node.id, "queue", node.line, {"queue": queue}))
    number = await confirm_number(engine, s, ctx)
    if not number:
        log.info("call %s: callback not confirmed; the caller goes to %s", ctx.uid, queue)
        ctx.path.append("callback-not-confirmed")
        return await _queue(engine, s, ctx, Node(node.id, "queue", node.line, {"queue": queue}))
    record, promise = await _store_callback(engine, ctx, number, queue)
    ctx.queue = queue
    log.info("call %s: callback %s stored for %s (queue %s, %s)", ctx.uid, record["id"], number, queue,
             _promised(promise))
    await _booked(engine, s, ctx, node.prompts, promise, node.get("next"))
    return node.get("next")


async def _feedback(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    """Record a spoken message (# or silence ends it) and route it by the call's reason to a team."""
    svc = engine.services.outcomes
    if svc is None:
        return node.get("next")
    await engine.play(s, ctx, node.prompts or ("feedback-intro",))
    path = svc.recording_path(ctx.uid)
    started = time.monotonic()
    _, hung_up = await s.record_file(str(path), "wav", "#", int(node.get("max_seconds", 60)) * 1000)
    seconds = time.monotonic() - started
    wav = path.parent / f"{path.name}.wav"
    if wav.exists() and wav.stat().st_size > 1000:
        if ctx.vars.get("feedback_id"):       # after a poor survey: the same item gets the recording
            await svc.attach_recording(ctx.vars["feedback_id"], wav.name, seconds)
        else:
            item = await svc.add_feedback(kind="recording", uid=ctx.uid, reason=ctx.reason, caller=ctx.callerid,
                                          lang=ctx.lang, file=wav.name, seconds=seconds)
            ctx.vars["feedback_id"] = item["id"]
    else:
        log.info("call %s: %s: nothing recorded", ctx.uid, node.id)
    if hung_up:
        return None
    await engine.play(s, ctx, node.get("thanks", ("feedback-thanks",)))
    return node.get("next")


async def _hours(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    now = engine.services.now(ZoneInfo(node.get("timezone", "UTC")))
    minute = now.hour * 60 + now.minute
    is_open = now.date() not in node.get("holidays", frozenset()) and any(
        a <= minute < b for a, b in node.get("open").get(now.weekday(), ()))
    log.info("call %s: %s: %s", ctx.uid, node.id, "open" if is_open else "closed")
    return node.get("next") if is_open else node.get("closed")


async def _goto(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    return node.get("next")


async def _set(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    values = {str(k): str(v) for k, v in node.get("values").items()}
    ctx.vars.update(values)
    await engine.mset(s, values)
    return node.get("next")


async def _hangup(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    ctx.outcome = node.get("outcome", "ivr_end")
    await engine.hand_back(s, ctx, node.prompts, {"IVR_NEXT": "hangup"})
    return None


async def _survey(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    prompts = node.prompts or ("survey-intro",)
    for _ in range(int(node.get("retries", 1)) + 1):
        digit = await engine.ask(s, ctx, prompts, float(node.get("timeout", 6)))
        if digit in ("1", "2", "3", "4", "5"):
            if engine.services.surveys is not None:
                await engine.services.surveys.record(ctx.uid, int(digit), menu=ctx.menu.name, lang=ctx.lang,
                                                     queue=ctx.queue)
            log.info("call %s: survey score %s", ctx.uid, digit)
            if engine.services.outcomes is not None:   # a poor score goes to the team of the call's reason
                item = await engine.services.outcomes.survey_answered(ctx.uid, int(digit), ctx.lang)
                if item is not None:
                    ctx.vars["feedback_id"] = item["id"]
                    ctx.reason = item["reason"]
                    if node.get("feedback"):           # "tell us more after the tone"
                        return node.get("feedback")
            await engine.play(s, ctx, node.get("thanks", ("survey-thanks",)))
            return None
        if digit:
            await engine.play(s, ctx, ("invalid",))
    log.info("call %s: survey not answered", ctx.uid)
    return None


def default_registry() -> NodeRegistry:
    """The standard node kinds (one for each kind the schema knows, ``schema.NODE_FIELDS``) and the callback
    offer after the fallback queue's timeout; a new registry at each call."""
    registry = NodeRegistry()
    for kind, handler in (
        ("play", _play),
        ("banner", _banner),
        ("menu", _menu),
        ("language", _language),
        ("collect", _collect),
        ("lookup", _lookup),
        ("queue", _queue),
        ("callback", _callback),
        ("hours", _hours),
        ("goto", _goto),
        ("set", _set),
        ("hangup", _hangup),
        ("survey", _survey),
        ("continuity", _continuity),
        ("feedback", _feedback),
    ):
        registry.register(kind, handler)
    registry.register_fallback(fallback_offer)
    return registry


__all__ = ["default_registry", "confirm_number", "fallback_offer"]
