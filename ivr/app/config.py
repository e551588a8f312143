"""Typed configuration: defaults, then a YAML file, then environment variables.

Everything the controller, the Asterisk renderer and the stack manager need is
validated once, here, into frozen dataclasses. A bad value stops start-up with
a ``ConfigError`` whose message names the key (``queues[1].strategy: ...``).

Environment overrides use ``IVR_<SECTION>_<KEY>`` (for example
``IVR_API_PORT=18080`` or ``IVR_ASTERISK_AMI_SECRET=...``); secrets are never stored in
the main config file, they live in a 0600 secrets file or the environment.
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PROJECT_ROOT = Path(__file__).resolve().parents[2]

QUEUE_STRATEGIES = ("ringall", "leastrecent", "fewestcalls", "random", "rrmemory", "linear", "wrandom", "rrordered")
SKILLS = ("experienced", "novice")
AGENT_CODECS = ("ulaw", "alaw", "g722", "opus")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
_EXTEN_RE = re.compile(r"^[0-9]{1,20}$")
_LANG_RE = re.compile(r"^[a-z]{2,3}$")


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

    def routes(self) -> list[tuple[str, str]]:
        """Every inbound number with the menu it runs (the inbound extension runs default_menu)."""
        return [(self.asterisk.inbound_extension, self.default_menu)] + [
            (d, m) for d, m in self.dids if d != self.asterisk.inbound_extension]

    def queue_names(self) -> list[str]:
        return [q.name for q in self.queues]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- parsing

def _check_port(key: str, value: int) -> int:
    if not 1 <= value <= 65535:
        raise ConfigError(f"{key}: port must be 1-65535, got {value}")
    return value


def _check_loopback_or_ip(key: str, value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if value != "localhost":
            raise ConfigError(f"{key}: expected an IP address, got {value!r}") from None
    return value


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Coerce a YAML or environment value to the dataclass field type."""
    if value is None and typ in (str, "str"):
        return ""          # a blank YAML value means "not set", never the text "None"
    if value is None and typ in ("tuple[str, ...]",):
        return ()
    if typ in (int, "int"):
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if typ in (float, "float"):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if typ in (bool, "bool"):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if typ in (str, "str"):
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected text, got {type(value).__name__}")
        return str(value)
    if typ in ("Mapping[str, int]",):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping of name: number, got {value!r}")
        out: dict[str, int] = {}
        for k, v in value.items():
            out[str(k)] = _coerce(f"{key}.{k}", v, "int")
        return out
    if typ in ("PromiseConfig",):
        return _build(PromiseConfig, value if value is not None else {}, key)
    if typ in ("ForecastConfig | None",):
        return None if value is None else _build(ForecastConfig, value, key)
    if typ in ("tuple[float, ...]",):
        if not isinstance(value, (list, tuple)) or isinstance(value, str):
            raise ConfigError(f"{key}: expected a list of numbers, got {value!r}")
        return tuple(_coerce(f"{key}[{i}]", v, "float") for i, v in enumerate(value))
    if typ in ("tuple[str, ...]",):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(str(v) for v in value)
    return value


def _build(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{prefix + '.' if prefix else ''}{unknown[0]}: unknown key (known: {', '.join(sorted(fields))})")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(key, value, fields[name].type)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{prefix or 'config'}: {exc}") from None


_SECTIONS: dict[str, type] = {
    "asterisk": AsteriskConfig,
    "agi": AgiConfig,
    "api": ApiConfig,
    "redis": RedisConfig,
    "balance": BalanceConfig,
    "continuity": ContinuityConfig,
    "refunds": RefundsConfig,
    "outbound": OutboundConfig,
}


def from_mapping(data: Mapping[str, Any] | None, env: Mapping[str, str] | None = None) -> Config:
    """Build and validate a Config from a mapping (a parsed YAML file) and environment overrides."""
    data = copy.deepcopy(dict(data or {}))
    env = os.environ if env is None else env
    for section in _SECTIONS:  # a section with every key commented out is YAML null
        if section in data and data[section] is None:
            data[section] = {}
    # environment overrides: IVR_<SECTION>_<KEY> or IVR_<KEY> for top-level scalars
    for var, value in env.items():
        if not var.startswith("IVR_"):
            continue
        parts = var[4:].lower().split("_", 1)
        if parts[0] in _SECTIONS and len(parts) == 2:
            section = data.setdefault(parts[0], {})
            if isinstance(section, dict) and parts[1] in {f.name for f in dataclasses.fields(_SECTIONS[parts[0]])}:
                section[parts[1]] = value
        elif var[4:].lower() in ("node", "log_level", "default_menu", "fallback_queue", "fallback_timeout",
                                 "dialplans_dir", "prompts_dir"):
            data[var[4:].lower()] = value

    top_fields = {f.name: f for f in dataclasses.fields(Config)}
    unknown = sorted(set(data) - set(top_fields))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown key (known: {', '.join(sorted(top_fields))})")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        if name in _SECTIONS:
            kwargs[name] = _build(_SECTIONS[name], value or {}, name)
        elif name == "queues":
            if not isinstance(value, list) or not value:
                raise ConfigError("queues: expected a non-empty list of queues")
            kwargs[name] = tuple(_build(QueueConfig, q, f"queues[{i}]") for i, q in enumerate(value))
        elif name in ("dispositions", "feedback_teams"):
            if not isinstance(value, dict):
                raise ConfigError(f"{name}: expected a mapping")
            kwargs[name] = tuple((str(k), str(v)) for k, v in value.items())
        elif name == "dids":
            if not isinstance(value, dict):
                raise ConfigError("dids: expected a mapping of number: menu")
            kwargs[name] = tuple((str(k), str(v)) for k, v in value.items())
        elif name == "agents":
            if not isinstance(value, list):
                raise ConfigError("agents: expected a list")
            kwargs[name] = tuple(_build(AgentConfig, a, f"agents[{i}]") for i, a in enumerate(value or []))
        else:
            kwargs[name] = _coerce(name, value, top_fields[name].type)
    cfg = Config(**kwargs)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Cross-field checks; raises ConfigError naming the key."""
    a = cfg.asterisk
    for key, port in (("asterisk.sip_port", a.sip_port), ("asterisk.ami_port", a.ami_port),
                      ("asterisk.rtp_start", a.rtp_start), ("asterisk.rtp_end", a.rtp_end),
                      ("agi.port", cfg.agi.port), ("api.port", cfg.api.port)):
        _check_port(key, port)
    if a.rtp_end <= a.rtp_start:
        raise ConfigError("asterisk.rtp_end: must be above asterisk.rtp_start")
    for key, host in (("asterisk.sip_host", a.sip_host), ("asterisk.ami_host", a.ami_host),
                      ("agi.host", cfg.agi.host), ("api.host", cfg.api.host)):
        _check_loopback_or_ip(key, host)
    for key, host in (("asterisk.ami_host", a.ami_host), ("agi.host", cfg.agi.host)):
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ConfigError(f"{key}: AMI and FastAGI must stay on loopback, got {host!r}")
    if not _EXTEN_RE.fullmatch(a.inbound_extension):
        raise ConfigError(f"asterisk.inbound_extension: digits only, got {a.inbound_extension!r}")
    if not _NAME_RE.fullmatch(a.ami_username):
        raise ConfigError(f"asterisk.ami_username: letters, digits, _ and - only, got {a.ami_username!r}")
    for i, m in enumerate(a.trunk_match):
        try:
            ipaddress.ip_network(m, strict=False)
        except ValueError:
            raise ConfigError(f"asterisk.trunk_match[{i}]: expected an IP address or network, got {m!r}") from None
    if a.trunk_uri and not re.fullmatch(r"sips?:[A-Za-z0-9_.\[\]:-]+", a.trunk_uri):
        raise ConfigError(f"asterisk.trunk_uri: expected sip:host:port, got {a.trunk_uri!r}")
    if a.trunk_username and not re.fullmatch(r"[A-Za-z0-9_.+-]{1,64}", a.trunk_username):
        raise ConfigError(f"asterisk.trunk_username: letters, digits and _.+- only, got {a.trunk_username!r}")
    if a.trunk_password and not re.fullmatch(r"[A-Za-z0-9_.~+=@%^!#*-]{1,128}", a.trunk_password):
        raise ConfigError("asterisk.trunk_password: 1-128 letters, digits or _.~+=@%^!#*- (no quotes or spaces)")
    if a.trunk_username and not a.trunk_password:
        raise ConfigError("asterisk.trunk_password: needed with trunk_username (secrets.yaml trunk_password, or "
                          "IVR_ASTERISK_TRUNK_PASSWORD)")
    if a.trunk_register and not (a.trunk_uri and a.trunk_username):
        raise ConfigError("asterisk.trunk_register: needs trunk_uri and trunk_username")
    if a.ctl_group and not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", a.ctl_group):
        raise ConfigError(f"asterisk.ctl_group: a Unix group name, got {a.ctl_group!r}")
    if a.ctl_config and not os.path.isabs(a.ctl_config):
        raise ConfigError(f"asterisk.ctl_config: an absolute path to asterisk.conf, got {a.ctl_config!r}")
    if not 0 <= a.qualify_frequency <= 3600:
        raise ConfigError("asterisk.qualify_frequency: 0 (off) to 3600 seconds")
    bad = [c for c in a.codecs if c not in AGENT_CODECS]
    if bad or not a.codecs:
        raise ConfigError(f"asterisk.codecs: expected some of {', '.join(AGENT_CODECS)}, got {list(a.codecs)!r}")
    if a.outbound_callerid and not _EXTEN_RE.fullmatch(a.outbound_callerid):
        raise ConfigError(f"asterisk.outbound_callerid: digits only, got {a.outbound_callerid!r}")
    r = cfg.refunds
    bad = [x for x in r.notify if x not in ("approved", "rejected", "paid")]
    if bad:
        raise ConfigError(f"refunds.notify: expected some of approved, rejected, paid, got {bad[0]!r}")
    if not re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]", r.notice_window):
        raise ConfigError(f"refunds.notice_window: expected HH:MM-HH:MM, got {r.notice_window!r}")
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", r.notice_campaign):
        raise ConfigError(f"refunds.notice_campaign: lower-case letters, digits and -, got {r.notice_campaign!r}")
    if r.notice_queue and r.notice_queue not in cfg.queue_names():
        raise ConfigError(f"refunds.notice_queue: {r.notice_queue!r} is not a configured queue")
    if not 0.1 <= r.notice_cps <= 50 or not 1 <= r.notice_max_attempts <= 10 or r.auto_approve_max < 0:
        raise ConfigError("refunds: notice_cps 0.1-50, notice_max_attempts 1-10, auto_approve_max >= 0")
    _validate_outbound(cfg.outbound)
    c = cfg.continuity
    for key, value, hi in (("window", c.window, 86400), ("min_wait", c.min_wait, 3600),
                           ("notice_hours", c.notice_hours, 24 * 30), ("repeat_hours", c.repeat_hours, 24 * 30),
                           ("repeat_priority", c.repeat_priority, 100), ("history", c.history, 1000),
                           ("history_days", c.history_days, 3650), ("flag_hours", c.flag_hours, 24 * 365)):
        if not 0 <= value <= hi:
            raise ConfigError(f"continuity.{key}: expected 0 to {hi}, got {value}")
    for group, prio in c.priority_groups.items():
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", group):
            raise ConfigError(f"continuity.priority_groups: group names are lower-case letters, digits, _ and -, "
                              f"got {group!r}")
        if not 1 <= prio <= 100:
            raise ConfigError(f"continuity.priority_groups.{group}: expected 1 to 100, got {prio}")
    if c.region:
        import phonenumbers

        if c.region.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ConfigError(f"continuity.region: unknown region {c.region!r} (two letters, e.g. GB)")
    if not cfg.redis.url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"redis.url: expected redis://host:port/db, got {cfg.redis.url!r}")
    if cfg.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"log_level: expected DEBUG, INFO, WARNING or ERROR, got {cfg.log_level!r}")
    for i, lang in enumerate(cfg.languages):
        if not _LANG_RE.fullmatch(lang):
            raise ConfigError(f"languages[{i}]: expected a language code like 'en', got {lang!r}")
    b = cfg.balance
    if cfg.api.auth_fail_limit < 1 or cfg.api.auth_fail_window < 1:
        raise ConfigError("api.auth_fail_limit: api.auth_fail_limit and api.auth_fail_window must be at least 1")
    for i, proxy in enumerate(cfg.api.trusted_proxies):
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(f"api.trusted_proxies[{i}]: expected an IP address or network, got {proxy!r}") from None
    if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", cfg.api.client_ip_header):
        raise ConfigError(f"api.client_ip_header: expected a header name like X-Forwarded-For, "
                          f"got {cfg.api.client_ip_header!r}")
    if b.interval <= 0:
        raise ConfigError("balance.interval: must be above 0")
    if not 0 < b.close_wait_s <= b.open_wait_s:
        raise ConfigError("balance.close_wait_s: must be above 0 and at most balance.open_wait_s")
    if not 0 <= b.open_sl <= b.close_sl <= 1:
        raise ConfigError("balance.open_sl: need 0 <= open_sl <= close_sl <= 1")
    if b.min_open_s < 0 or b.max_callbacks_in_flight < 0 or b.sl_min_calls < 0:
        raise ConfigError("balance.min_open_s: must not be negative")
    _validate_promise(b.promise, b.forecast)
    names: set[str] = set()
    for i, q in enumerate(cfg.queues):
        if not _NAME_RE.fullmatch(q.name):
            raise ConfigError(f"queues[{i}].name: letters, digits, _ and - only, got {q.name!r}")
        if q.name.lower() == "general":
            raise ConfigError(f"queues[{i}].name: 'general' is reserved by Asterisk's queues.conf; pick another name")
        if q.name in names:
            raise ConfigError(f"queues[{i}].name: duplicate queue {q.name!r}")
        names.add(q.name)
        if q.strategy not in QUEUE_STRATEGIES:
            raise ConfigError(f"queues[{i}].strategy: expected one of {', '.join(QUEUE_STRATEGIES)}, got {q.strategy!r}")
        if q.timeout < 1:
            raise ConfigError(f"queues[{i}].timeout: must be at least 1 second")
    if not 5 <= cfg.fallback_timeout <= 86400:
        raise ConfigError(f"fallback_timeout: expected 5 to 86400 seconds, got {cfg.fallback_timeout}")
    if cfg.fallback_queue not in names:
        raise ConfigError(f"fallback_queue: {cfg.fallback_queue!r} is not one of the queues ({', '.join(sorted(names))})")
    for code, label in cfg.dispositions:
        if not re.fullmatch(r"[0-9]{1,3}", code):
            raise ConfigError(f"dispositions.{code}: codes are 1-3 digits (agents key them in as *7<code>)")
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", label):
            raise ConfigError(f"dispositions.{code}: names are lower-case letters, digits and _, got {label!r}")
    if len({label for _, label in cfg.dispositions}) != len(cfg.dispositions):
        raise ConfigError("dispositions: each name once")
    for reason, team in cfg.feedback_teams:
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", reason) or not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", team):
            raise ConfigError(f"feedback_teams.{reason}: reason and team are lower-case names, got {team!r}")
    for did, menu in cfg.dids:
        if not _EXTEN_RE.fullmatch(did):
            raise ConfigError(f"dids.{did}: the number must be digits only")
        if not _NAME_RE.fullmatch(menu):
            raise ConfigError(f"dids.{did}: bad menu name {menu!r}")
    if not _NAME_RE.fullmatch(cfg.default_menu):
        raise ConfigError(f"default_menu: bad menu name {cfg.default_menu!r}")
    ids: set[str] = set()
    for i, ag in enumerate(cfg.agents):
        if not _EXTEN_RE.fullmatch(ag.id):
            raise ConfigError(f"agents[{i}].id: digits only, got {ag.id!r}")
        if ag.id in ids:
            raise ConfigError(f"agents[{i}].id: duplicate agent {ag.id!r}")
        ids.add(ag.id)
        if ag.tier not in ("core", "volunteer"):
            raise ConfigError(f"agents[{i}].tier: expected core or volunteer, got {ag.tier!r}")
        if ag.skill not in SKILLS:
            raise ConfigError(f"agents[{i}].skill: expected one of {', '.join(SKILLS)}, got {ag.skill!r}")
        for qname in ag.queues:
            if qname not in names:
                raise ConfigError(f"agents[{i}].queues: unknown queue {qname!r}")
        if ag.password and (len(ag.password) > 64 or not re.fullmatch(r"[A-Za-z0-9_.~+=@%^-]+", ag.password)):
            raise ConfigError(f"agents[{i}].password: 1-64 letters, digits or _.~+=@%^- only")
        if ag.mobile and not _EXTEN_RE.fullmatch(ag.mobile):
            raise ConfigError(f"agents[{i}].mobile: digits only (the number as the trunk dials it), got {ag.mobile!r}")
        if ag.contact and not re.fullmatch(r"sips?:[A-Za-z0-9_.-]+@[A-Za-z0-9_.:\[\]-]+", ag.contact):
            raise ConfigError(f"agents[{i}].contact: expected sip:user@host:port, got {ag.contact!r}")


def _validate_promise(p: PromiseConfig, f: ForecastConfig | None) -> None:
    """balance.promise and balance.forecast (the callback promise's settings and outlook)."""
    for name in ("occupancy", "margin", "round_s", "min_s", "max_s", "window_s", "default_aht", "offer_over_s",
                 "offer_ratio"):
        if not math.isfinite(getattr(p, name)):
            raise ConfigError(f"balance.promise.{name}: must be a finite number")
    if not 0 < p.occupancy <= 1:
        raise ConfigError(f"balance.promise.occupancy: expected above 0 and at most 1, got {p.occupancy}")
    if p.margin < 1:
        raise ConfigError(f"balance.promise.margin: expected at least 1 (a promise is never under the forecast), "
                          f"got {p.margin}")
    if p.round_s <= 0 or p.window_s <= 0 or p.default_aht <= 0:
        raise ConfigError("balance.promise.round_s: round_s, window_s and default_aht must be above 0")
    if not 0 <= p.min_s <= p.max_s:
        raise ConfigError(f"balance.promise.min_s: need 0 <= min_s <= max_s, got {p.min_s} and {p.max_s}")
    if p.offer_over_s < 0 or not 0 <= p.offer_ratio <= 1:
        raise ConfigError("balance.promise.offer_ratio: offer_over_s >= 0 and offer_ratio from 0 to 1")
    if f is None:
        return
    for name in ("agents_by_hour", "arrivals_by_hour"):
        values = getattr(f, name)
        if len(values) != 24:
            raise ConfigError(f"balance.forecast.{name}: expected 24 numbers (hours 0-23), got {len(values)}")
        for h, v in enumerate(values):
            if not math.isfinite(v) or v < 0:
                raise ConfigError(f"balance.forecast.{name}[{h}]: expected a number >= 0, got {v}")
    if not 0 <= f.share_to_agents <= 1:
        raise ConfigError(f"balance.forecast.share_to_agents: expected 0 to 1, got {f.share_to_agents}")
    try:
        ZoneInfo(f.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"balance.forecast.timezone: unknown time zone {f.timezone!r}") from None


_E164_PREFIX_RE = re.compile(r"\+[1-9][0-9]{0,14}")


def _validate_outbound(o: OutboundConfig) -> None:
    for i, prefix in enumerate(o.allowed_prefixes):
        if not _E164_PREFIX_RE.fullmatch(prefix):
            raise ConfigError(f"outbound.allowed_prefixes[{i}]: expected an E.164 prefix like +44 or +1202, "
                              f"got {prefix!r}")
    for i, kind in enumerate(o.allowed_types):
        if kind not in OUTBOUND_TYPES:
            raise ConfigError(f"outbound.allowed_types[{i}]: expected one of {', '.join(OUTBOUND_TYPES)}, "
                              f"got {kind!r}")
    if not 1 <= o.per_number_hourly <= 100:
        raise ConfigError(f"outbound.per_number_hourly: expected 1 to 100, got {o.per_number_hourly}")
    if not 1 <= o.global_hourly <= 1_000_000:
        raise ConfigError(f"outbound.global_hourly: expected 1 to 1000000, got {o.global_hourly}")
    if o.default_region:
        import phonenumbers

        if o.default_region.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ConfigError(f"outbound.default_region: unknown region {o.default_region!r} (two letters, e.g. GB)")


def load(path: str | os.PathLike[str] | None, env: Mapping[str, str] | None = None,
         secrets_path: str | os.PathLike[str] | None = None) -> Config:
    """Load the YAML config at ``path`` (and the secrets file beside it), apply env overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"config file {p}: cannot read it ({exc.strerror})") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p}: not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {p}: expected a mapping at the top level")
        data = loaded or {}
        _no_redis_password_in(data, p)
        if secrets_path is None:
            candidate = p.parent / "secrets.yaml"
            secrets_path = candidate if candidate.exists() else None
    if secrets_path is not None:
        secrets = load_secrets(secrets_path)
        for key in ("ami_secret", "trunk_password"):
            if key in secrets:
                if data.get("asterisk") is None:
                    data["asterisk"] = {}
                if isinstance(data["asterisk"], dict):
                    data["asterisk"].setdefault(key, secrets[key])
        if secrets.get("redis_password"):
            if data.get("redis") is None:
                data["redis"] = {}
            if isinstance(data["redis"], dict):
                data["redis"].setdefault("password", secrets["redis_password"])
    return from_mapping(data, env)


def _no_redis_password_in(data: Mapping[str, Any], path: Path) -> None:
    """The Redis password belongs in secrets.yaml or the environment: refuse it in the config file."""
    redis = data.get("redis")
    if not isinstance(redis, Mapping):
        return
    if redis.get("password"):
        raise ConfigError(f"redis.password: not in {path.name}; put it in secrets.yaml (redis_password) "
                          "or IVR_REDIS_PASSWORD")
    if re.match(r"^[a-z]+://[^/@]*:[^/@]+@", str(redis.get("url") or "")):
        raise ConfigError(f"redis.url: no password in {path.name}; put it in secrets.yaml (redis_password) "
                          "or IVR_REDIS_PASSWORD")


def load_secrets(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read the 0600 secrets file (YAML mapping of strings)."""
    p = Path(path)
    try:
        loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"secrets file {p}: cannot read it ({exc})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"secrets file {p}: expected a mapping")
    return {str(k): str(v) for k, v in loaded.items()}


def write_secrets(path: str | os.PathLike[str], secrets: Mapping[str, str]) -> None:
    """Write the secrets file with 0600 permissions from the start (never world-readable)."""
    p = Path(path)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its old mode on open: tighten it before writing
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        yaml.safe_dump(dict(secrets), fh)
    os.chmod(p, 0o600)
