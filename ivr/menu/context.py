"""What the menu engine and the node kinds share: the call being served (``CallContext``), the services node
kinds may call (``EngineServices``), the engine as a node kind sees it (``Engine``) and the shape of a node kind
(``NodeKind``).

The engine (``engine.py``) runs node kinds it is given in a ``registry.NodeRegistry``; the node kinds
(``node_*.py``, listed by ``nodes.py``) are written against this module, never against the engine, so neither imports the other's
module the wrong way round.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping, Protocol

from ..asterisk.agi_server import AgiSession
from ..balance.forecast import Promise
from ..store.selfservice import CallbackStore, SurveyStore
from ..webhooks.events import Events
from .schema import Menu, MenuSet, Node
from .services import LookupBackend

ALL_KEYS = "0123456789*#"


class Promises(Protocol):
    """The callback promise (ivr/callbacks/promise.py PromiseService)."""

    async def callback_promise(self, queue: str) -> Promise: ...
    def offer(self, estimate: float | None, promise: Promise, over: float | str | None) -> bool: ...
    def might_offer(self, estimate: float | None, over: float | str | None) -> bool: ...
    def promised(self, queue: str, seconds: float) -> None: ...


class CallSink(Protocol):
    """Where the engine reports calls (the call recorder)."""

    def track(self, uid: str) -> None: ...
    async def save(self, uid: str, fields: dict[str, Any]) -> None: ...


@dataclass
class EngineServices:
    """What nodes may call: look-ups, stores, live estimates, the live banner, the clock."""

    backends: Mapping[str, LookupBackend] = field(default_factory=dict)
    callbacks: CallbackStore | None = None
    surveys: SurveyStore | None = None
    estimate_wait: Callable[[str], float | None] = lambda queue: None
    asterisk_estimate: Callable[[str], float | None] = lambda queue: None   # app_queue's average hold time
    banner: Callable[[str], Awaitable[str | None]] | None = None
    now: Callable[[datetime.tzinfo], datetime.datetime] = lambda tz: datetime.datetime.now(tz)
    fallback_queue: str = "support"
    continuity: Any = None                 # ivr.continuity.service.Continuity (None: every caller is new)
    queue_position: Callable[[str, float], int | None] = lambda queue, since: None
    repeat_priority: int = 0               # queue priority of repeat callers (continuity.repeat_priority)
    outcomes: Any = None                   # ivr.outcomes.service.Outcomes: feedback recordings, poor surveys
    outbound: Any = None                   # ivr.campaigns.outbound.OutboundGuard (None: no callback is offered)
    promises: Promises | None = None       # the callback promise (None: no promise, so no callback offered)
    events: Events = field(default_factory=Events.disabled)   # webhooks' events (callback.requested)


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
    reason: str = ""              # why they called: the last ``reason`` on their path
    started: float = field(default_factory=time.time)
    estimates: dict[str, str] = field(default_factory=dict)   # wait estimates when they joined a queue
    promise: tuple[str, Promise] | None = None   # (queue, callback promise) once computed for this call

    def values(self) -> dict[str, str]:
        """What ``{name}`` templates may use."""
        return {"caller": self.callerid, "lang": self.lang, "uid": self.uid, **self.vars}


class Engine(Protocol):
    """The engine as node kinds see it (``engine.MenuEngine``): its menus, services and prompt helpers."""

    menus: MenuSet
    services: EngineServices
    default_language: str

    def files(self, ctx: CallContext, names: tuple[str, ...]) -> list[str]: ...

    async def play(self, session: AgiSession, ctx: CallContext, names: tuple[str, ...],
                   escape: str = "") -> str | None: ...

    async def ask(self, session: AgiSession, ctx: CallContext, names: tuple[str, ...],
                  timeout: float, max_digits: int = 1) -> str: ...

    async def mset(self, session: AgiSession, values: dict[str, str], play: list[str] | None = None) -> None: ...

    async def hand_back(self, session: AgiSession, ctx: CallContext, names: tuple[str, ...],
                        values: dict[str, str]) -> None: ...


# a node kind: does its AGI work and returns the id of the next node, or None (the call leaves the IVR)
NodeKind = Callable[[Engine, AgiSession, CallContext, Node], Awaitable[str | None]]
# the callback offer after the fallback queue's timeout (the queue to keep the place in): True when stored
FallbackOffer = Callable[[Engine, AgiSession, CallContext, str], Awaitable[bool]]
