"""The ``lookup`` node kind: a self-service look-up in a configured backend (``services.py``), bounded by
``LOOKUP_TIMEOUT``, its result spoken back (``say``) and routed to ``found``, ``not_found`` or ``error``; 0 while
it is spoken goes to a human (``node_input.escalate``).

Anything spoken back is digits or a plain prompt name; only flat, short values of the result are kept.
"""

from __future__ import annotations

import asyncio
import logging

from ..asterisk.agi_server import AgiSession
from .context import CallContext, Engine
from .node_input import ESCALATE_KEY, escalate, escalation_target
from .schema import Node
from .services import LookupFailed
from .validators import format_part, is_digits, safe_prompt_name

log = logging.getLogger(__name__)

LOOKUP_TIMEOUT = 5.0


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


async def lookup_node(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
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
    target = escalation_target(ctx, node)
    if await _say(engine, s, ctx, node, {**values, **flat}, ESCALATE_KEY if target else "") == ESCALATE_KEY:
        return await escalate(engine, s, ctx, node, target)
    return node.get("found")

