"""The menu interpreter: runs a validated ``Menu`` over one FastAGI session.

Each node kind is one coroutine, looked up by the node's type in the ``NodeRegistry`` the engine is given
(``registry.py``; the standard kinds are registered by ``nodes.default_registry()``, the default when none is
given), that does its AGI work and returns the id of the next node (or None: the call leaves the IVR). Node
kinds see the engine through ``context.Engine`` and never import this module. Calls keep the ``Menu`` object
they started with, so a reload never changes a running call. The engine hands the call back to the dialplan
through channel variables (``IVR_NEXT``, ``IVR_QUEUE``...) and never runs Queue() itself: a caller waiting in a
queue holds no AGI connection, so a controller restart does not drop them.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

from ..asterisk.agi_server import AgiSession
from ..prompts.library import PromptLibrary
from .context import ALL_KEYS, CallContext, CallSink, EngineServices, Promises
from .nodes import default_registry
from .registry import NodeRegistry
from .schema import FORBIDDEN_IN_VALUES
from .schema import Menu, MenuSet

# CallContext, EngineServices, CallSink, Promises and ALL_KEYS live in context.py; still importable from here
__all__ = ["MenuEngine", "MAX_STEPS", "CallContext", "EngineServices", "CallSink", "Promises", "ALL_KEYS"]

log = logging.getLogger(__name__)

MAX_STEPS = 200
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./-]{1,200}$")   # a prompt path the dialplan may get in IVR_PLAY


class MenuEngine:
    """Runs menus; one instance per controller, shared by all calls.

    ``registry``: the node kinds it runs (None: ``nodes.default_registry()``, the standard kinds).
    """

    def __init__(self, menus: MenuSet, prompts: PromptLibrary, sink: CallSink,
                 default_language: str = "en", services: EngineServices | None = None,
                 registry: NodeRegistry | None = None) -> None:
        self.menus = menus
        self.prompts = prompts
        self.sink = sink
        self.default_language = default_language
        self.services = services or EngineServices()
        self.registry = registry if registry is not None else default_registry()
        self.calls_completed = 0
        self.steps_total = 0
        self.node_counts: dict[str, int] = {}

    # ------------------------------------------------------------- entry points
    async def run(self, session: AgiSession) -> None:
        """AGI handler for ``menu/<name>``: the IVR from the menu's start node."""
        menu = self._menu(session.route_arg or "main")
        ctx = self._context(session, menu)
        self.sink.track(ctx.uid)
        log.info("call %s: menu %s starts (caller %s, lang %s)", ctx.uid, menu.name, ctx.callerid, ctx.lang)
        try:
            await self._walk(session, ctx, menu.start)
            self.calls_completed += 1
        finally:
            self.steps_total += len(ctx.path)
            fields: dict[str, Any] = {
                "caller": ctx.callerid, "channel": session.env.channel, "menu": menu.name,
                "language": ctx.lang, "path": json.dumps(ctx.path), "started_at": round(ctx.started, 3),
                "ivr_queue": ctx.queue, "ivr_outcome": ctx.outcome,
                "ivr_seconds": round(time.time() - ctx.started, 3)}
            if ctx.vars:
                fields["vars"] = json.dumps(ctx.vars)
            fields.update(ctx.estimates)
            fields["reason"] = ctx.reason or "none"
            if ctx.vars.get("escalated_from"):   # self-service was left for a human, from this step
                fields["escalated_from"] = ctx.vars["escalated_from"]
            await self.sink.save(ctx.uid, fields)

    async def run_survey(self, session: AgiSession) -> None:
        """AGI handler for ``survey/<menu>``: the post-call survey after the agent hung up."""
        menu = self._menu(session.route_arg or "main")
        if not menu.survey:
            raise LookupError(f"menu {menu.name!r} has no survey")
        ctx = self._context(session, menu)
        ctx.queue = (await session.get_variable("IVR_QUEUE")) or ""
        log.info("call %s: survey of menu %s", ctx.uid, menu.name)
        await self._walk(session, ctx, menu.survey)

    async def run_fallback(self, session: AgiSession) -> None:
        """AGI handler for ``fallback/<menu>``: the fallback queue's timeout passed (the controller was away, or
        nobody could answer): offer a callback that keeps the caller's place from when they joined it
        (IVR_FALLBACK_SINCE). Declined, or no answer: the dialplan apologises and hangs up."""
        menu = self._menu(session.route_arg or "main")
        ctx = self._context(session, menu)
        since = await session.get_variable("IVR_FALLBACK_SINCE")
        try:
            joined = float(since or "")
        except ValueError:
            joined = ctx.started
        ctx.started = min(ctx.started, max(ctx.started - 86400, joined))
        queue = self.services.fallback_queue or ""
        ctx.queue, ctx.reason = queue, "callback"
        ctx.path.append("fallback-timeout")
        log.info("call %s: not answered in fallback queue %s since %.0f: the controller is back", ctx.uid, queue,
                 ctx.started)
        stored = await self.registry.fallback(self, session, ctx, queue)
        await self.sink.save(ctx.uid, {"fallback_timeout": "1",
                                       "ivr_outcome": ctx.outcome if stored else "fallback_timeout",
                                       **({"vars": json.dumps(ctx.vars)} if ctx.vars else {})})

    def _menu(self, name: str) -> Menu:
        menu = self.menus.get(name)
        if menu is None:
            raise LookupError(f"menu {name!r} is not loaded")
        return menu

    def _context(self, session: AgiSession, menu: Menu) -> CallContext:
        lang = session.env.language if session.env.language in menu.languages else self.default_language
        cid = session.env.callerid
        cid = cid[1:] if cid.startswith("+") else cid          # +4420... is the number 4420...
        callerid = cid if cid.isascii() and cid.isdigit() else ""
        return CallContext(uid=session.uniqueid, menu=menu, lang=lang, callerid=callerid[:20])

    async def _walk(self, session: AgiSession, ctx: CallContext, node_id: str | None) -> None:
        steps = 0
        while node_id is not None:
            steps += 1
            if steps > MAX_STEPS:
                raise RuntimeError(f"menu {ctx.menu.name}: more than {MAX_STEPS} steps, stopping")
            node = ctx.menu.nodes[node_id]
            ctx.path.append(node_id)
            if "reason" in node.fields:
                ctx.reason = node.fields["reason"]
            self.node_counts[node.type] = self.node_counts.get(node.type, 0) + 1
            log.debug("call %s: node %s (%s)", ctx.uid, node_id, node.type)
            node_id = await self.registry[node.type](self, session, ctx, node)

    # ------------------------------------------------------------------ helpers
    def files(self, ctx: CallContext, names: tuple[str, ...]) -> list[str]:
        return [p for p in (self.prompts.path(ctx.lang, n) for n in names) if p]

    async def play(self, session: AgiSession, ctx: CallContext, names: tuple[str, ...],
                   escape: str = "") -> str | None:
        """Play prompts in order; a key in ``escape`` stops them and is returned."""
        for f in self.files(ctx, names):
            digit = await session.stream_file(f, escape)
            if digit:
                return digit
        return None

    async def ask(self, session: AgiSession, ctx: CallContext, names: tuple[str, ...],
                  timeout: float, max_digits: int = 1) -> str:
        """Play prompts (interruptible by any key) and collect digits ('' on timeout).

        GET DATA takes one file, so all prompts but the last are played with
        STREAM FILE; a key pressed during them counts as the first digit.
        """
        files = self.files(ctx, names) or ["silence/1"]
        first = ""
        for f in files[:-1]:
            digit = await session.stream_file(f, ALL_KEYS)
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

    async def mset(self, session: AgiSession, values: dict[str, str], play: list[str] | None = None) -> None:
        """Set several channel variables in one round trip (values are validated identifiers); ``play``,
        prompt paths already checked by ``hand_back``, goes in as IVR_PLAY (joined by ``&``; empty when
        there is nothing to play)."""
        for k, v in values.items():
            if any(c in v for c in FORBIDDEN_IN_VALUES):
                raise ValueError(f"variable {k}: value {v!r} has a character that is not allowed")
        pairs = [f"{k}={v}" for k, v in values.items()]
        if play is not None:
            pairs.append("IVR_PLAY=" + "&".join(play))
        await session.exec("MSet", ",".join(pairs))

    async def hand_back(self, session: AgiSession, ctx: CallContext, names: tuple[str, ...],
                        values: dict[str, str]) -> None:
        """End the IVR: set ``values`` (IVR_NEXT among them) and leave the prompts still to be heard to the
        dialplan (IVR_PLAY, played by ``ivr-route`` before it hangs up or queues the call), all in one AGI
        command instead of a STREAM FILE per prompt and an MSet: the AGI connection is released before the
        prompts start. A prompt path the dialplan could misread (anything but letters, digits and ``_./-``)
        is played here first instead, as any other prompt."""
        files = self.files(ctx, names)
        if not all(_SAFE_PATH.fullmatch(f) for f in files):
            for f in files:
                await session.stream_file(f)
            files = []
        await self.mset(session, values, files)
