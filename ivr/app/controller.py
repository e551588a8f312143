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
from ..balance.waits import WaitEstimates
from ..banner.service import BannerService, live_prompts_dir
from ..callbacks.service import CallbackDispatcher
from ..cluster.leader import Leadership
from ..cluster.lost import LostNodeSweep, callback_event
from ..cluster.nodes import NodeHeartbeats
from ..cluster.waiting import WaitingRegister
from ..continuity.service import Continuity
from ..outcomes.service import Outcomes, PhoneLogin
from ..refunds.service import RefundService
from ..campaigns.dialer import Dialer
from ..campaigns.notice import NoticeHandler
from ..menu.engine import EngineServices, MenuEngine
from ..menu.schema import MenuSet
from ..menu.lookups import CircuitBreaker, GuardedBackend
from ..menu.services import HttpBackend, LookupBackend, RefundsBackend
from ..prompts.library import PromptLibrary
from .metrics import Metrics
from ..campaigns.outbound import OutboundGuard
from ..callbacks.promise import PromiseService
from ..outcomes.records import CallRecorder
from ..balance.loop import BalanceLoop
from ..asterisk.provision import SipProvisioner
from ..agents.roster import Roster
from ..cluster.agents import ClusterAgents
from ..asterisk.state import CallCenterState
from ..store.redis_store import Store
from ..agents.service import AgentService
from ..api.access import AccessService
from ..api.app import build_app
from ..api.clientip import ClientAddress
from ..api.live import LiveView
from ..api.services import Services
from ..callbacks.queries import CallbackQueries
from ..campaigns.service import CampaignService
from ..continuity.callers import CallerService
from ..outcomes.desk import OutcomesDesk
from ..refunds.desk import RefundDesk
from ..reports.reporting import ReportService
from .system import SystemService
from ..webhooks.desk import WebhookDesk
from ..webhooks.events import Events
from ..webhooks.sender import Hook, WebhookSender
from .wiring import Later
from ..campaigns.work import CampaignWork

log = logging.getLogger(__name__)


class Controller:
    """Everything one controller node runs, started and stopped in order.

    The constructor is the composition root: each part is built once, in dependency order, and given its
    collaborators in its constructor. Two kinds of reference reach forward, both explicit: the AMI client's
    event and reconnect handlers are this object's methods (``_on_ami_event``, ``_resync``), which run only
    after ``start()``, when every part exists; and the balancing loop, built on the roster, is reached by the
    roster and the phone login through ``balance_ref`` (``ivr.app.wiring.Later``), bound right after it is
    built. The HTTP layer is built from ``self.services`` only (``ivr.api.services.Services``).
    """

    # declared ahead: lambdas made before they are assigned in __init__ refer to them
    ami: AmiClient
    roster: Roster
    balance: BalanceLoop

    def __init__(self, cfg: Config, store: Store | None = None) -> None:
        self.cfg = cfg
        self.started_at = time.time()
        self.store = store or Store.from_config(cfg.redis)
        self.state = CallCenterState()
        self.metrics = Metrics()
        # one balancing leader at a time in a cluster (lease + fencing token); a single node leads for good
        self.leadership = (Leadership(cfg.node, self.store.leader, cfg.cluster.lease_ttl, cfg.cluster.renew,
                                      eligible=lambda: self.heartbeats is None or self.heartbeats.may_lead())
                           if cfg.cluster.enabled else Leadership.solo(cfg.node))
        self.metrics.bind_node(cfg.node)
        self.leadership.add_listener(self.metrics.leader_changed)
        self.metrics.leader_changed(self.leadership.is_leader)
        a = cfg.asterisk
        self.ami = AmiClient(a.ami_host, a.ami_port, a.ami_username, a.ami_secret,
                             on_event=self._on_ami_event, on_connected=self._resync)
        ami, state, metrics = self.ami, self.state, self.metrics
        self.guard = OutboundGuard(cfg, self.store, metrics)   # every call out through the trunk
        # webhooks: the features publish events (one XADD each, off the call path); the sender delivers them
        self.hooks = [Hook(w.name, w.url, frozenset(w.events), w.secret, w.max_attempts, w.timeout)
                      for w in cfg.webhooks]
        self.events = Events(self.store.webhooks if self.hooks else None, {e for w in cfg.webhooks for e in w.events},
                             on_published=lambda t: metrics.events_published.labels(t).inc(),
                             on_failed=lambda t, why: metrics.events_lost.labels(t, why).inc())
        self.webhooks = WebhookSender(self.store.webhooks, self.hooks, cfg.node,
                                      on_delivery=lambda name, r: metrics.webhook_deliveries.labels(name, r).inc(),
                                      on_backlog=lambda name, n: metrics.webhook_backlog.labels(name).set(n))
        events = self.events
        self.continuity = Continuity(cfg.continuity, self.store, guard=self.guard,
                                     channel_alive=lambda uid: not ami.connected or uid in state.channels,
                                     events=events)
        continuity = self.continuity if cfg.continuity.enabled else None
        self.recorder = CallRecorder(self.store, inbound=frozenset(number for number, _ in cfg.routes()),
                                     on_finished=self._call_finished)
        self.prompts = PromptLibrary(cfg.prompts_dir, cfg.languages[0] if cfg.languages else "en")
        self.banner = BannerService(self.store, live_prompts_dir(cfg), cfg.languages)
        self.waits = WaitEstimates(state, ami, self.continuity)
        # the balancing loop is built on the roster; the roster and the phone login wake it (bound below)
        self.balance_ref: Later[BalanceLoop] = Later("the balancing loop")
        self.provisioner = SipProvisioner(cfg)
        self.roster = Roster(cfg, self.store, self.guard, on_accounts_changed=self._apply_accounts)
        roster = self.roster
        # the callback promise: live queues (AMI), callbacks ahead (Redis), the roster's queues for the plan
        self.promises = PromiseService(cfg.balance.promise, cfg.balance.forecast, state,
                                       self.store.callbacks.pending_by_queue, cfg.queue_names(),
                                       agent_queues=lambda: [ag.queues for ag in roster.agents.values()],
                                       connected=lambda: ami.connected,
                                       observe=metrics.callback_promise.observe)
        self.outcomes = Outcomes(cfg, self.store, self.prompts, events=events)
        self.dispatcher = CallbackDispatcher(cfg, ami, self.store.callbacks, self.prompts, self.guard,
                                             on_made=lambda kept: metrics.callbacks_made.labels(kept).inc(),
                                             continuity=continuity, events=events, leadership=self.leadership)
        self.dialer = Dialer(cfg, self.store, ami, self.guard, continuity=continuity,
                             on_attempt=lambda cid, outcome: metrics.campaign_attempts.labels(cid, outcome).inc(),
                             events=events, leadership=self.leadership)
        dialer = self.dialer
        # a cluster's campaign work: every node dials the leader's claims it takes from the work stream
        self.campaign_work = (CampaignWork(self.store.campaign_work, cfg.node, dialer.dial_claimed,
                                           campaigns=lambda: list(dialer.running),
                                           ready=lambda: ami.connected and dialer.recovered)
                              if cfg.cluster.enabled else None)
        self.refunds = RefundService(cfg, self.store, self.dialer, self.continuity.key, self.guard, events=events)
        self.backends: dict[str, LookupBackend] = {"refunds": RefundsBackend(self.store, self.refunds)}
        self.backends.update(http_backends(cfg, metrics))   # lookups: in ivr.yaml
        self.menus = MenuSet(cfg.dialplans_dir, frozenset(cfg.queue_names()), cfg.languages,
                             frozenset(self.backends))
        engine_services = EngineServices(
            backends=self.backends, callbacks=self.store.callbacks, surveys=self.store.surveys,
            estimate_wait=self.waits.estimate_wait, asterisk_estimate=self.waits.asterisk_estimate,
            banner=self.banner.get, fallback_queue=cfg.fallback_queue, continuity=continuity,
            queue_position=self.waits.queue_position, repeat_priority=cfg.continuity.repeat_priority,
            outbound=self.guard, outcomes=self.outcomes, promises=self.promises, events=events)
        self.engine = MenuEngine(self.menus, self.prompts, self.recorder,
                                 cfg.languages[0] if cfg.languages else "en", engine_services)
        balance_ref = self.balance_ref
        self.router = AgiRouter()
        self.router.register("menu", self.engine.run)
        self.router.register("survey", self.engine.run_survey)
        self.router.register("fallback", self.engine.run_fallback)
        self.router.register("disposition", self.outcomes.by_phone)
        self.router.register("agent", PhoneLogin(cfg, roster, self.prompts, wake=lambda: balance_ref.get().wake()).run)
        self.router.register("notice", NoticeHandler(self.engine, self.dialer, self.store, self.refunds).run)
        self.agi = AgiServer(self.router, cfg.agi.host, cfg.agi.port, read_timeout=cfg.agi.read_timeout,
                             max_connections=cfg.agi.max_connections, step_latency=metrics.agi_call.observe)
        self.balance = balance_ref.bind(BalanceLoop(
            cfg, state, ami, roster, pending_callbacks=self.dispatcher.pending,
            dispatch_callback=self.dispatcher.dispatch, campaigns=self.dialer.campaign_views,
            set_pace=self.dialer.set_pace, guard=self.guard, leadership=self.leadership,
            shared=self.store.leader if cfg.cluster.enabled else None))
        # one logical queue across nodes: an agent on a call on another node is held paused here
        self.cluster_agents: ClusterAgents | None = None
        if cfg.cluster.enabled:
            c = cfg.cluster
            self.cluster_agents = ClusterAgents(
                cfg.node, self.store.cluster_agents, ami, state,
                agents=lambda: ((a.id, a.interfaces) for a in roster.agents.values()),
                sync=c.busy_sync, stale=c.busy_stale, max_call=c.max_call,
                on_pause=metrics.cross_node_pauses.inc, on_busy_elsewhere=metrics.agents_busy_elsewhere.set)
        self.stopping = asyncio.Event()
        cc = cfg.cluster
        self._build_place_keeping()
        self.system = SystemService(node=cfg.node, store=self.store, ami=ami, agi=self.agi, menus=self.menus,
                                    prompts=self.prompts, recorder=self.recorder, balance=self.balance,
                                    dialer=self.dialer, dispatcher=self.dispatcher, started_at=self.started_at,
                                    leadership=self.leadership, campaign_work=self.campaign_work,
                                    cluster=self._describe_cluster if cc.enabled else None)
        self.services = build_services(self)
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    def _build_place_keeping(self) -> None:
        """With a cluster: this node's heartbeat, the register of its waiting callers, and the leader's sweep
        that makes a lost node's waiting callers callbacks at their places (docs/cluster.md). Without one:
        none of it (None)."""
        cfg, metrics, events, ami = self.cfg, self.metrics, self.events, self.ami
        self.heartbeats: NodeHeartbeats | None = None
        self.waiting: WaitingRegister | None = None
        self.lost_sweep: LostNodeSweep | None = None
        if not cfg.cluster.enabled:
            return
        cc = cfg.cluster
        self.heartbeats = NodeHeartbeats(self.store.cluster, cfg.node, api=f"http://{cfg.api.host}:{cfg.api.port}",
                                         every=cc.heartbeat, ttl=cc.node_ttl, ami_connected=lambda: ami.connected,
                                         started=self.started_at)
        self.waiting = WaitingRegister(self.store.cluster, cfg.node, place_of=self.continuity.place_since.get,
                                       others=self.heartbeats.others_alive, on_measured=metrics.cross_node_answer)

        def made(m: Any, node: str) -> None:
            metrics.node_lost_callbacks.labels("callback").inc()
            events.publish("callback.requested", callback_event(m, node))

        self.lost_sweep = LostNodeSweep(self.store.cluster, self.leadership, cfg.node, ttl=cc.node_ttl,
                                        every=cc.heartbeat, on_callback=made,
                                        settle_attempts=self.dialer.settle_lost,
                                        on_anonymous=lambda uid, node: metrics.node_lost_callbacks.labels(
                                            "no_number").inc())

    def _describe_cluster(self) -> dict[str, Any]:
        out: dict[str, Any] = {"leadership": self.leadership.describe()}
        if self.heartbeats is not None:
            out["heartbeats"] = self.heartbeats.describe()
        if self.waiting is not None:
            out["waiting"] = self.waiting.describe()
        if self.lost_sweep is not None:
            out["lost_nodes"] = self.lost_sweep.describe()
        return out

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
        self.events.publish("call.finished", record)

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
        if self.cluster_agents is not None:
            self.cluster_agents.on_event(event)
        if self.waiting is not None:
            self.waiting.on_event(event)

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
        if self.waiting is not None:
            self.waiting.resync([(c.uniqueid, q.name, c.joined_at, c.callerid)
                                 for q in self.state.queues.values() for c in q.callers.values()])
        self.dialer.reconcile(channels, since=asked)
        if self.cluster_agents is not None:
            self.cluster_agents.resync()
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
        self.events.start()
        await self.webhooks.start()
        for hook in self.hooks:
            log.info("webhook %s: %s for %s", hook.name, hook.url, ", ".join(sorted(hook.events)))
        await self.recorder.start()
        await self._start_cluster()
        await self.agi.start()
        await self.ami.start()
        await self.roster.load()
        if self.provisioner.enabled:
            self._tasks.append(asyncio.create_task(self._sync_accounts(), name="sip-accounts"))
        self._tasks.append(asyncio.create_task(self.balance.run(), name="balance"))
        if self.cluster_agents is not None:
            self._tasks.append(asyncio.create_task(self.cluster_agents.run(), name="cluster-agents"))
        if cfg_has_trunk(self.cfg):
            self._tasks.append(asyncio.create_task(self.dialer.run(), name="dialer"))
            self._tasks.append(asyncio.create_task(self.dispatcher.run(), name="callback-recovery"))
            if self.campaign_work is not None:
                self._tasks.append(asyncio.create_task(self.campaign_work.run(), name="campaign-work"))
        self._tasks.append(asyncio.create_task(self._watch_menus(), name="menu-watch"))
        if self.cfg.continuity.enabled:
            self._tasks.append(asyncio.create_task(
                self.continuity.run_sweeper(self.store.callbacks, leadership=self.leadership),
                name="continuity-sweep"))
        app = build_app(self.services)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.cfg.api.host, self.cfg.api.port, reuse_address=True)
        await site.start()
        log.info("controller %s (version %s) up: API http://%s:%d", self.cfg.node, __version__,
                 self.cfg.api.host, self.cfg.api.port)

    async def _start_cluster(self) -> None:
        """The lease, the first heartbeat (before any caller is registered: a register always belongs to a
        node the sweep knows), the register's writer and the sweep."""
        if self.leadership.clustered:
            self._tasks.append(asyncio.create_task(self.leadership.run(), name="leadership"))
        if self.heartbeats is not None:
            try:
                await self.heartbeats.beat()
            except Exception as exc:
                log.warning("first heartbeat of node %s not written: %s", self.cfg.node, exc)
            self._tasks.append(asyncio.create_task(self.heartbeats.run(), name="heartbeat"))
        if self.waiting is not None:
            await self.waiting.start()
        if self.lost_sweep is not None:
            self._tasks.append(asyncio.create_task(self.lost_sweep.run(), name="lost-node-sweep"))

    async def _apply_accounts(self) -> None:
        await self.provisioner.apply(self.roster.runtime_accounts())
        self.balance_ref.get().wake()

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
        await self.webhooks.stop()           # an event in flight stays pending: delivered again at the next start
        if self._runner is not None:
            await self._runner.cleanup()
        await self.agi.stop()
        await self.ami.stop()
        for backend in self.backends.values():
            close = getattr(backend, "close", None)
            if close is not None:
                await close()
        await self.recorder.stop()
        if self.waiting is not None:
            await self.waiting.stop()
        await self.continuity.drain()
        await self.events.stop()             # what the last calls published is written before Redis closes
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

def build_services(c: Controller) -> Services:
    """The services the HTTP layer is built from, each on the parts it needs (and nothing of the controller)."""
    cfg, store = c.cfg, c.store
    callbacks = CallbackQueries(store.callbacks)
    campaigns = CampaignService(c.dialer, store, cfg.queue_names(), cfg.languages)
    return Services(
        access=AccessService(store, store, fail_limit=cfg.api.auth_fail_limit, fail_window=cfg.api.auth_fail_window),
        client_address=ClientAddress.from_config(cfg.api.trusted_proxies, cfg.api.client_ip_header),
        system=c.system,
        live=LiveView(c.state, c.balance, c.roster, c.continuity, c.ami, c.metrics, callbacks, campaigns, cfg.node,
                      cluster=c.leadership),
        agents=AgentService(c.roster, c.state, c.ami, c.balance, c.provisioner, store, cfg.asterisk),
        callers=CallerService(c.continuity, store),
        outcomes=OutcomesDesk(c.outcomes, store, store.surveys, cfg.dispositions),
        callbacks=callbacks,
        refunds=RefundDesk(c.refunds, store.refunds, store, cfg.languages),
        banner=c.banner,
        reports=ReportService(store, cfg.dispositions),
        campaigns=campaigns,
        webhooks=WebhookDesk(store.webhooks, c.hooks),
        stopping=c.stopping,
        choices=api_choices(cfg),
    )


def api_choices(cfg: Config) -> dict[str, tuple[str, ...]]:
    """The configured names API requests may use, for the OpenAPI document (enums instead of patterns)."""
    return {
        "lang": tuple(cfg.languages),
        "queue": tuple(cfg.queue_names()),
        "group": tuple(sorted(cfg.continuity.priority_groups)),
        "team": tuple(sorted({team for _, team in cfg.feedback_teams} | {"support"})),
        "disposition": tuple(x for pair in cfg.dispositions for x in pair),
        "webhook": tuple(w.name for w in cfg.webhooks),
    }


def http_backends(cfg: Config, metrics: Metrics | None = None) -> dict[str, GuardedBackend]:
    """The ``lookups:`` of ivr.yaml as look-up backends, each behind its breaker and concurrency cap."""
    out = {}
    for lk in cfg.lookups:
        inner = HttpBackend(lk.name, lk.url, timeout=lk.timeout, retries=lk.retries, mapping=lk.map,
                            headers={lk.auth_header: lk.auth} if lk.auth_header else None)
        breaker = CircuitBreaker(lk.breaker_failures, lk.breaker_window, lk.breaker_cooldown)
        out[lk.name] = GuardedBackend(lk.name, inner, breaker, lk.max_concurrent, observer=metrics)
    return out


def cfg_has_trunk(cfg: Config) -> bool:
    """Outbound calls (campaigns, callbacks) need a trunk to leave through."""
    return bool(cfg.asterisk.trunk_uri)


__all__ = ["Controller", "AmiError"]
