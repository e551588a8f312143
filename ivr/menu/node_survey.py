"""The node kinds that ask the caller about the call: ``survey`` (a score from 1 to 5; a poor one goes to the
team of the call's reason through the outcomes service) and ``feedback`` (a recorded message, attached to the
survey's item after a poor score, else a new item).
"""

from __future__ import annotations

import logging
import time

from ..asterisk.agi_server import AgiSession
from .context import CallContext, Engine
from .schema import Node

log = logging.getLogger(__name__)


async def feedback_node(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
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


async def survey_node(engine: Engine, s: AgiSession, ctx: CallContext, node: Node) -> str | None:
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

