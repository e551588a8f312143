"""Reading the configuration: defaults, then a YAML file, then ``IVR_<SECTION>_<KEY>`` environment
variables, coerced into the types of ivr/app/config.py and checked once (ivr/app/config_checks.py: a bad
value stops start-up with a ``ConfigError`` naming the key); and the 0600 secrets file."""

from __future__ import annotations

import copy
import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Mapping

import yaml

from .config import (AgentConfig, AgiConfig, ApiConfig, AsteriskConfig, BalanceConfig, ClusterConfig, Config, ConfigError,
                     ContinuityConfig, ForecastConfig, LookupConfig, OutboundConfig, PromiseConfig, QueueConfig,
                     RedisConfig, RefundsConfig, WebhookConfig)
from .config_checks import BUILTIN_BACKENDS, NAME_RE, lookup_env, validate



# --------------------------------------------------------------------------- parsing

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
    if typ in ("Mapping[str, str]",):
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping of name: text, got {value!r}")
        return {str(k): _coerce(f"{key}.{k}", v, "str") for k, v in value.items()}
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
    "cluster": ClusterConfig,
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
    if "lookups" not in data and any(var.startswith("IVR_LOOKUP_") for var in env):
        data["lookups"] = {}          # a secret for a backend the file does not define: named by _lookups
    for name, value in data.items():
        if name in _SECTIONS:
            kwargs[name] = _build(_SECTIONS[name], value or {}, name)
        elif name == "queues":
            if not isinstance(value, list) or not value:
                raise ConfigError("queues: expected a non-empty list of queues")
            kwargs[name] = tuple(_build(QueueConfig, q, f"queues[{i}]") for i, q in enumerate(value))
        elif name == "lookups":
            kwargs[name] = _lookups(value, env)
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
        elif name == "webhooks":
            kwargs[name] = _webhooks(value)
        else:
            kwargs[name] = _coerce(name, value, top_fields[name].type)
    cfg = Config(**kwargs)
    validate(cfg)
    return cfg


def _lookups(value: Any, env: Mapping[str, str]) -> tuple[LookupConfig, ...]:
    """``lookups:``: name -> settings; each backend's auth value from the environment (it wins over
    secrets.yaml, already merged by ``load``)."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise ConfigError("lookups: expected a mapping of name: {url: ..., ...}")
    out = []
    for name, raw in value.items():
        name = str(name)
        if not NAME_RE.fullmatch(name):
            raise ConfigError(f"lookups.{name}: names are letters, digits, _ and - (up to 40)")
        if not isinstance(raw, Mapping):
            raise ConfigError(f"lookups.{name}: expected a mapping with at least url")
        raw = dict(raw)
        if not raw.get("url"):
            raise ConfigError(f"lookups.{name}.url: missing (the backend's address, e.g. "
                              "https://bookings.example/api/{booking})")
        if lookup_env(name) in env:
            raw["auth"] = env[lookup_env(name)]
        out.append(_build(LookupConfig, {**raw, "name": name}, f"lookups.{name}"))
    known = {lk.name for lk in out}
    for var in env:
        if var.startswith("IVR_LOOKUP_") and var.endswith("_AUTH") and not any(var == lookup_env(n) for n in known):
            raise ConfigError(f"{var}: no look-up backend of that name in lookups: (configured: "
                              f"{', '.join(sorted(known)) or 'none'})")
    return tuple(out)


def backend_names(cfg: Config) -> frozenset[str]:
    """The backends a menu's lookup node may name: the built-in ones and ``lookups:``."""
    return frozenset(BUILTIN_BACKENDS) | {lk.name for lk in cfg.lookups}


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
        _no_lookup_secret_in(data, p)
        _no_webhook_secret_in(data, p)
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
        lookups = data.get("lookups")
        if isinstance(lookups, dict):
            for name, entry in lookups.items():
                value = secrets.get(f"lookup_{name}_auth")
                if value and isinstance(entry, dict):
                    entry.setdefault("auth", value)
        hooks = data.get("webhooks")
        for hook in hooks if isinstance(hooks, list) else []:
            if isinstance(hook, dict) and "secret" not in hook and f"webhook_{hook.get('name')}" in secrets:
                hook["_secret"] = secrets[f"webhook_{hook.get('name')}"]
        if secrets.get("redis_password"):
            if data.get("redis") is None:
                data["redis"] = {}
            if isinstance(data["redis"], dict):
                data["redis"].setdefault("password", secrets["redis_password"])
    return from_mapping(data, env)


def _webhooks(value: Any) -> tuple[WebhookConfig, ...]:
    """``webhooks:``, a list of {name, url, events, ...}; the secret comes from secrets.yaml (``_secret``, put
    there by ``load``), never from the file."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError("webhooks: expected a list of {name, url, events}")
    out = []
    for i, w in enumerate(value):
        if isinstance(w, Mapping) and "secret" in w:
            raise ConfigError(f"webhooks[{i}].secret: not in ivr.yaml; put it in secrets.yaml as "
                              f"webhook_{w.get('name', '<name>')}")
        w = dict(w) if isinstance(w, Mapping) else w
        secret = str(w.pop("_secret", "") or "") if isinstance(w, dict) else ""    # put there from secrets.yaml
        hook = _build(WebhookConfig, w, f"webhooks[{i}]")
        out.append(dataclasses.replace(hook, secret=secret) if secret else hook)
    return tuple(out)


def _no_webhook_secret_in(data: Mapping[str, Any], path: Path) -> None:
    """A webhook's secret belongs in secrets.yaml (webhook_<name>): refuse it in the config file."""
    hooks = data.get("webhooks")
    for i, hook in enumerate(hooks if isinstance(hooks, list) else []):
        if isinstance(hook, Mapping) and ("secret" in hook or "_secret" in hook):
            raise ConfigError(f"webhooks[{i}].secret: not in {path.name}; put it in secrets.yaml as "
                              f"webhook_{hook.get('name', '<name>')}")


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


def _no_lookup_secret_in(data: Mapping[str, Any], path: Path) -> None:
    """A look-up backend's auth value belongs in secrets.yaml or the environment: refuse it in the config file."""
    lookups = data.get("lookups")
    if not isinstance(lookups, Mapping):
        return
    for name, entry in lookups.items():
        if isinstance(entry, Mapping) and "auth" in entry:
            raise ConfigError(f"lookups.{name}.auth: not in {path.name}; put it in secrets.yaml (lookup_{name}_auth) "
                              f"or {lookup_env(str(name))}")


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
