"""Typed configuration: the frozen dataclasses every part of the controller reads.

Reading and checking them is ivr/app/config_load.py: defaults, then a YAML file, then environment
variables, validated once into these dataclasses. A bad value stops start-up with
a ``ConfigError`` whose message names the key (``queues[1].strategy: ...``).

Environment overrides use ``IVR_<SECTION>_<KEY>`` (for example
``IVR_API_PORT=18080`` or ``IVR_ASTERISK_AMI_SECRET=...``); secrets are never stored in
the main config file, they live in a 0600 secrets file or the environment.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping


PROJECT_ROOT = Path(__file__).resolve().parents[2]

QUEUE_STRATEGIES = ("ringall", "leastrecent", "fewestcalls", "random", "rrmemory", "linear", "wrandom", "rrordered")
SKILLS = ("experienced", "novice")
AGENT_CODECS = ("ulaw", "alaw", "g722", "opus")


class ConfigError(ValueError):
    """A configuration value is missing or wrong; the message names the key."""


@dataclass(frozen=True, slots=True)
class AsteriskConfig:
    binary: str = "asterisk"
    sip_host: str = "127.0.0.1"
    sip_port: int = 15060
    ami_host: str = "127.0.0.1"
    ami_port: int = 15038
    ami_username: str = "ivr"
    ami_secret: str = ""
    rtp_start: int = 20000
    rtp_end: int = 20999
    inbound_extension: str = "500"
    trunk_match: tuple[str, ...] = ("127.0.0.1",)
    trunk_uri: str = ""            # where outbound calls go, e.g. sip:gateway.example:5060 (empty: none)
    outbound_callerid: str = ""    # caller ID shown on callbacks and notices
    trunk_username: str = ""       # empty: the carrier trusts our IP; else digest auth for calls (and registration)
    trunk_password: str = ""       # from secrets.yaml (trunk_password) or IVR_ASTERISK_TRUNK_PASSWORD, never the file
    trunk_register: bool = False   # register to trunk_uri so the carrier sends the DIDs' calls here
    sounds_dir: str = "/usr/share/asterisk"
    modules_dir: str = "/usr/lib/asterisk/modules"
    max_calls: int = 2000
    conf_dir: str = ""             # Asterisk's config directory (pjsip_volunteers.conf is written there)
    ctl_config: str = ""           # asterisk.conf whose control socket reloads res_pjsip (default: conf_dir's)
    ctl_group: str = ""            # group that may use the control socket (astctlgroup, mode 0660); empty: 0600
    qualify_frequency: int = 30    # seconds between OPTIONS pings to registered agent phones (0: off)
    codecs: tuple[str, ...] = ("ulaw", "alaw")   # agent phones; g722 and opus where the modules exist


@dataclass(frozen=True, slots=True)
class AgiConfig:
    host: str = "127.0.0.1"
    port: int = 15073
    read_timeout: float = 30.0
    max_connections: int = 2000


@dataclass(frozen=True, slots=True)
class ApiConfig:
    host: str = "127.0.0.1"
    port: int = 15080
    auth_fail_limit: int = 20       # unknown tokens from one address within the window before it is refused (429)
    auth_fail_window: int = 300     # seconds; the count starts at the first failure
    trusted_proxies: tuple[str, ...] = ()        # addresses/networks of reverse proxies in front of the API
    client_ip_header: str = "X-Forwarded-For"    # where a trusted proxy puts the client's address


@dataclass(frozen=True, slots=True)
class RedisConfig:
    url: str = "redis://127.0.0.1:16379/0"
    prefix: str = "ivr"
    password: str = ""   # from secrets.yaml (redis_password) or IVR_REDIS_PASSWORD, never the config file
    # Sentinels ("host:port", at least 3 in production): when set, the controller asks them for the primary
    # of ``master_name`` and follows a failover (``url`` then only gives the database number)
    sentinels: tuple[str, ...] = ()
    master_name: str = "ivr"


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """Several nodes (each Asterisk + controller) behind Kamailio, sharing one Redis (docs/cluster.md).

    Off (the default): one node, which does everything itself. On: one node at a time leads (balancing loop,
    campaign pacer, dead-node sweep), chosen by a lease in Redis with a fencing token.
    """

    enabled: bool = False
    lease_ttl: float = 3.0       # seconds a leader's lease lasts unless renewed; a dead leader is replaced
    renew: float = 1.0           # ... within lease_ttl + renew; the lease is renewed this often
    heartbeat: float = 1.0       # seconds between a node's heartbeats in Redis ...
    node_ttl: float = 5.0        # ... and a node without one for this long is dead (its waiters become callbacks)
    sip_proxy: str = ""          # Kamailio's host:port: agent phones register there and are reached through it
    busy_sync: float = 2.0       # seconds between reconciles of the agents' shared busy state (ivr/cluster/agents.py)
    busy_stale: float = 15.0     # a node's busy entry it has not confirmed for this long is removed (node down)
    max_call: float = 14400.0    # ... and one of a call longer than this (a stuck record): its agent is free again


@dataclass(frozen=True, slots=True)
class QueueConfig:
    name: str
    strategy: str = "rrmemory"
    timeout: int = 15
    retry: int = 1
    wrapuptime: int = 0
    servicelevel: int = 20
    musicclass: str = "default"
    weight: int = 0


@dataclass(frozen=True, slots=True)
class AgentConfig:
    id: str
    name: str = ""
    skill: str = "experienced"
    team: str = ""
    languages: tuple[str, ...] = ("en",)
    queues: tuple[str, ...] = ()
    penalty: int = 0
    contact: str = ""
    logged_in: bool = False
    password: str = ""
    tier: str = "core"          # core | volunteer (volunteers serve only while overflow is open)
    mobile: str = ""            # digits; reached through the trunk while the SIP device is unreachable

    @property
    def interface(self) -> str:
        return f"PJSIP/{self.id}"

    @property
    def mobile_interface(self) -> str:
        """The queue member interface for the mobile fallback (see [agent-mobile] in extensions.conf)."""
        return f"Local/{self.mobile}@agent-mobile/n" if self.mobile else ""

    @property
    def interfaces(self) -> frozenset[str]:
        """Every queue member interface that stands for this agent (the phone, and the mobile if any)."""
        return frozenset(i for i in (self.interface, self.mobile_interface) if i)


@dataclass(frozen=True, slots=True)
class PromiseConfig:
    """How the callback promise is computed (see ivr/balance/forecast.py and docs/menus.md#callback-promise)."""

    occupancy: float = 0.85          # agents' time above this share is slack, not spare capacity
    margin: float = 1.2              # the promise is the forecast x margin ...
    round_s: float = 300.0           # ... rounded up to this many seconds
    min_s: float = 900.0             # never promised under this (a dial and a free agent take time)
    max_s: float = 14400.0           # nor over this: beyond it no promise is made and no callback offered
    window_s: float = 900.0          # the inbound arrival rate is measured over this sliding window
    default_aht: float = 180.0       # handle time until a queue has 5 answered calls
    offer_over_s: float = 60.0       # callback_over: auto offers above this estimated wait ...
    offer_ratio: float = 0.1         # ... and above this share of the promise


@dataclass(frozen=True, slots=True)
class ForecastConfig:
    """A workforce plan for the whole line, hour by hour (0-23 in ``timezone``): the promise's outlook."""

    agents_by_hour: tuple[float, ...] = ()      # agents serving (logged in, not paused), 24 values
    arrivals_by_hour: tuple[float, ...] = ()    # inbound calls per hour, 24 values
    share_to_agents: float = 1.0                # share of the arrivals that needs an agent (the rest self-serves)
    timezone: str = "UTC"


@dataclass(frozen=True, slots=True)
class BalanceConfig:
    """The balancing loop: how often it runs, and the policy's thresholds (see ivr/balance/policy.py)."""

    interval: float = 1.0
    open_wait_s: float = 45.0
    open_sl: float = 0.70
    close_wait_s: float = 15.0
    close_sl: float = 0.85
    min_open_s: float = 120.0
    sl_min_calls: int = 10
    simple_queues: tuple[str, ...] = ("refunds",)
    volunteer_penalty: int = 2
    max_callbacks_in_flight: int = 5
    promise: PromiseConfig = field(default_factory=PromiseConfig)
    forecast: ForecastConfig | None = None      # without a plan: the live picture, held (persistence)


@dataclass(frozen=True, slots=True)
class ContinuityConfig:
    """Caller continuity (see ivr/continuity/service.py and docs/continuity.md)."""

    enabled: bool = True
    window: int = 600               # seconds a caller who dropped out of a queue keeps their place
    min_wait: int = 0               # seconds waited before a drop earns a place
    callback_dropped: bool = False  # call them back ourselves when the window passes without their call
    notice_hours: float = 48.0      # callers notified by a campaign within this many hours get the short path
    repeat_hours: float = 24.0      # a call within this many hours of the previous one is a repeat call
    repeat_priority: int = 0        # queue priority for repeat callers (0: none)
    # flagged callers: group -> queue priority (e.g. {medical: 8}); a supervisor flags a number into a group
    priority_groups: Mapping[str, int] = dataclasses.field(default_factory=dict)
    flag_hours: float = 72.0        # how long a flag lasts unless the supervisor says otherwise
    history: int = 20               # calls kept per caller
    history_days: int = 30          # how long a caller's history is kept after their last call
    region: str = ""                # caller IDs are national numbers of this region (e.g. GB); empty: E.164 digits


@dataclass(frozen=True, slots=True)
class RefundsConfig:
    """The refund request lifecycle (see ivr/refunds/service.py and docs/refunds.md)."""

    notify: tuple[str, ...] = ("approved", "rejected", "paid")   # decisions the customer is called about
    auto_approve_groups: tuple[str, ...] = ()   # requests of these groups (e.g. medical) are approved by policy
    auto_approve_max: float = 0.0               # ... up to this amount (0: any amount)
    notice_campaign: str = "refund-updates"     # the campaign that paces the decision calls
    notice_window: str = "09:00-20:00"          # the customer's local time
    notice_cps: float = 1.0
    notice_max_attempts: int = 3
    notice_amd: bool = True
    notice_queue: str = ""                      # "3: an agent" from the decision call (empty: refunds if
                                                # configured, else fallback_queue)
    allowed_prefixes: tuple[str, ...] = ()      # narrows outbound.allowed_prefixes for decision calls (empty:
                                                # outbound.allowed_prefixes alone)


@dataclass(frozen=True, slots=True)
class LookupConfig:
    """One ``lookups:`` entry: a JSON HTTP backend a ``lookup`` menu node names (see docs/integrations.md)."""

    name: str
    url: str                        # http(s)://host/path/{booking}: {names} are filled from the call, URL-quoted
    auth_header: str = ""           # e.g. Authorization; its value is a secret (never ivr.yaml): secrets.yaml
    auth: str = ""                  # lookup_<name>_auth, or IVR_LOOKUP_<NAME>_AUTH (- as _)
    timeout: float = 2.0            # seconds per attempt (ivr.menu.services.HTTP_TIMEOUT)
    retries: int = 1                # attempts after the first on a time-out, a refused connection or a 5xx
    max_concurrent: int = 20        # look-ups in flight to this backend; over it: the error branch at once
    breaker_failures: int = 5       # failures within breaker_window seconds that open the circuit ...
    breaker_window: float = 30.0
    breaker_cooldown: float = 30.0  # ... for this long (the node's error branch at once), then one trial call
    map: Mapping[str, str] = dataclasses.field(default_factory=dict)   # field spoken -> path in the JSON answer


OUTBOUND_TYPES = ("fixed_line", "mobile", "fixed_line_or_mobile", "toll_free", "premium_rate", "shared_cost", "voip",
                  "personal_number", "pager", "uan", "voicemail", "satellite", "international_network")


@dataclass(frozen=True, slots=True)
class OutboundConfig:
    """The outbound guard every call through the trunk passes (see ivr/campaigns/outbound.py and docs/security.md)."""

    allowed_prefixes: tuple[str, ...] = ()      # E.164 prefixes calls may go to, e.g. +44, +1202 (empty: none)
    allowed_types: tuple[str, ...] = ("fixed_line", "mobile", "fixed_line_or_mobile")   # phonenumbers types
    per_number_hourly: int = 3                   # calls to one number per clock hour, all nodes together
    global_hourly: int = 2000                    # calls through the trunk per clock hour, all nodes together
    default_region: str = ""                     # numbers without + are national numbers of this region (e.g.
                                                 # GB); empty: continuity.region, else international digits


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """One webhook: events POSTed, signed, to the business's system (see ivr/webhooks and docs/integrations.md)."""

    name: str                                  # lower-case letters, digits, _ and -; its secret: webhook_<name>
    url: str                                   # http:// or https://
    events: tuple[str, ...] = ()               # event types (ivr.webhooks.core.EVENT_TYPES)
    max_attempts: int = 10                     # tries before an event goes to the dead-letter list
    timeout: float = 10.0                      # seconds per try
    secret: str = field(default="", repr=False)   # from secrets.yaml (webhook_<name>), never ivr.yaml


@dataclass(frozen=True, slots=True)
class Config:
    node: str = "ivr1"
    workdir: str = ""
    dialplans_dir: str = str(PROJECT_ROOT / "dialplans")
    prompts_dir: str = str(PROJECT_ROOT / "audio_prompts" / "build")
    default_menu: str = "main"
    fallback_queue: str = "support"
    # seconds a caller waits in the fallback queue (controller unreachable) before a callback offer / apology
    fallback_timeout: int = 600
    languages: tuple[str, ...] = ("en", "fa", "zh")
    log_level: str = "INFO"
    asterisk: AsteriskConfig = field(default_factory=AsteriskConfig)
    agi: AgiConfig = field(default_factory=AgiConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    balance: BalanceConfig = field(default_factory=BalanceConfig)
    continuity: ContinuityConfig = field(default_factory=ContinuityConfig)
    refunds: RefundsConfig = field(default_factory=RefundsConfig)
    outbound: OutboundConfig = field(default_factory=OutboundConfig)
    queues: tuple[QueueConfig, ...] = (
        QueueConfig("support"),
        QueueConfig("refunds"),
        QueueConfig("rebooking"),
    )
    agents: tuple[AgentConfig, ...] = ()
    lookups: tuple[LookupConfig, ...] = ()   # HTTP look-up backends by name (lookups: in ivr.yaml)
    dids: tuple[tuple[str, str], ...] = ()   # extra inbound numbers -> menu name
    # wrap-up codes agents set when a call ends (API, or *7<code> from their phone): code -> name
    dispositions: tuple[tuple[str, str], ...] = (
        ("1", "resolved"), ("2", "refund_requested"), ("3", "rebooked"), ("4", "follow_up"),
        ("5", "complaint"), ("9", "other"))
    # call reason (the menu path's ``reason``) -> the team whose queue gets its feedback and poor surveys
    feedback_teams: tuple[tuple[str, str], ...] = (
        ("refund_status", "refunds"), ("refund_request", "refunds"), ("notice", "refunds"),
        ("rebooking", "operations"), ("callback", "support"), ("other", "support"))
    feedback_dir: str = ""                   # where recorded feedback is kept (default: <workdir>/feedback)
    webhooks: tuple[WebhookConfig, ...] = ()  # events out to the business's systems (docs/integrations.md)

    def routes(self) -> list[tuple[str, str]]:
        """Every inbound number with the menu it runs (the inbound extension runs default_menu)."""
        return [(self.asterisk.inbound_extension, self.default_menu)] + [
            (d, m) for d, m in self.dids if d != self.asterisk.inbound_extension]

    def queue_names(self) -> list[str]:
        return [q.name for q in self.queues]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
