"""Calling back the callers who chose to keep their place.

The balancing loop decides *when* (idle agents, oldest place first); this
module does the call: claim the request (so no other node or tick dials it
too), Originate (always Async, tracked by its ActionID until the
OriginateResponse) through the trunk into ``ivr-callback``, which tells the
customer who is calling and puts them in the queue with priority. No answer,
busy or failure puts the request back in line with a growing back-off, up to
``max_attempts``. Every dial passes the outbound guard first (ivr/campaigns/outbound.py):
a number it refuses is closed with the reason (a cap counts as an attempt and is
tried again later), and the number dialled is the E.164 form the guard approved.

The claim is a lease in Redis (ivr/store/selfservice.py), never a promise kept
in memory: ``run`` settles, at start and then every few seconds, the claims
whose holder is gone. The call of each dial carries the AccountCode
``cb:<id>`` so recovery can tell a callback still ringing or talking (left
alone until its channel is gone) from one that is not up any more (back in line
at the caller's place).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any, Callable, Mapping


from ..core import names as ev
from ..asterisk.ami_client import AmiClient, AmiError
from ..app.config import Config
from ..app.logutil import RateLimit
from ..campaigns.outbound import OutboundGuard
from ..prompts.library import PromptLibrary
from ..cluster.leader import Leadership, NotLeader
from ..store.errors import StoreError
from ..store.leader import Fenced
from ..store.selfservice import CallbackStore
from ..webhooks.events import Events

log = logging.getLogger(__name__)

RETRY_BACKOFF_S = (60.0, 300.0, 900.0)
BUSY_RETRY_S = 120.0
RING_TIMEOUT_S = 30
RECOVER_EVERY_S = 5.0
ACCOUNT_PREFIX = "cb:"
# OriginateResponse Reason codes (enum ast_control_frame_type): 4 answered, 5 busy, 3 no answer / ringing, 8 congestion
REASONS = {"0": "failed", "1": "hung up", "3": "no answer", "4": "answered", "5": "busy", "8": "congestion"}


def dial_string(cfg: Config, number: str) -> str:
    """PJSIP dial string through the trunk (numbers are digits only: validated before storing)."""
    if not number.isdigit():
        raise ValueError(f"callback number must be digits, got {number!r}")
    host = cfg.asterisk.trunk_uri.split(":", 1)[1]
    return f"PJSIP/trunk/sip:{number}@{host}"


def kept_within(rec: Mapping[str, Any], made_at: float) -> str:
    """Whether a callback made at ``made_at`` kept its promise: yes, no, or none (no promise was made)."""
    try:
        due = float(rec.get("due") or "nan")
    except (TypeError, ValueError):
        due = math.nan
    if not math.isfinite(due):
        return "none"
    return "yes" if made_at <= due else "no"


def account_code(callback_id: str) -> str:
    """The AccountCode of a callback's call (how recovery finds its channel)."""
    return f"{ACCOUNT_PREFIX}{callback_id}"


class CallbackDispatcher:
    """Dials callbacks the balancing loop hands over."""

    def __init__(self, cfg: Config, ami: AmiClient, callbacks: CallbackStore, prompts: PromptLibrary,
                 guard: OutboundGuard, max_attempts: int = 3,
                 on_made: Callable[[str], None] | None = None, continuity: Any = None,
                 events: Events | None = None, leadership: Leadership | None = None) -> None:
        self.cfg = cfg
        # only the balancing leader dispatches and recovers; its claims are fenced by its lease
        self.leadership = leadership or Leadership.solo(cfg.node)
        self.fenced = 0
        self.events = events or Events.disabled()   # callback.done
        self.on_made = on_made        # told "yes", "no" or "none" for each callback made (kept within its promise?)
        self.guard = guard
        self.ami = ami
        self.callbacks = callbacks
        self.prompts = prompts
        self.max_attempts = max_attempts
        self.dialled = 0
        self.answered = 0
        self.failed = 0
        self.skipped = 0
        self.refused = 0
        self.recovered = 0
        self.recover_errors = 0
        self.last_recover_error = ""
        self._unreachable = RateLimit(10.0)
        self.continuity = continuity  # ivr.continuity.service.Continuity: no callback to someone on a call with us

    @property
    def enabled(self) -> bool:
        return bool(self.cfg.asterisk.trunk_uri)

    async def pending(self) -> list[dict[str, Any]]:
        return await self.callbacks.pending(200) if self.enabled else []

    async def dispatch(self, callback_id: str, queue: str) -> None:
        try:
            if self.leadership.clustered:
                rec = await self.callbacks.claim(callback_id, node=self.cfg.node, fence=self.leadership.fence())
            else:
                rec = await self.callbacks.claim(callback_id, node=self.cfg.node)
        except (Fenced, NotLeader) as exc:
            self.fenced += 1
            log.warning("callback %s: not claimed, this node no longer leads (%s)", callback_id, exc)
            return
        if rec is None:
            return
        number, lang = rec["number"], rec.get("lang") or "en"
        if self.continuity is not None:
            try:
                if await self.continuity.answered_since(number, float(rec.get("requested_at") or 0)):
                    self.skipped += 1
                    await self.callbacks.close(callback_id, "reached", "the caller reached an agent meanwhile")
                    self._done(rec, "reached", "the caller reached an agent meanwhile")
                    log.info("callback %s: %s reached an agent since asking; not dialled", callback_id, number)
                    return
                if await self.continuity.busy(number, besides=rec.get("call_uid") or ""):
                    self.skipped += 1
                    await self.callbacks.postpone(callback_id, time.time() + BUSY_RETRY_S, "caller on a call")
                    log.info("callback %s: %s is on a call with us now; tried again in %.0fs", callback_id,
                             number, BUSY_RETRY_S)
                    return
            except StoreError as exc:
                log.warning("callback %s: caller state unknown (Redis: %s); dialling anyway", callback_id, exc)
        attempts = int(rec.get("attempts") or 0) + 1
        verdict = await self.guard.check(number, "callback", ref=callback_id)
        if not verdict.ok:
            self.refused += 1
            why = f"refused: {verdict.reason}"
            if not verdict.retry_later:
                await self.callbacks.close(callback_id, "refused", why)
                self._done(rec, "refused", why, attempts=attempts)
            elif attempts < self.max_attempts:
                await self.callbacks.finish(callback_id, why, retry_at=time.time() + RETRY_BACKOFF_S[
                    min(attempts - 1, len(RETRY_BACKOFF_S) - 1)])
            else:
                await self.callbacks.finish(callback_id, why)
                self._done(rec, "failed", why, attempts=attempts)
            return
        prompt = self.prompts.path(lang, "callback-intro") or self.prompts.path(lang, "please-hold") or "beep"
        fields = {
            "Channel": dial_string(self.cfg, verdict.digits), "Context": "ivr-callback", "Exten": "s", "Priority": 1,
            "Async": "true", "Timeout": RING_TIMEOUT_S * 1000, "Account": account_code(callback_id),
            "CallerID": self.cfg.asterisk.outbound_callerid or "ivr",
            "Variable": [f"IVR_QUEUE={rec.get('queue') or queue}", f"IVR_PROMPT={prompt}",
                         f"IVR_CALLBACK={callback_id}", f"CHANNEL(language)={lang}",
                         f"IVR_CALLBACK_NUMBER={number}"],
        }
        self.dialled += 1
        log.info("callback %s: dialling %s for queue %s (attempt %d)", callback_id, number, queue, attempts)
        outcome = "failed"
        try:
            result = await self.ami.action(ev.ORIGINATE, fields, as_list=None, timeout=RING_TIMEOUT_S + 15)
            events = result if isinstance(result, list) else [result]
            final = next((m for m in events if m.get("Event") == ev.ORIGINATE_RESPONSE), None)
            if final is not None:
                outcome = "answered" if final.get("Response") == "Success" else REASONS.get(final.get("Reason", ""), "failed")
        except AmiError as exc:
            log.warning("callback %s: originate failed: %s", callback_id, exc)
        if outcome == "answered":
            self.answered += 1
            made_at = time.time()
            kept = kept_within(rec, made_at)
            uid = final.get("Uniqueid", "") if final is not None else ""
            if uid:   # the call record of the dialled channel: a callback, not a new inbound call
                await self.callbacks.mark_call(uid, callback_id, kept=kept)
                if self.continuity is not None:
                    await self.continuity.mark_live(number, uid)
            await self.callbacks.finish(callback_id, "answered", extra={"made_at": f"{made_at:.3f}", "kept": kept})
            self._done(rec, "done", "answered", attempts=attempts, made_at=round(made_at, 3), kept=kept, call_uid=uid)
            if self.on_made is not None:
                self.on_made(kept)
            log.info("callback %s: %s answered, in queue %s (promise kept: %s%s)", callback_id, number, queue, kept,
                     f", {float(rec['due']) - made_at:+.0f}s to spare" if kept != "none" else "")
        elif attempts < self.max_attempts:
            delay = RETRY_BACKOFF_S[min(attempts - 1, len(RETRY_BACKOFF_S) - 1)]
            await self.callbacks.finish(callback_id, outcome, retry_at=time.time() + delay)
            log.info("callback %s: %s (%s); retry in %.0fs", callback_id, number, outcome, delay)
        else:
            self.failed += 1
            await self.callbacks.finish(callback_id, outcome)
            self._done(rec, "failed", outcome, attempts=attempts)
            log.warning("callback %s: %s not reached after %d attempts (%s)", callback_id, number, attempts, outcome)

    # ------------------------------------------------------------ recovery
    def _done(self, rec: Mapping[str, Any], status: str, outcome: str, **extra: Any) -> None:
        """callback.done: the callback is closed (done, failed, refused, reached), with its request's fields."""
        fields = {k: v for k, v in rec.items() if k not in ("lease", "lease_node", "lease_until")}
        self.events.publish("callback.done", {**fields, **extra, "status": status, "outcome": outcome})

    async def recover(self) -> dict[str, str]:
        """Settle the claims nobody holds any more (see the module docstring); callback id -> what was done.
        Raises AmiError or StoreError when the live channels or Redis cannot be read (nothing is changed)."""
        orphans = await self.callbacks.orphans(self.cfg.node)
        if not orphans:
            return {}
        channels = await self.ami.list_action(ev.CORE_SHOW_CHANNELS, timeout=20)
        live = {code[len(ACCOUNT_PREFIX):] for c in channels
                if (code := str(c.get("AccountCode", ""))).startswith(ACCOUNT_PREFIX)}
        done = await self.callbacks.recover(orphans, live)
        for cb_id, what in done.items():
            if what == "requeued":
                self.recovered += 1
                log.warning("callback %s: claim recovered (its dial never ended here): back in line at its place",
                            cb_id)
            elif what == "still_live":   # asked again every round while that call lasts
                log.debug("callback %s: orphaned claim whose call is still up: left alone", cb_id)
        return done

    async def run(self, every: float = RECOVER_EVERY_S) -> None:
        """Recover orphaned claims once AMI is up, then every ``every`` seconds; failures are retried."""
        delay = every
        while True:
            await self.ami.ready.wait()
            if not self.leadership.is_leader:   # a follower: the leader recovers (checked again shortly)
                await asyncio.sleep(min(every, 1.0))
                continue
            try:
                await self.recover()
                delay = every
                self.last_recover_error = ""
            except asyncio.CancelledError:
                raise
            except (AmiError, StoreError, OSError) as exc:
                self.recover_errors += 1
                self.last_recover_error = str(exc)[:200]
                self._unreachable.log(log, logging.WARNING, "callback recovery failed (%s); retrying", exc)
                delay = min(delay * 2, 60.0)
            except Exception as exc:
                self.recover_errors += 1
                self.last_recover_error = str(exc)[:200]
                log.exception("callback recovery failed")
                delay = min(delay * 2, 60.0)
            await asyncio.sleep(delay)
