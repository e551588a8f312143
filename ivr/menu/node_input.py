"""The node kinds of what the caller hears and keys, and where that routes: ``play``, ``banner``, ``menu``,
``language``, ``collect``, and the routing kinds that need no service (``hours``, ``goto``, ``set``,
``hangup``). Also the 0 key out of a self-service step (``escalate``, used by ``node_lookup.py`` too) and the
switch of the call's language (``set_language``, used by the ``continuity`` kind).

Caller input never leaves this module unchecked: digits are matched against option tables, collected input is
digits only within the node's bounds and passes its validator.
"""

from __future__ import annotations

import logging
from zoneinfo import ZoneInfo

from ..asterisk.agi_server import AgiSession
from .context import CallContext, Engine
from .schema import Node
from .validators import VALIDATORS, is_digits

log = logging.getLogger(__name__)

ESCALATE_KEY = "0"


def escalation_target(ctx: CallContext, node: Node) -> str:
    """Where 0 goes from this self-service step ('' when nowhere: the key means nothing here)."""
    return node.get("escalate") or ctx.menu.escalate


async def escalate(engine: Engine, s: AgiSession, ctx: CallContext, node: Node, target: str) -> str:
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


async def play_node(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    target = escalation_target(ctx, node)
    keys = node.get("skip_keys", "") + (ESCALATE_KEY if target else "")
    digit = await engine.play(s, ctx, node.prompts, keys)
    if target and digit == ESCALATE_KEY:
        return await escalate(engine, s, ctx, node, target)
    return node.get("next")


async def banner_node(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
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


async def menu_node(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    target = await _choose(engine, s, ctx, node)
    if target is None:
        ctx.path.append("retries-exhausted")
        return node.get("on_fail")
    return target


async def language_node(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    lang = await _choose(engine, s, ctx, node)
    ctx.lang = lang or node.get("default", engine.default_language)
    await s.set_variable("CHANNEL(language)", ctx.lang)
    return node.get("next")


async def collect_node(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    lo, hi = int(node.get("min", 1)), int(node.get("max", 20))
    timeout = float(node.get("timeout", 6))
    retries = int(node.get("retries", 2))
    check = VALIDATORS.get(node.get("validate", "digits"), VALIDATORS["digits"])
    target = escalation_target(ctx, node)
    for attempt in range(1, retries + 2):
        digits = await engine.ask(s, ctx, node.prompts, timeout, max_digits=hi)
        if target and digits == ESCALATE_KEY:      # 0 alone (then # or a pause): no valid input is just "0"
            return await escalate(engine, s, ctx, node, target)
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


async def set_language(s: AgiSession, ctx: CallContext, lang: str) -> None:
    """Speak to the caller in ``lang`` from now on, when the menu offers it (a returning or notified caller)."""
    if lang and lang in ctx.menu.languages and lang != ctx.lang:
        ctx.lang = lang
        await s.set_variable("CHANNEL(language)", lang)


async def hours_node(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    now = engine.services.now(ZoneInfo(node.get("timezone", "UTC")))
    minute = now.hour * 60 + now.minute
    is_open = now.date() not in node.get("holidays", frozenset()) and any(
        a <= minute < b for a, b in node.get("open").get(now.weekday(), ()))
    log.info("call %s: %s: %s", ctx.uid, node.id, "open" if is_open else "closed")
    return node.get("next") if is_open else node.get("closed")


async def goto_node(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    return node.get("next")


async def set_node(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    values = {str(k): str(v) for k, v in node.get("values").items()}
    ctx.vars.update(values)
    await engine.mset(s, values)
    return node.get("next")


async def hangup_node(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    ctx.outcome = node.get("outcome", "ivr_end")
    await engine.hand_back(s, ctx, node.prompts, {"IVR_NEXT": "hangup"})
    return None

