"""The controller process: AMI client, FastAGI server, call recorder, API.

``Controller`` wires the parts together (dependencies passed in, no globals)
and owns their start and stop order. ``ivr serve`` runs one in the foreground.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from .. import __version__
from ..asterisk.agi_server import AgiRouter, AgiServer
from .aiotasks import cancel_and_wait
from ..core import names as ev
from ..asterisk.ami_client import AmiClient, AmiError
from .config import Config
from ..balance.erlang import estimate_wait
from ..balance.forecast import MIN_HISTORY
from ..banner.service import BannerService, live_prompts_dir
from ..callbacks.service import CallbackDispatcher
from ..continuity.service import Continuity
from ..outcomes.service import Outcomes, PhoneLogin
from ..refunds.service import RefundService
from ..campaigns.dialer import Dialer
from ..campaigns.notice import NoticeHandler
from ..menu.engine import EngineServices, MenuEngine
from ..menu.schema import MenuSet
from ..menu.services import RefundsBackend
from ..prompts.library import PromptLibrary
from .metrics import Metrics
from ..campaigns.outbound import OutboundGuard
from ..callbacks.promise import PromiseService
from ..outcomes.records import CallRecorder
from ..balance.loop import BalanceLoop
from ..asterisk.provision import SipProvisioner
from ..agents.roster import Roster
from ..asterisk.state import CallCenterState
from ..store.redis_store import Store

log = logging.getLogger(__name__)


class Controller:
    """Everything one controller node runs, started and stopped in order."""

    # declared ahead: lambdas made before they are assigned in __init__ refer to them
    ami: AmiClient
    roster: Roster
    balance: BalanceLoop

    def __init__(self, cfg: Config, store: Store | None = None) -> None:
        self.cfg = cfg
        self.started_at = time.time()
        self.store = store or Store.from_config(cfg.redis)
        self.state = CallCenterState()
        self.recorder = CallRecorder(self.store, inbound=frozenset(number for number, _ in cfg.routes()))
        self.metrics = Metrics()
        self.guard = OutboundGuard(cfg, self.store, self.metrics)   # every call out through the trunk
        self.continuity = Continuity(cfg.continuity, self.store)
        self.continuity.guard = self.guard
        self.continuity.channel_alive = lambda uid: not self.ami.connected or uid in self.state.channels
        self.recorder.on_finished = self._call_finished
        self.backends = {"refunds": RefundsBackend(self.store)}
        self.menus = MenuSet(cfg.dialplans_dir, frozenset(cfg.queue_names()), cfg.languages,
                             frozenset(self.backends))
        self.prompts = PromptLibrary(cfg.prompts_dir, cfg.languages[0] if cfg.languages else "en")
        self.banner = BannerService(self.store, live_prompts_dir(cfg), cfg.languages)
        services = EngineServices(backends=self.backends, callbacks=self.store.callbacks,
                                  surveys=self.store.surveys, estimate_wait=self.estimate_wait,
                                  asterisk_estimate=self.asterisk_estimate,
                                  banner=self.banner.get, fallback_queue=cfg.fallback_queue,
                                  continuity=self.continuity if cfg.continuity.enabled else None,
                                  queue_position=self.queue_position,
                                  repeat_priority=cfg.continuity.repeat_priority, outbound=self.guard)
        # the callback promise: live queues (AMI), callbacks ahead (Redis), the roster's queues for the plan
        self.promises = PromiseService(cfg.balance.promise, cfg.balance.forecast, self.state,
                                       self.store.callbacks.pending_by_queue, cfg.queue_names(),
                                       agent_queues=lambda: [a.queues for a in self.roster.agents.values()],
                                       connected=lambda: self.ami.connected,
                                       observe=self.metrics.callback_promise.observe)
        services.promises = self.promises
        self.outcomes = Outcomes(cfg, self.store, self.prompts)
        services.outcomes = self.outcomes
        self.engine = MenuEngine(self.menus, self.prompts, self.recorder,
                                 cfg.languages[0] if cfg.languages else "en", services)
        self.router = AgiRouter()
        self.router.register("menu", self.engine.run)
        self.router.register("survey", self.engine.run_survey)
        self.router.register("fallback", self.engine.run_fallback)
        self.router.register("disposition", self.outcomes.by_phone)
        self.agi = AgiServer(self.router, cfg.agi.host, cfg.agi.port,
                             read_timeout=cfg.agi.read_timeout, max_connections=cfg.agi.max_connections)
        self.agi.step_latency = self.metrics.agi_call.observe
        a = cfg.asterisk
        self.ami = AmiClient(a.ami_host, a.ami_port, a.ami_username, a.ami_secret,
                             on_event=self._on_ami_event, on_connected=self._resync)
        self.roster = Roster(cfg, self.store, self.guard)
        self.provisioner = SipProvisioner(cfg)
        self.roster.on_accounts_changed = self._apply_accounts
        self.router.register("agent", PhoneLogin(cfg, self.roster, self.prompts,
                                                 wake=lambda: self.balance.wake()).run)
        self.dispatcher = CallbackDispatcher(cfg, self.ami, self.store.callbacks, self.prompts, self.guard,
                                             on_made=lambda kept: self.metrics.callbacks_made.labels(kept).inc())
        self.dialer = Dialer(cfg, self.store, self.ami, self.guard)
        self.dispatcher.continuity = self.dialer.continuity = self.continuity if cfg.continuity.enabled else None
        self.refunds = RefundService(cfg, self.store, self.dialer, self.continuity.key, self.guard)
        self.backends["refunds"].service = self.refunds
        self.dialer.store_metric = lambda cid, outcome: self.metrics.campaign_attempts.labels(cid, outcome).inc()
        self.router.register("notice", NoticeHandler(self.engine, self.dialer, self.store, self.refunds).run)
        self.balance = BalanceLoop(cfg, self.state, self.ami, self.roster,
                                   pending_callbacks=self.dispatcher.pending,
                                   dispatch_callback=self.dispatcher.dispatch,
                                   campaigns=self.dialer.campaign_views, set_pace=self.dialer.set_pace,
                                   guard=self.guard)
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.stopping = asyncio.Event()

    def live(self) -> dict[str, Any]:
        """Everything the dashboard shows, in one JSON-ready dict (also refreshes the live metrics)."""
        snap = self.state.snapshot()
        decision = self.balance.last_decision
        for name, q in snap["queues"].items():
            est = decision.estimates.get(name) if decision else None
            q["estimated_wait"] = None if est is None or est == float("inf") else round(est, 1)
            q["overflow_open"] = bool(self.balance.tiers.get(name) and self.balance.tiers[name].open)
        for q in snap["queues"].values():
            for c in q["callers"]:
                known = self.continuity.context.get(c["uniqueid"])
                if known:
                    c["context"] = known
        self.metrics.update_live(snap, self.ami.connected, self.ami.reconnects, self.balance.actions_by_kind)
        agents = self.roster.describe()
        for a in agents:
            agent = self.roster.agents[a["id"]]
            ifaces = agent.interfaces
            live = [m for q in snap["queues"].values() for m in q["members"] if m["interface"] in ifaces]
            a["status"] = live[0]["status"] if live else "not in a queue"
            a["in_call"] = any(m["in_call"] for m in live)
            a["paused"] = any(m["paused"] for m in live)
            a["queues_now"] = sorted(n for n, q in snap["queues"].items()
                                     if any(m["interface"] in ifaces for m in q["members"]))
            a["device"] = self.state.devices.get(agent.interface, "")
            a["on_mobile"] = bool(agent.mobile_interface) and any(
                m["interface"] == agent.mobile_interface for m in live)
            talking = next((m.bridged for q in self.state.queues.values() for i in ifaces
                            if (m := q.members.get(i)) is not None and m.bridged), "")
            if talking:   # the caller this agent is talking to, with what the IVR knew about them
                a["caller"] = {"uniqueid": talking, **self.continuity.context.get(talking, {})}
        return {"time": snap["time"], "node": self.cfg.node, "ami": self.ami.connected,
                "queues": snap["queues"], "agents": agents, "history": self.metrics.hourly()}

    def _agent_connected(self, interface: str, uid: str) -> None:
        """Remember the call an agent's phone took last (their *7<code> disposition goes on it)."""
        self.outcomes.agent_connected(interface, uid)
        task = asyncio.get_running_loop().create_task(self.outcomes.remember_connect(interface, uid))
        def report(t: asyncio.Task[None]) -> None:
            if not t.cancelled() and t.exception() is not None:
                log.warning("last call of %s not stored: %s", interface, t.exception())
        task.add_done_callback(report)

    def _call_finished(self, record: dict[str, Any]) -> None:
        self.metrics.call_finished(record)
        self.continuity.call_finished(record)

    def queue_position(self, queue: str, since: float) -> int | None:
        """Queue() position for a returning caller whose place dates from ``since`` (None: no queue known)."""
        q = self.state.queues.get(queue)
        if q is None:
            return None
        return self.continuity.queue_position(((uid, c.joined_at) for uid, c in q.callers.items()), since)

    # --------------------------------------------------------------- estimates
    def asterisk_estimate(self, queue: str) -> float | None:
        """What app_queue would announce to a caller joining ``queue`` now: its average hold time
        (None until the queue has answered ``MIN_HISTORY`` calls: a moving average of fewer means little)."""
        q = self.state.queues.get(queue)
        if q is None or not self.ami.connected or q.stats.answered < MIN_HISTORY:
            return None
        return float(q.asterisk_holdtime)

    def estimate_wait(self, queue: str, default_aht: float = 180.0) -> float | None:
        """Expected wait for a caller joining ``queue`` now (None when unknown)."""
        if not self.ami.connected:
            return None
        q = self.state.queues.get(queue)
        if q is None:
            return None
        serving = [m for m in q.members.values()
                   if not m.paused and m.status not in (ev.DEVICE_UNAVAILABLE, ev.DEVICE_INVALID)]
        free = sum(1 for m in serving if m.available)
        s = q.stats
        aht = s.total_talk / s.answered if s.answered >= 5 and s.total_talk > 0 else default_aht
        return estimate_wait(len(q.callers) + 1, len(serving), free, aht).seconds

    async def _watch_menus(self, interval: float = 2.0) -> None:
        """Reload menus when a file in the dialplans directory changes."""
        def stamp() -> tuple[tuple[str, float], ...]:
            d = Path(self.cfg.dialplans_dir)
            return tuple(sorted((p.name, p.stat().st_mtime) for p in d.glob("*.yaml"))) if d.is_dir() else ()

        last = stamp()
        while True:
            await asyncio.sleep(interval)
            try:
                now = stamp()
            except OSError:
                continue
            if now != last:
                last = now
                log.info("dialplans changed: reloading menus")
                self.menus.load()

    # ------------------------------------------------------------------ events
    def _on_ami_event(self, event: Any) -> None:
        if event.get("Event") in (ev.CHANSPY_START, ev.CHANSPY_STOP):
            log.info("coaching: %s %s %s", event.get("SpyerChannel", "?"),
                     "joins" if event["Event"] == ev.CHANSPY_START else "leaves", event.get("SpyeeChannel", "?"))
        if event.get("Event") == ev.AGENT_CONNECT and event.get("Interface") and event.get("Uniqueid"):
            self._agent_connected(str(event["Interface"]), str(event["Uniqueid"]))
        self.state.apply(event)
        self.promises.on_event(event)
        self.recorder.on_event(event)
        self.balance.on_event(event)
        self.dialer.on_event(event)

    async def _resync(self, ami: AmiClient) -> None:
        """Full state rebuild on every (re)connect, before anything acts."""
        t0 = time.perf_counter()
        started = time.time()
        asked = time.monotonic()
        queue_status = await ami.list_action(ev.QUEUE_STATUS, timeout=20)
        channels = await ami.list_action(ev.CORE_SHOW_CHANNELS, timeout=20)
        try:
            devices: list[Any] | None = await ami.list_action(ev.DEVICE_STATE_LIST, timeout=20)
        except AmiError as exc:   # res_manager_devicestate not loaded: device states come from queue members only
            log.warning("resync: DeviceStateList failed (%s)", exc)
            devices = None
        self.state.resync(queue_status, channels, devices)
        self.recorder.adopt([uid for q in self.state.queues.values() for uid in q.callers])
        self.recorder.reconcile(set(self.state.channels), before=started)
        self.dialer.reconcile(channels, since=asked)
        log.info("resync: %d queues, %d waiting callers, %d channels in %.0f ms",
                 len(self.state.queues), sum(len(q.callers) for q in self.state.queues.values()),
                 len(self.state.channels), (time.perf_counter() - t0) * 1000)

    # --------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        await self._wait_for_redis(timeout=15)
        errors = self.menus.load()
        for err in errors:
            log.error("menu error: %s", err)
        log.info("prompts: %d files under %s", len(self.prompts), self.cfg.prompts_dir)
        if self.cfg.outbound.allowed_prefixes:
            log.info("%s", self.guard.describe())
        else:
            log.warning("%s", self.guard.describe())
        await self.recorder.start()
        await self.agi.start()
        await self.ami.start()
        await self.roster.load()
        if self.provisioner.enabled:
            self._tasks.append(asyncio.create_task(self._sync_accounts(), name="sip-accounts"))
        self._tasks.append(asyncio.create_task(self.balance.run(), name="balance"))
        if cfg_has_trunk(self.cfg):
            self._tasks.append(asyncio.create_task(self.dialer.run(), name="dialer"))
            self._tasks.append(asyncio.create_task(self.dispatcher.run(), name="callback-recovery"))
        self._tasks.append(asyncio.create_task(self._watch_menus(), name="menu-watch"))
        if self.cfg.continuity.enabled:
            self._tasks.append(asyncio.create_task(self.continuity.run_sweeper(self.store.callbacks),
                                                   name="continuity-sweep"))
        from ..api.app import build_app  # imported late: the API imports the controller's types

        app = build_app(self)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.cfg.api.host, self.cfg.api.port, reuse_address=True)
        await site.start()
        log.info("controller %s (version %s) up: API http://%s:%d", self.cfg.node, __version__,
                 self.cfg.api.host, self.cfg.api.port)

    async def _apply_accounts(self) -> None:
        await self.provisioner.apply(self.roster.runtime_accounts())
        self.balance.wake()

    async def _sync_accounts(self) -> None:
        """At start: bring pjsip_volunteers.conf in line with the roster in Redis (reload only if it changed)."""
        while not self.ami.connected:
            await asyncio.sleep(0.2)
        try:
            await self.provisioner.apply(self.roster.runtime_accounts(), force=False)
        except Exception as exc:
            log.error("SIP accounts of agents added at run time could not be applied: %s", exc)

    async def _wait_for_redis(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                await self.store.ping()
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Redis at {self.cfg.redis.url} is not reachable: {exc}") from None
                await asyncio.sleep(0.3)

    async def stop(self) -> None:
        log.info("controller stopping")
        await cancel_and_wait(self._tasks)   # a cancel the Redis client swallows is repeated (ivr/app/aiotasks.py)
        if self._runner is not None:
            await self._runner.cleanup()
        await self.agi.stop()
        await self.ami.stop()
        for backend in self.backends.values():
            close = getattr(backend, "close", None)
            if close is not None:
                await close()
        await self.recorder.stop()
        await self.continuity.drain()
        await self.store.close()
        log.info("controller stopped")

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        await self.start()
        try:
            await self.stopping.wait()
        finally:
            await self.stop()

    # ----------------------------------------------------------------- health
    async def health(self) -> dict[str, Any]:
        try:
            redis_ok = await asyncio.wait_for(self.store.ping(), 1.0)
        except Exception:
            redis_ok = False
        ok = redis_ok and self.ami.connected
        return {
            "status": "ok" if ok else "degraded",
            "node": self.cfg.node,
            "version": __version__,
            "uptime": round(time.time() - self.started_at, 1),
            "redis": redis_ok,
            "ami": {"connected": self.ami.connected, "reconnects": self.ami.reconnects, "flaps": self.ami.flaps,
                    "last_error": self.ami.last_error},
            "agi": {"port": self.agi.port, "active_calls": self.agi.active_calls,
                    "calls": self.agi.calls_total, "failed": self.agi.calls_failed,
                    "commands": self.agi.commands_total},
            "menus": {"loaded": sorted(self.menus.menus), "errors": self.menus.errors},
            "tasks": len(asyncio.all_tasks()),
            "records": {"written": self.recorder.records_written, "active": self.recorder.active,
                        "pending": self.recorder.pending, "retries": self.recorder.retries,
                        "write_errors": self.recorder.write_errors},
            "balance": {"ticks": self.balance.ticks, "errors": self.balance.errors,
                        "last_tick_ms": round(self.balance.last_tick_ms, 2),
                        "actions": self.balance.actions_by_kind,
                        "tiers_open": sorted(q for q, t in self.balance.tiers.items() if t.open)},
            "dialer": self.dialer.health(),
            "callbacks": {"recovered": self.dispatcher.recovered, "recover_errors": self.dispatcher.recover_errors,
                          "last_recover_error": self.dispatcher.last_recover_error},
        }


def cfg_has_trunk(cfg: Config) -> bool:
    """Outbound calls (campaigns, callbacks) need a trunk to leave through."""
    return bool(cfg.asterisk.trunk_uri)


async def reload_menus(controller: Controller) -> list[str]:
    """Reload menus and prompts; returns the errors (the valid menus are live either way)."""
    controller.prompts.scan()
    return controller.menus.load()


__all__ = ["Controller", "reload_menus", "AmiError"]
