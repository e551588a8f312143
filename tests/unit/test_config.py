"""Tests for ivr.app.config and config_load: defaults, YAML + secrets loading, env overrides, validation messages."""

from __future__ import annotations

import copy
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from ivr.app import config_load as config_mod
from ivr.app.config import AgentConfig, Config, ConfigError, QueueConfig
from ivr.app.config_checks import validate
from ivr.app.config_load import from_mapping, load, load_secrets, write_secrets

NO_ENV: dict[str, str] = {}


def build(data: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> Config:
    """from_mapping with an explicit (empty by default) environment, never os.environ."""
    return from_mapping(data, NO_ENV if env is None else env)


def error_of(data: dict[str, Any], env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        build(data, env)
    return str(info.value)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# --------------------------------------------------------------------------- defaults

def test_defaults_validate_and_have_expected_values() -> None:
    cfg = Config()
    validate(cfg)  # no exception
    assert cfg.queue_names() == ["support", "refunds", "rebooking"]
    assert cfg.fallback_queue == "support"
    assert cfg.asterisk.ami_host == "127.0.0.1"
    assert cfg.agi.host == "127.0.0.1"


def test_from_mapping_with_nothing_equals_defaults() -> None:
    assert build(None) == Config()
    assert build({}) == Config()


def test_to_dict_round_trips_nested_sections() -> None:
    d = Config().to_dict()
    assert d["api"]["port"] == 15080
    assert [q["name"] for q in d["queues"]] == ["support", "refunds", "rebooking"]


def test_agent_interface_is_pjsip() -> None:
    assert AgentConfig("1001").interface == "PJSIP/1001"
    assert AgentConfig("1001").mobile_interface == ""
    assert AgentConfig("1001", mobile="15550001").mobile_interface == "Local/15550001@agent-mobile/n"


@pytest.mark.parametrize("data,message", [
    ({"agents": [{"id": "1", "mobile": "+1 555"}]}, "agents[0].mobile: digits only"),
    ({"asterisk": {"codecs": ["speex"]}}, "asterisk.codecs: expected some of"),
    ({"asterisk": {"codecs": []}}, "asterisk.codecs"),
    ({"asterisk": {"qualify_frequency": -1}}, "asterisk.qualify_frequency"),
    ({"api": {"auth_fail_limit": 0}}, "api.auth_fail_limit"),
])
def test_device_and_api_options_are_checked(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        from_mapping(data, {})


# ---------------------------------------------------------------------- YAML loading

def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_load_yaml_file_with_sections_queues_and_agents(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "ivr.yaml", {
        "node": "ivr7",
        "api": {"port": 18080},
        "asterisk": {"sip_port": "5070", "trunk_match": "10.0.0.1, 10.0.1.0/24"},
        "queues": [{"name": "support", "strategy": "ringall", "timeout": 20}, {"name": "vip"}],
        "fallback_queue": "vip",
        "agents": [{"id": "1001", "name": "Ann", "queues": ["vip"], "logged_in": "yes",
                    "contact": "sip:1001@127.0.0.1:5071"}],
    })
    cfg = load(path, env=NO_ENV)
    assert cfg.node == "ivr7"
    assert cfg.api.port == 18080
    assert cfg.asterisk.sip_port == 5070          # coerced from text
    assert cfg.asterisk.trunk_match == ("10.0.0.1", "10.0.1.0/24")
    assert cfg.queues == (QueueConfig("support", strategy="ringall", timeout=20), QueueConfig("vip"))
    assert cfg.fallback_queue == "vip"
    (agent,) = cfg.agents
    assert agent.queues == ("vip",) and agent.logged_in is True and agent.name == "Ann"


def test_load_none_path_gives_defaults() -> None:
    assert load(None, env=NO_ENV) == Config()


def test_load_empty_file_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "ivr.yaml"
    path.write_text("# nothing here\n", encoding="utf-8")
    assert load(path, env=NO_ENV) == Config()


def test_secrets_yaml_beside_config_supplies_ami_secret(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "ivr.yaml", {"api": {"port": 18080}})
    write_secrets(tmp_path / "secrets.yaml", {"ami_secret": "s3cret", "api_token": "tok"})
    cfg = load(path, env=NO_ENV)
    assert cfg.asterisk.ami_secret == "s3cret"
    assert cfg.api.port == 18080


def test_secrets_yaml_is_not_required(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "ivr.yaml", {"node": "n1"})
    assert load(path, env=NO_ENV).asterisk.ami_secret == ""


def test_explicit_secrets_path_is_used(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "ivr.yaml", {})
    other = tmp_path / "elsewhere"
    other.mkdir()
    write_secrets(other / "s.yaml", {"ami_secret": "from-explicit"})
    assert load(path, env=NO_ENV, secrets_path=other / "s.yaml").asterisk.ami_secret == "from-explicit"


def test_secret_in_config_file_wins_over_secrets_file(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "ivr.yaml", {"asterisk": {"ami_secret": "in-config"}})
    write_secrets(tmp_path / "secrets.yaml", {"ami_secret": "in-secrets"})
    assert load(path, env=NO_ENV).asterisk.ami_secret == "in-config"


def test_env_wins_over_secrets_file(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "ivr.yaml", {})
    write_secrets(tmp_path / "secrets.yaml", {"ami_secret": "in-secrets"})
    cfg = load(path, env={"IVR_ASTERISK_AMI_SECRET": "from-env"})
    assert cfg.asterisk.ami_secret == "from-env"


def test_redis_password_from_secrets_or_env_never_the_config_file(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "ivr.yaml", {"redis": {"url": "redis://127.0.0.1:16379/0"}})
    write_secrets(tmp_path / "secrets.yaml", {"ami_secret": "a", "redis_password": "r3dis"})
    assert load(path, env=NO_ENV).redis.password == "r3dis"
    assert load(path, env={"IVR_REDIS_PASSWORD": "from-env"}).redis.password == "from-env"
    assert "r3dis" not in (tmp_path / "ivr.yaml").read_text()
    write_yaml(tmp_path / "ivr.yaml", {"redis": {"password": "in-file"}})
    with pytest.raises(ConfigError, match=r"redis\.password: not in ivr\.yaml.*secrets\.yaml.*IVR_REDIS_PASSWORD"):
        load(path, env=NO_ENV)
    write_yaml(tmp_path / "ivr.yaml", {"redis": {"url": "redis://:in-url@127.0.0.1:16379/0"}})
    with pytest.raises(ConfigError, match=r"redis\.url: no password in ivr\.yaml"):
        load(path, env=NO_ENV)


def test_load_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file .*nope\.yaml: cannot read it"):
        load(tmp_path / "nope.yaml", env=NO_ENV)


def test_load_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("api: {port: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"config file .*bad\.yaml: not valid YAML"):
        load(path, env=NO_ENV)


def test_load_top_level_list_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load(path, env=NO_ENV)


def test_load_secrets_rejects_non_mapping(tmp_path: Path) -> None:
    p = tmp_path / "secrets.yaml"
    p.write_text("- x\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="secrets file .*expected a mapping"):
        load_secrets(p)


def test_load_secrets_stringifies_values(tmp_path: Path) -> None:
    p = tmp_path / "secrets.yaml"
    p.write_text("ami_secret: 12345\nagent:1001: abc\n", encoding="utf-8")
    assert load_secrets(p) == {"ami_secret": "12345", "agent:1001": "abc"}


# --------------------------------------------------------------------- environment

def test_env_overrides_section_key_and_coerces() -> None:
    cfg = build({}, {"IVR_API_PORT": "18081", "IVR_AGI_READ_TIMEOUT": "2.5",
                     "IVR_ASTERISK_TRUNK_MATCH": "10.0.0.1,10.0.0.2"})
    assert cfg.api.port == 18081
    assert cfg.agi.read_timeout == 2.5
    assert cfg.asterisk.trunk_match == ("10.0.0.1", "10.0.0.2")


def test_env_overrides_yaml_value() -> None:
    cfg = build({"api": {"port": 17000, "host": "127.0.0.1"}}, {"IVR_API_PORT": "18081"})
    assert cfg.api.port == 18081
    assert cfg.api.host == "127.0.0.1"


def test_env_asterisk_ami_secret_sets_asterisk_section() -> None:
    # AMI is not a section of its own: the secret lives in the asterisk section,
    # so the variable is IVR_ASTERISK_AMI_SECRET (split as asterisk / ami_secret).
    cfg = build({}, {"IVR_ASTERISK_AMI_SECRET": "envsecret"})
    assert cfg.asterisk.ami_secret == "envsecret"


def test_env_top_level_scalars() -> None:
    cfg = build({}, {"IVR_NODE": "edge2", "IVR_LOG_LEVEL": "debug", "IVR_FALLBACK_QUEUE": "refunds"})
    assert (cfg.node, cfg.log_level, cfg.fallback_queue) == ("edge2", "debug", "refunds")


def test_env_unrelated_and_unknown_variables_are_ignored() -> None:
    cfg = build({}, {"PATH": "/bin", "IVR_API_NOPE": "1", "IVR_NOSECTION_X": "y", "IVRX": "z"})
    assert cfg == Config()


def test_env_bad_value_names_the_key() -> None:
    assert error_of({}, {"IVR_API_PORT": "eighty"}).startswith("api.port: expected an integer")


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in os.environ if v.startswith("IVR_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("IVR_API_PORT", "18082")
    assert from_mapping({}).api.port == 18082


# ---------------------------------------------------------------------- validation

@pytest.mark.parametrize(
    ("data", "prefix"),
    [
        ({"queues": [{"name": "support"}, {"name": "x", "strategy": "fastest"}]}, "queues[1].strategy:"),
        ({"queues": [{"name": "support", "timeout": 0}]}, "queues[0].timeout:"),
        ({"queues": [{"name": "support"}, {"name": "support"}]}, "queues[1].name: duplicate"),
        ({"queues": [{"name": "bad name"}]}, "queues[0].name:"),
        ({"queues": [{"name": "support"}, {"name": "general"}]}, "queues[1].name: 'general' is reserved"),
        ({"queues": [{"name": "support"}, {"name": "General"}]}, "queues[1].name: 'general' is reserved"),
        ({"queues": [{"name": "support", "colour": "red"}]}, "queues[0].colour: unknown key"),
        ({"queues": [{"name": "support", "timeout": "soon"}]}, "queues[0].timeout: expected an integer"),
        ({"queues": [{"name": "support", "timeout": True}]}, "queues[0].timeout: expected an integer"),
        ({"queues": [{"strategy": "ringall"}]}, "queues[0]:"),
        ({"queues": ["support"]}, "queues[0]: expected a mapping"),
        ({"queues": []}, "queues: expected a non-empty list"),
        ({"queues": "support"}, "queues: expected a non-empty list"),
        ({"asterisk": {"sip_port": 70000}}, "asterisk.sip_port: port must be 1-65535"),
        ({"asterisk": {"sip_port": 0}}, "asterisk.sip_port: port must be 1-65535"),
        ({"asterisk": {"ami_port": "x"}}, "asterisk.ami_port: expected an integer"),
        ({"asterisk": {"rtp_start": 30000, "rtp_end": 20000}}, "asterisk.rtp_end: must be above"),
        ({"asterisk": {"ami_host": "0.0.0.0"}}, "asterisk.ami_host: AMI and FastAGI must stay on loopback"),
        ({"asterisk": {"ami_host": "192.168.1.10"}}, "asterisk.ami_host: AMI and FastAGI must stay on loopback"),
        ({"asterisk": {"ami_host": "example.com"}}, "asterisk.ami_host: expected an IP address"),
        ({"agi": {"host": "0.0.0.0"}}, "agi.host: AMI and FastAGI must stay on loopback"),
        ({"agi": {"host": "10.1.2.3"}}, "agi.host: AMI and FastAGI must stay on loopback"),
        ({"api": {"host": "not a host"}}, "api.host: expected an IP address"),
        ({"asterisk": {"inbound_extension": "5a0"}}, "asterisk.inbound_extension: digits only"),
        ({"asterisk": {"ami_username": "bad user"}}, "asterisk.ami_username:"),
        ({"asterisk": {"trunk_match": ["10.0.0.1", "nope"]}}, "asterisk.trunk_match[1]:"),
        ({"asterisk": {"colour": "red"}}, "asterisk.colour: unknown key"),
        ({"asterisk": "yes"}, "asterisk: expected a mapping"),
        ({"agi": {"port": 99999}}, "agi.port: port must be 1-65535"),
        ({"api": {"port": -1}}, "api.port: port must be 1-65535"),
        ({"api": {"trusted_proxies": ["10.0.0.1", "proxy.example"]}}, "api.trusted_proxies[1]: expected an IP"),
        ({"api": {"trusted_proxies": "10.0.0.0/33"}}, "api.trusted_proxies[0]: expected an IP"),
        ({"api": {"client_ip_header": "X-Forwarded-For: 1.2.3.4"}}, "api.client_ip_header: expected a header"),
        ({"api": {"client_ip_header": ""}}, "api.client_ip_header: expected a header"),
        ({"redis": {"url": "http://x"}}, "redis.url:"),
        ({"balance": {"interval": 0}}, "balance.interval: must be above 0"),
        ({"log_level": "chatty"}, "log_level:"),
        ({"languages": ["en", "English"]}, "languages[1]:"),
        ({"languages": {"en": 1}}, "languages: expected a list"),
        ({"fallback_queue": "nowhere"}, "fallback_queue: 'nowhere' is not one of the queues"),
        ({"colour": "red"}, "colour: unknown key"),
        ({"agents": {"id": "1001"}}, "agents: expected a list"),
        ({"agents": [{"id": "1001", "queues": ["support", "sales"]}]}, "agents[0].queues: unknown queue 'sales'"),
        ({"agents": [{"id": "1001"}, {"id": "1001"}]}, "agents[1].id: duplicate agent '1001'"),
        ({"agents": [{"id": "ann"}]}, "agents[0].id: digits only"),
        ({"agents": [{"id": "1001", "skill": "guru"}]}, "agents[0].skill:"),
        ({"agents": [{"id": "1001", "contact": "http://1001@127.0.0.1"}]}, "agents[0].contact:"),
        ({"agents": [{"id": "1001", "contact": "sip:1001"}]}, "agents[0].contact:"),
        ({"agents": [{"id": "1001", "contact": "sip:10 01@127.0.0.1"}]}, "agents[0].contact:"),
        ({"agents": [{"id": "1001", "logged_in": "maybe"}]}, "agents[0].logged_in: expected true or false"),
        ({"agents": [{"id": "1001", "wings": 2}]}, "agents[0].wings: unknown key"),
        ({"agents": [{"id": "1001", "queues": {"a": 1}}]}, "agents[0].queues: expected a list"),
        ({"agents": [{"id": "1001", "name": ["x"]}]}, "agents[0].name: expected text"),
    ],
)
def test_validation_error_names_the_key(data: dict[str, Any], prefix: str) -> None:
    assert error_of(data).startswith(prefix)


def test_unknown_top_level_key_lists_known_keys() -> None:
    msg = error_of({"queue": []})
    assert msg.startswith("queue: unknown key")
    assert "queues" in msg and "fallback_queue" in msg


def test_unknown_section_key_lists_known_keys() -> None:
    msg = error_of({"api": {"prot": 1}})
    assert msg.startswith("api.prot: unknown key")
    assert "port" in msg and "host" in msg


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_loopback_hosts_are_accepted_for_ami_and_agi(host: str) -> None:
    cfg = build({"asterisk": {"ami_host": host}, "agi": {"host": host}})
    assert cfg.asterisk.ami_host == host and cfg.agi.host == host


def test_api_may_listen_on_any_ip() -> None:
    assert build({"api": {"host": "0.0.0.0"}}).api.host == "0.0.0.0"


@pytest.mark.parametrize("contact", ["sip:1001@127.0.0.1:5071", "sips:agent_1@phone.example.org", "sip:1001@[::1]:5060"])
def test_good_contacts_are_accepted(contact: str) -> None:
    cfg = build({"agents": [{"id": "1001", "contact": contact}]})
    assert cfg.agents[0].contact == contact


def test_validate_on_directly_built_config() -> None:
    cfg = Config(queues=(QueueConfig("support"), QueueConfig("general")))
    with pytest.raises(ConfigError, match=r"^queues\[1\]\.name:"):
        validate(cfg)


# ------------------------------------------------------------------------- secrets

def test_write_secrets_creates_0600_file_and_round_trips(tmp_path: Path) -> None:
    p = tmp_path / "secrets.yaml"
    write_secrets(p, {"ami_secret": "abc", "agent:1001": "pw"})
    assert mode_of(p) == 0o600
    assert load_secrets(p) == {"ami_secret": "abc", "agent:1001": "pw"}


def test_write_secrets_is_0600_even_with_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_secrets(tmp_path / "s.yaml", {"k": "v"})
    finally:
        os.umask(old)
    assert mode_of(tmp_path / "s.yaml") == 0o600


def test_write_secrets_tightens_an_existing_file_and_replaces_content(tmp_path: Path) -> None:
    p = tmp_path / "secrets.yaml"
    p.write_text("old: stuff\nmore: stuff\n", encoding="utf-8")
    os.chmod(p, 0o644)
    write_secrets(p, {"ami_secret": "new"})
    assert mode_of(p) == 0o600
    assert load_secrets(p) == {"ami_secret": "new"}


# ------------------------------------------------------- regressions (bugs found and fixed)

def test_bug_null_asterisk_section_drops_secret_from_secrets_file(tmp_path: Path) -> None:
    path = tmp_path / "ivr.yaml"
    path.write_text("asterisk:\n  # sip_port: 15060\nnode: ivr1\n", encoding="utf-8")
    write_secrets(tmp_path / "secrets.yaml", {"ami_secret": "s3cret"})
    assert load(path, env=NO_ENV).asterisk.ami_secret == "s3cret"


def test_bug_null_section_drops_env_override() -> None:
    assert build({"asterisk": None}, {"IVR_ASTERISK_AMI_SECRET": "envsecret"}).asterisk.ami_secret == "envsecret"


def test_bug_null_string_value_becomes_literal_none() -> None:
    cfg = build({"agents": [{"id": "1001", "password": None}]})
    assert cfg.agents[0].password != "None"


def test_bug_from_mapping_mutates_callers_nested_sections() -> None:
    data = {"api": {"host": "127.0.0.1"}}
    before = copy.deepcopy(data)
    build(data, {"IVR_API_PORT": "18081"})
    assert data == before


def test_bug_write_secrets_existing_file_is_world_readable_during_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "secrets.yaml"
    p.write_text("{}\n", encoding="utf-8")
    os.chmod(p, 0o644)
    modes_while_writing: list[int] = []
    real_dump = config_mod.yaml.safe_dump

    def spying_dump(data: Any, stream: Any = None, **kw: Any) -> Any:
        modes_while_writing.append(mode_of(p))
        return real_dump(data, stream, **kw)

    monkeypatch.setattr(config_mod.yaml, "safe_dump", spying_dump)
    write_secrets(p, {"ami_secret": "abc"})
    assert modes_while_writing == [0o600]


def test_trusted_proxies_from_the_file_and_the_environment() -> None:
    cfg = from_mapping({"api": {"trusted_proxies": ["10.0.0.5", "fd00::/64"], "client_ip_header": "X-Real-IP"}},
                       env={})
    assert cfg.api.trusted_proxies == ("10.0.0.5", "fd00::/64") and cfg.api.client_ip_header == "X-Real-IP"
    env = {"IVR_API_TRUSTED_PROXIES": "127.0.0.1, 10.1.0.0/16"}
    assert from_mapping({}, env=env).api.trusted_proxies == ("127.0.0.1", "10.1.0.0/16")
    assert from_mapping({}, env={}).api.trusted_proxies == ()
