"""Checking a configuration once it is read: the cross-field rules of every section, each refusal a
``ConfigError`` that names the key (``queues[1].strategy: ...``). Reading is ivr/app/config_load.py."""

from __future__ import annotations

import ipaddress
import math
import os
import re
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..menu.mapping import FIELD_RE, PATH_RE
from ..webhooks.core import EVENT_TYPES
from .config import (AGENT_CODECS, OUTBOUND_TYPES, QUEUE_STRATEGIES, SKILLS, Config, ConfigError, ForecastConfig,
                     LookupConfig, OutboundConfig, PromiseConfig)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")
EXTEN_RE = re.compile(r"^[0-9]{1,20}$")
LANG_RE = re.compile(r"^[a-z]{2,3}$")


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


def lookup_env(name: str) -> str:
    """The environment variable holding the auth header value of look-up backend ``name``."""
    return f"IVR_LOOKUP_{name.upper().replace('-', '_')}_AUTH"


BUILTIN_BACKENDS = ("refunds",)      # registered by the controller itself (ivr/menu/services.py)



LOOKUP_BUDGET = 5.0                  # ivr/menu/node_lookup.py LOOKUP_TIMEOUT: the node gives up after this long
_HEADER_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_URL_RE = re.compile(r"^https?://[A-Za-z0-9.\[\]:_-]+(/[^\s]*)?$")


def _validate_lookup(lk: LookupConfig) -> None:
    import string

    key = f"lookups.{lk.name}"
    if lk.name in BUILTIN_BACKENDS:
        raise ConfigError(f"{key}: {lk.name!r} is a built-in backend; pick another name")
    if "@" in lk.url.split("/", 3)[2 if "//" in lk.url else 0]:
        raise ConfigError(f"{key}.url: no credentials in the URL; use auth_header with secrets.yaml "
                          f"lookup_{lk.name}_auth or {lookup_env(lk.name)}")
    if not _URL_RE.fullmatch(lk.url):
        raise ConfigError(f"{key}.url: expected http(s)://host[:port]/path with {{name}} placeholders in the path "
                          f"or query, got {lk.url!r}")
    try:
        parts = list(string.Formatter().parse(lk.url))
    except ValueError as exc:
        raise ConfigError(f"{key}.url: {exc} (placeholders are {{name}}; a literal brace is doubled)") from None
    for _, name, spec, conv in parts:
        if name is not None and (spec or conv or not FIELD_RE.fullmatch(name)):
            raise ConfigError(f"{key}.url: placeholders are plain names like {{booking}}, got {{{name}}}")
    if lk.auth_header and not _HEADER_RE.fullmatch(lk.auth_header):
        raise ConfigError(f"{key}.auth_header: a header name like Authorization, got {lk.auth_header!r}")
    if lk.auth_header and not lk.auth:
        raise ConfigError(f"{key}.auth_header: its value is missing: put it in secrets.yaml (lookup_{lk.name}_auth) "
                          f"or {lookup_env(lk.name)}")
    if lk.auth and not lk.auth_header:
        raise ConfigError(f"{key}.auth_header: a secret is set for {lk.name} but no header to send it in")
    if any(c in lk.auth for c in "\r\n\0"):
        raise ConfigError(f"{key}.auth_header: the secret value has a line break")
    if not 0.1 <= lk.timeout <= LOOKUP_BUDGET:
        raise ConfigError(f"{key}.timeout: expected 0.1 to {LOOKUP_BUDGET:g} seconds, got {lk.timeout}")
    if not 0 <= lk.retries <= 3:
        raise ConfigError(f"{key}.retries: expected 0 to 3, got {lk.retries}")
    if lk.timeout * (lk.retries + 1) > LOOKUP_BUDGET:
        raise ConfigError(f"{key}.retries: timeout x (retries + 1) = {lk.timeout * (lk.retries + 1):g}s is over the "
                          f"{LOOKUP_BUDGET:g}s a caller waits for a look-up; lower timeout or retries")
    if not 1 <= lk.max_concurrent <= 1000:
        raise ConfigError(f"{key}.max_concurrent: expected 1 to 1000, got {lk.max_concurrent}")
    if not 1 <= lk.breaker_failures <= 1000:
        raise ConfigError(f"{key}.breaker_failures: expected 1 to 1000, got {lk.breaker_failures}")
    for field_name, v in (("breaker_window", lk.breaker_window), ("breaker_cooldown", lk.breaker_cooldown)):
        if not 1 <= v <= 3600:
            raise ConfigError(f"{key}.{field_name}: expected 1 to 3600 seconds, got {v}")
    for spoken, path in lk.map.items():
        if not FIELD_RE.fullmatch(spoken):
            raise ConfigError(f"{key}.map.{spoken}: field names are letters, digits and _ (as in say: {{name}})")
        if not PATH_RE.fullmatch(path):
            raise ConfigError(f"{key}.map.{spoken}: expected a path like booking.status or items.0.ref, got {path!r}")


WEBHOOK_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


def _validate_webhooks(cfg: Config) -> None:
    seen: set[str] = set()
    for i, w in enumerate(cfg.webhooks):
        key = f"webhooks[{i}]"
        if not WEBHOOK_NAME_RE.fullmatch(w.name):
            raise ConfigError(f"{key}.name: lower-case letters, digits, _ and - (up to 40), got {w.name!r}")
        if w.name in seen:
            raise ConfigError(f"{key}.name: duplicate webhook {w.name!r}")
        seen.add(w.name)
        try:
            parts = urlsplit(w.url)
            _ = parts.port    # raises ValueError for a bad port
        except ValueError:
            raise ConfigError(f"{key}.url: not a URL: {w.url!r}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{key}.url: expected http:// or https:// with a host, got {w.url!r}")
        if parts.username or parts.password:
            raise ConfigError(f"{key}.url: no user or password in the URL (the request is signed with "
                              f"webhook_{w.name} instead)")
        if any(c.isspace() for c in w.url):
            raise ConfigError(f"{key}.url: no spaces, got {w.url!r}")
        if not w.events:
            raise ConfigError(f"{key}.events: expected some of {', '.join(EVENT_TYPES)}")
        for j, e in enumerate(w.events):
            if e not in EVENT_TYPES:
                raise ConfigError(f"{key}.events[{j}]: expected one of {', '.join(EVENT_TYPES)}, got {e!r}")
        if not 1 <= w.max_attempts <= 100:
            raise ConfigError(f"{key}.max_attempts: expected 1 to 100, got {w.max_attempts}")
        if not 0.1 <= w.timeout <= 120:
            raise ConfigError(f"{key}.timeout: expected 0.1 to 120 seconds, got {w.timeout}")
        if len(w.secret) < 16:
            raise ConfigError(f"{key}: its secret webhook_{w.name} (secrets.yaml, at least 16 characters) is "
                              f"{'too short' if w.secret else 'missing'}")


def validate(cfg: Config) -> None:
    """Cross-field checks; raises ConfigError naming the key."""
    _validate_webhooks(cfg)
    _validate_cluster(cfg)
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
    if not EXTEN_RE.fullmatch(a.inbound_extension):
        raise ConfigError(f"asterisk.inbound_extension: digits only, got {a.inbound_extension!r}")
    if not NAME_RE.fullmatch(a.ami_username):
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
    if a.outbound_callerid and not EXTEN_RE.fullmatch(a.outbound_callerid):
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
    for lk in cfg.lookups:
        _validate_lookup(lk)
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
        if not LANG_RE.fullmatch(lang):
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
        if not NAME_RE.fullmatch(q.name):
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
        if not EXTEN_RE.fullmatch(did):
            raise ConfigError(f"dids.{did}: the number must be digits only")
        if not NAME_RE.fullmatch(menu):
            raise ConfigError(f"dids.{did}: bad menu name {menu!r}")
    if not NAME_RE.fullmatch(cfg.default_menu):
        raise ConfigError(f"default_menu: bad menu name {cfg.default_menu!r}")
    ids: set[str] = set()
    for i, ag in enumerate(cfg.agents):
        if not EXTEN_RE.fullmatch(ag.id):
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
        if ag.mobile and not EXTEN_RE.fullmatch(ag.mobile):
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


def _validate_cluster(cfg: Config) -> None:
    c, r = cfg.cluster, cfg.redis
    for i, s in enumerate(r.sentinels):
        host, _, port = s.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"redis.sentinels[{i}]: expected host:port, got {s!r}")
    if r.sentinels and not NAME_RE.fullmatch(r.master_name):
        raise ConfigError(f"redis.master_name: letters, digits, _ and - only, got {r.master_name!r}")
    for key, value in (("cluster.lease_ttl", c.lease_ttl), ("cluster.renew", c.renew),
                       ("cluster.heartbeat", c.heartbeat), ("cluster.node_ttl", c.node_ttl),
                       ("cluster.busy_sync", c.busy_sync), ("cluster.busy_stale", c.busy_stale),
                       ("cluster.max_call", c.max_call)):
        if not value > 0:
            raise ConfigError(f"{key}: must be above 0, got {value}")
    if c.renew * 2 > c.lease_ttl:
        raise ConfigError(f"cluster.renew: at most half of cluster.lease_ttl ({c.lease_ttl} s), got {c.renew}: "
                          "a leader must get two tries to renew before its lease runs out")
    if c.heartbeat * 2 > c.node_ttl:
        raise ConfigError(f"cluster.heartbeat: at most half of cluster.node_ttl ({c.node_ttl} s), got {c.heartbeat}")
    if c.busy_sync * 2 >= c.busy_stale:
        raise ConfigError(f"cluster.busy_stale: above twice cluster.busy_sync ({c.busy_sync} s), got {c.busy_stale}: "
                          "a node must get two tries to confirm its agents' calls before they count as stale")
    if c.max_call <= c.busy_stale:
        raise ConfigError(f"cluster.max_call: above cluster.busy_stale ({c.busy_stale} s), got {c.max_call}")
    if c.sip_proxy and not re.fullmatch(r"[A-Za-z0-9_.\[\]:-]+:\d{1,5}", c.sip_proxy):
        raise ConfigError(f"cluster.sip_proxy: expected host:port, got {c.sip_proxy!r}")
    if c.enabled and not NAME_RE.fullmatch(cfg.node):
        raise ConfigError(f"node: letters, digits, _ and - only in a cluster, got {cfg.node!r}")
