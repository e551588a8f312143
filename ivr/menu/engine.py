"""The menu interpreter: runs a validated ``Menu`` over one FastAGI session.

Each node kind is one coroutine in ``NODE_KINDS`` that does its AGI work and
returns the id of the next node (or None: the call leaves the IVR). Calls keep
the ``Menu`` object they started with, so a reload never changes a running call.
The engine hands the call back to the dialplan through channel variables
(``IVR_NEXT``, ``IVR_QUEUE``...) and never runs Queue() itself: a caller waiting
in a queue holds no AGI connection, so a controller restart does not drop them.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

from ..agi.server import AgiSession
from ..prompts.library import PromptLibrary
from .schema import Menu, MenuSet, Node

log = logging.getLogger(__name__)

MAX_STEPS = 200


class CallSink(Protocol):
    """Where the engine reports calls (the call recorder)."""

    def track(self, uid: str) -> None: ...
    async def save(self, uid: str, fields: dict[str, Any]) -> None: ...


@dataclass(slots=True)
class CallContext:
    uid: str
    menu: Menu
    lang: str
    callerid: str
    path: list[str] = field(default_factory=list)
    vars: dict[str, str] = field(default_factory=dict)
    outcome: str = ""
    queue: str = ""
    started: float = field(default_factory=time.time)


class MenuEngine:
    """Runs menus; one instance per controller, shared by all calls."""

    def __init__(self, menus: MenuSet, prompts: PromptLibrary, sink: CallSink,
                 default_language: str = "en") -> None:
        self.menus = menus
        self.prompts = prompts
        self.sink = sink
        self.default_language = default_language
        self.calls_completed = 0
        self.steps_total = 0

    # ------------------------------------------------------------- entry point
    async def run(self, session: AgiSession) -> None:
        """AGI handler for ``menu/<name>``."""
        name = session.route_arg or "main"
        menu = self.menus.get(name)
        if menu is None:
            raise LookupError(f"menu {name!r} is not loaded")
        lang = session.env.language if session.env.language in menu.languages else self.default_language
        ctx = CallContext(uid=session.uniqueid, menu=menu, lang=lang, callerid=session.env.callerid)
        self.sink.track(ctx.uid)
        log.info("call %s: menu %s starts (caller %s, lang %s)", ctx.uid, menu.name, ctx.callerid, lang)
        node_id: str | None = menu.start
        try:
            steps = 0
            while node_id is not None:
                steps += 1
                if steps > MAX_STEPS:
                    raise RuntimeError(f"menu {menu.name}: more than {MAX_STEPS} steps, stopping")
                node = menu.nodes[node_id]
                ctx.path.append(node_id)
                log.debug("call %s: node %s (%s)", ctx.uid, node_id, node.type)
                node_id = await NODE_KINDS[node.type](self, session, ctx, node)
            self.calls_completed += 1
        finally:
            self.steps_total += len(ctx.path)
            await self.sink.save(ctx.uid, {
                "caller": ctx.callerid, "channel": session.env.channel, "menu": menu.name,
                "language": ctx.lang, "path": json.dumps(ctx.path), "started_at": round(ctx.started, 3),
                "ivr_queue": ctx.queue, "ivr_outcome": ctx.outcome,
                "ivr_seconds": round(time.time() - ctx.started, 3),
            })

    # ------------------------------------------------------------------ helpers
    def files(self, ctx: CallContext, names: tuple[str, ...]) -> list[str]:
        return [p for p in (self.prompts.path(ctx.lang, n) for n in names) if p]

    async def play(self, session: AgiSession, ctx: CallContext, names: tuple[str, ...],
                   escape: str = "") -> str | None:
        files = self.files(ctx, names)
        digit = None
        for f in files:
            digit = await session.stream_file(f, escape)
            if digit:
                return digit
        return digit

    async def ask(self, session: AgiSession, ctx: CallContext, names: tuple[str, ...],
                  timeout: float, max_digits: int = 1) -> str:
        """Play prompts (interruptible by any key) and collect digits ('' on timeout).

        GET DATA takes one file, so all prompts but the last are played with
        STREAM FILE; a key pressed during them counts as the first digit.
        """
        files = self.files(ctx, names) or ["silence/1"]
        first = ""
        for f in files[:-1]:
            digit = await session.stream_file(f, "0123456789*#")
            if digit:
                first = digit
                break
        if first == "#":
            return ""
        if first and max_digits == 1:
            return first
        prompt = "silence/1" if first else files[-1]
        digits, _ = await session.get_data(prompt, int(timeout * 1000), max_digits - len(first))
        return first + digits

    async def mset(self, session: AgiSession, values: dict[str, str]) -> None:
        """Set several channel variables in one round trip (values are validated identifiers)."""
        for k, v in values.items():
            if any(c in v for c in ",\r\n\"\\$"):
                raise ValueError(f"variable {k}: value {v!r} has a character that is not allowed")
        await session.exec("MSet", ",".join(f"{k}={v}" for k, v in values.items()))


# ----------------------------------------------------------------- node kinds
NodeKind = Callable[[MenuEngine, AgiSession, CallContext, Node], Awaitable[str | None]]


async def _play(engine: MenuEngine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    await engine.play(s, ctx, node.prompts)
    return node.get("next")


async def _choose(engine: MenuEngine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    """Shared by menu and language: returns the chosen option's target, or None after retries."""
    options = node.get("options")
    timeout = float(node.get("timeout", 5))
    retries = int(node.get("retries", 2))
    repeat_key = node.get("repeat_key")
    attempt = 0
    while attempt <= retries:
        digit = await engine.ask(s, ctx, node.prompts, timeout)
        if digit and digit == repeat_key:
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


async def _menu(engine: MenuEngine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    target = await _choose(engine, s, ctx, node)
    if target is None:
        ctx.path.append("retries-exhausted")
        return node.get("on_fail")
    return target


async def _language(engine: MenuEngine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    lang = await _choose(engine, s, ctx, node)
    ctx.lang = lang or node.get("default", engine.default_language)
    await s.set_variable("CHANNEL(language)", ctx.lang)
    return node.get("next")


async def _queue(engine: MenuEngine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    await engine.play(s, ctx, node.prompts)
    ctx.queue = node.get("queue")
    ctx.outcome = "queued"
    values = {"IVR_QUEUE": ctx.queue, "IVR_PRIORITY": str(node.get("priority", 0)),
              "IVR_QUEUE_TIMEOUT": str(int(node.get("timeout", 0)) or ""),
              "IVR_SURVEY": ctx.menu.survey, "IVR_NEXT": "queue"}
    await engine.mset(s, {k: v for k, v in values.items() if v != ""})
    log.info("call %s: to queue %s", ctx.uid, ctx.queue)
    return None


async def _goto(engine: MenuEngine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    return node.get("next")


async def _set(engine: MenuEngine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    values = {str(k): str(v) for k, v in node.get("values").items()}
    ctx.vars.update(values)
    await engine.mset(s, values)
    return node.get("next")


async def _hangup(engine: MenuEngine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
    await engine.play(s, ctx, node.prompts)
    ctx.outcome = node.get("outcome", "ivr_end")
    await s.set_variable("IVR_NEXT", "hangup")
    return None


NODE_KINDS: dict[str, NodeKind] = {
    "play": _play,
    "menu": _menu,
    "language": _language,
    "queue": _queue,
    "goto": _goto,
    "set": _set,
    "hangup": _hangup,
}
