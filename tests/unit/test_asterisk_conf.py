"""Tests for ivr.asterisk.conf: the rendered Asterisk configuration tree."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from ivr.asterisk import conf as asterisk_conf
from ivr.asterisk.conf import CONF_FILES, MODULES, SECRET_FILES, AsteriskDirs, new_secret, render
from ivr.app.config import Config
from ivr.app.config_load import from_mapping

AMI_SECRET = "ami-Secret_0123456789abcdef"


def make_config(**overrides: object) -> Config:
    data: dict[str, object] = {
        "queues": [{"name": "support", "strategy": "ringall"}, {"name": "refunds"}, {"name": "rebooking"}],
        "agents": [
            {"id": "1001", "name": "Ann \"The\" Agent", "queues": ["support"], "contact": "sip:1001@127.0.0.1:5071"},
            {"id": "1002", "name": "Bob", "queues": ["refunds", "rebooking"]},
        ],
    }
    data.update(overrides)
    return from_mapping(data, {})


def conf_sections(text: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """Parse an Asterisk .conf file into [(section, [(key, value), ...]), ...] (repeats kept)."""
    out: list[tuple[str, list[tuple[str, str]]]] = []
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip() if not raw.lstrip().startswith("exten") else raw.strip()
        if not line or line.startswith(("#include ", "#tryinclude ")):
            continue
        m = re.fullmatch(r"\[([^\]]+)\](\(.*\))?", line)
        if m:
            out.append((m[1], []))
            continue
        key, sep, value = re.split(r"\s*(=>|=)\s*", line, maxsplit=1) if re.search("=>|=", line) else (line, "", "")
        assert sep, f"not a key = value line: {raw!r}"
        assert out, f"line before any section: {raw!r}"
        out[-1][1].append((key.strip(), value.strip()))
    return out


def section(sections: list[tuple[str, list[tuple[str, str]]]], name: str, type_: str | None = None) -> dict[str, str]:
    found = [dict(kv) for n, kv in sections if n == name and (type_ is None or dict(kv).get("type") == type_)]
    assert len(found) == 1, f"expected one [{name}] type={type_}, got {len(found)}"
    return found[0]


@pytest.fixture
def rendered(tmp_path: Path) -> tuple[Config, AsteriskDirs, list[Path]]:
    cfg = make_config()
    dirs = AsteriskDirs.under(tmp_path / "etc", tmp_path / "state")
    paths = render(cfg, dirs, {"ami_secret": AMI_SECRET, "agent:1001": "pw-from-secrets"})
    return cfg, dirs, paths


def read(dirs: AsteriskDirs, name: str) -> str:
    return (dirs.etc / name).read_text(encoding="utf-8")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# ------------------------------------------------------------------------- tree

def test_render_writes_every_conf_file_and_state_dirs(rendered: tuple[Config, AsteriskDirs, list[Path]]) -> None:
    _, dirs, paths = rendered
    assert [p.name for p in paths] == list(CONF_FILES)
    assert all(p.parent == dirs.etc and p.is_file() for p in paths)
    for d in (dirs.lib, dirs.lib / "agi-bin", dirs.spool, dirs.run, dirs.log):
        assert d.is_dir()
    assert not list(dirs.etc.glob("*.tmp"))       # temp files were renamed into place
    assert f"astetcdir => {dirs.etc}" in read(dirs, "asterisk.conf")


def test_secret_files_are_0600_and_others_0644(rendered: tuple[Config, AsteriskDirs, list[Path]]) -> None:
    _, dirs, paths = rendered
    assert SECRET_FILES == {"manager.conf", "pjsip.conf"}
    for p in paths:
        assert mode(p) == (0o600 if p.name in SECRET_FILES else 0o644), p.name


def test_secret_file_made_private_even_if_it_existed_world_readable(tmp_path: Path) -> None:
    dirs = AsteriskDirs.under(tmp_path / "etc", tmp_path / "state")
    dirs.create()
    (dirs.etc / "manager.conf").write_text("old", encoding="utf-8")
    os.chmod(dirs.etc / "manager.conf", 0o644)
    render(make_config(), dirs, {"ami_secret": AMI_SECRET})
    assert mode(dirs.etc / "manager.conf") == 0o600
    assert AMI_SECRET in read(dirs, "manager.conf")


def test_missing_ami_secret_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(KeyError):
        render(make_config(), AsteriskDirs.under(tmp_path / "etc", tmp_path / "state"), {})


def test_no_template_leftovers(rendered: tuple[Config, AsteriskDirs, list[Path]]) -> None:
    _, dirs, _ = rendered
    for name in CONF_FILES:
        text = read(dirs, name)
        assert "{{" not in text and "{%" not in text, name


# ---------------------------------------------------------------------- manager

def test_manager_conf_loopback_secret_and_least_rights(rendered: tuple[Config, AsteriskDirs, list[Path]]) -> None:
    cfg, dirs, _ = rendered
    secs = conf_sections(read(dirs, "manager.conf"))
    general = section(secs, "general")
    assert general["enabled"] == "yes"
    assert general["bindaddr"] == "127.0.0.1"
    assert general["port"] == str(cfg.asterisk.ami_port)
    user = section(secs, cfg.asterisk.ami_username)
    assert user["secret"] == AMI_SECRET
    assert user["deny"] == "0.0.0.0/0.0.0.0" and user["permit"].startswith("127.0.0.1/")
    forbidden = {"system", "command", "config", "dialplan", "all"}
    read_perms = set(user["read"].split(","))
    write_perms = set(user["write"].split(","))
    assert read_perms and write_perms
    assert not read_perms & forbidden, read_perms
    assert not write_perms & forbidden, write_perms
    assert {"call", "agent"} <= read_perms and {"agent", "reporting"} <= write_perms
    assert [n for n, _ in secs] == ["general", cfg.asterisk.ami_username]


def test_no_config_write_even_when_agents_can_be_added_at_run_time(tmp_path: Path) -> None:
    # config would allow UpdateConfig of manager.conf itself; volunteers' accounts are reloaded over the
    # control socket instead (ivr/asterisk/provision.py)
    cfg = make_config(asterisk={"conf_dir": str(tmp_path / "etc")})
    dirs = AsteriskDirs.under(tmp_path / "etc", tmp_path / "state")
    render(cfg, dirs, {"ami_secret": AMI_SECRET})
    user = section(conf_sections(read(dirs, "manager.conf")), cfg.asterisk.ami_username)
    assert set(user["write"].split(",")) == {"call", "agent", "originate", "reporting"}
    assert "config" not in user["read"].split(",")
    assert "#tryinclude pjsip_volunteers.conf" in read(dirs, "pjsip.conf")


def test_control_socket_is_private_unless_a_group_is_named(tmp_path: Path) -> None:
    dirs = AsteriskDirs.under(tmp_path / "etc", tmp_path / "state")
    render(make_config(asterisk={"conf_dir": str(tmp_path / "etc")}), dirs, {"ami_secret": AMI_SECRET})
    files = section(conf_sections(read(dirs, "asterisk.conf")), "files")
    assert files == {"astctlpermissions": "0600"}
    render(make_config(asterisk={"ctl_group": "ivr"}), dirs, {"ami_secret": AMI_SECRET})
    files = section(conf_sections(read(dirs, "asterisk.conf")), "files")
    assert files == {"astctlgroup": "ivr", "astctlpermissions": "0660"}


def test_runtime_accounts_use_digest_credentials_not_passwords() -> None:
    from ivr.asterisk.conf import render_accounts
    from ivr.agents.roster import md5_cred
    text = render_accounts([{"id": "7001", "display": "Vol One", "contact": "", "realm": "asterisk",
                             "md5_cred": md5_cred("7001", "s3cret"), "password": ""}])
    secs = conf_sections(text)
    auth = section(secs, "7001-auth")
    assert auth["auth_type"] == "md5" and auth["md5_cred"] == md5_cred("7001", "s3cret")
    assert "s3cret" not in text and "password" not in auth
    assert [n for n, _ in secs] == ["7001", "7001", "7001-auth"]


def test_manager_conf_follows_configured_user_and_port(tmp_path: Path) -> None:
    cfg = make_config(asterisk={"ami_username": "ctl", "ami_port": 25038, "ami_host": "::1"})
    dirs = AsteriskDirs.under(tmp_path / "etc", tmp_path / "state")
    render(cfg, dirs, {"ami_secret": AMI_SECRET})
    secs = conf_sections(read(dirs, "manager.conf"))
    assert section(secs, "general")["bindaddr"] == "::1"
    assert section(secs, "general")["port"] == "25038"
    assert section(secs, "ctl")["secret"] == AMI_SECRET


# ------------------------------------------------------------------------ pjsip

def test_pjsip_endpoint_aor_auth_per_agent(rendered: tuple[Config, AsteriskDirs, list[Path]]) -> None:
    cfg, dirs, _ = rendered
    secs = conf_sections(read(dirs, "pjsip.conf"))
    for ag in cfg.agents:
        ep = section(secs, ag.id, "endpoint")
        aor = section(secs, ag.id, "aor")
        auth = section(secs, f"{ag.id}-auth", "auth")
        assert ep["aors"] == ag.id and ep["auth"] == f"{ag.id}-auth" and ep["context"] == "from-agents"
        assert auth["username"] == ag.id and auth["auth_type"] == "userpass" and auth["password"]
        assert aor["max_contacts"] == "1"
    assert section(secs, "1001", "aor")["contact"] == "sip:1001@127.0.0.1:5071"
    assert "contact" not in section(secs, "1002", "aor")
    assert section(secs, "1001", "endpoint")["callerid"] == '"Ann The Agent" <1001>'   # quotes stripped
    assert section(secs, "transport-udp")["bind"] == f"127.0.0.1:{cfg.asterisk.sip_port}"
    assert section(secs, "trunk", "identify")["match"] == "127.0.0.1"
    names = [n for n, _ in secs]
    assert names.count("1001") == 2 and names.count("1002") == 2


def test_trunk_is_identified_by_address_only(rendered: tuple[Config, AsteriskDirs, list[Path]]) -> None:
    _, dirs, _ = rendered
    secs = conf_sections(read(dirs, "pjsip.conf"))
    trunk = section(secs, "trunk", "endpoint")
    assert trunk["identify_by"] == "ip"          # a From user "trunk" never selects it
    assert "auth" not in trunk                    # no inbound auth: the address is all that admits it
    # username first: agents' phones on the trunk's address (loopback, a SIP proxy) stay agents
    assert section(secs, "global")["endpoint_identifier_order"] == "username,ip"


def test_pjsip_ipv6_bind_is_bracketed(tmp_path: Path) -> None:
    dirs = AsteriskDirs.under(tmp_path / "etc", tmp_path / "state")
    render(make_config(asterisk={"sip_host": "::1", "sip_port": 5080}), dirs, {"ami_secret": AMI_SECRET})
    assert section(conf_sections(read(dirs, "pjsip.conf")), "transport-udp")["bind"] == "[::1]:5080"


def agent_password(dirs: AsteriskDirs, agent: str) -> str:
    return section(conf_sections(read(dirs, "pjsip.conf")), f"{agent}-auth", "auth")["password"]


def test_agent_password_from_secrets_used_as_is_and_others_random(tmp_path: Path) -> None:
    cfg = make_config()
    a = AsteriskDirs.under(tmp_path / "a", tmp_path / "sa")
    b = AsteriskDirs.under(tmp_path / "b", tmp_path / "sb")
    secrets = {"ami_secret": AMI_SECRET, "agent:1001": "pw-from-secrets"}
    render(cfg, a, secrets)
    render(cfg, b, secrets)
    assert agent_password(a, "1001") == agent_password(b, "1001") == "pw-from-secrets"
    pa, pb = agent_password(a, "1002"), agent_password(b, "1002")
    assert pa != pb
    assert len(pa) >= 16 and re.fullmatch(r"[A-Za-z0-9_-]+", pa)


def test_agent_password_in_config_wins(tmp_path: Path) -> None:
    cfg = make_config(agents=[{"id": "1001", "password": "from-config"}])
    dirs = AsteriskDirs.under(tmp_path / "etc", tmp_path / "state")
    render(cfg, dirs, {"ami_secret": AMI_SECRET, "agent:1001": "from-secrets"})
    assert agent_password(dirs, "1001") == "from-config"


def test_new_secret_is_url_safe_and_random() -> None:
    s1, s2 = new_secret(), new_secret()
    assert s1 != s2 and len(s1) == 32 and re.fullmatch(r"[A-Za-z0-9_-]+", s1)


# ----------------------------------------------------------------------- queues

def test_queues_conf_one_section_per_queue(rendered: tuple[Config, AsteriskDirs, list[Path]]) -> None:
    cfg, dirs, _ = rendered
    secs = conf_sections(read(dirs, "queues.conf"))
    names = [n for n, _ in secs]
    assert names == ["general", *cfg.queue_names()]
    assert names.count("general") == 1
    # members survive an Asterisk restart (astdb): the queues are not empty while the controller is away
    assert section(secs, "general")["persistentmembers"] == "yes"
    assert all("member" not in section(secs, q) for q in cfg.queue_names())   # none static: all reconciled
    support = section(secs, "support")
    assert support["strategy"] == "ringall" and support["timeout"] == "15" and support["servicelevel"] == "20"
    assert section(secs, "refunds")["strategy"] == "rrmemory"


# ------------------------------------------------------------------- extensions

def dialplan(text: str, context: str) -> list[str]:
    """The exten/same lines of one context, in order."""
    lines: list[str] = []
    current = None
    for raw in text.splitlines():
        m = re.fullmatch(r"\[([^\]]+)\]", raw.strip())
        if m:
            current = m[1]
        elif current == context and raw.strip().startswith(("exten", "same")):
            lines.append(raw.strip())
    return lines


def test_extensions_fallback_when_agi_fails_or_ivr_next_is_empty(
        rendered: tuple[Config, AsteriskDirs, list[Path]]) -> None:
    cfg, dirs, _ = rendered
    text = read(dirs, "extensions.conf")
    globals_ = section(conf_sections(text), "globals")
    assert globals_["IVR_AGI"] == f"agi://127.0.0.1:{cfg.agi.port}"
    assert globals_["IVR_FALLBACK_QUEUE"] == cfg.fallback_queue == "support"
    entry = dialplan(text, "from-trunk")
    agi = next(i for i, line in enumerate(entry) if line.startswith("same => n,AGI(${IVR_AGI}/menu/"))
    # right after the AGI (which returns with AGISTATUS=FAILURE when the controller is down, leaving
    # IVR_NEXT unset): an empty or unknown IVR_NEXT goes to "fallback", in the same step
    assert entry[agi + 1] == ("same => n,Goto(ivr-route,${IF($[${DIALPLAN_EXISTS(ivr-route,${IVR_NEXT},1)}]"
                              "?${IVR_NEXT}:fallback)},1)")
    # the caller ID is filtered before the AGI sees it (name and number in one step)
    assert entry[agi - 2].endswith(',1,Set(CALLERID(all)="${FILTER(0-9a-zA-Z .,${CALLERID(name)})}" '
                                   '<${FILTER(0-9+,${CALLERID(num)})}>)')
    assert entry[agi - 1] == "same => n,Answer()"
    route = dialplan(text, "ivr-route")
    fb = route.index("exten => fallback,1,Set(IVR_FALLBACK=1)")
    assert route[fb + 1] == "same => n,Set(IVR_FALLBACK_SINCE=${EPOCH})"
    # never held forever: the fallback queue has a timeout, then the controller once more, then a message
    assert globals_["IVR_FALLBACK_TIMEOUT"] == str(cfg.fallback_timeout) == "600"
    assert route[fb + 2] == "same => n,Queue(${IVR_FALLBACK_QUEUE},c,,,${IVR_FALLBACK_TIMEOUT})"
    assert route[fb + 3] == 'same => n,GotoIf($["${QUEUESTATUS}" = "CONTINUE"]?done)'
    assert route[fb + 5] == f"same => n,AGI(${{IVR_AGI}}/fallback/{cfg.default_menu})"
    assert route[fb + 6] == 'same => n,GotoIf($["${IVR_NEXT}" = "hangup"]?hangup,1)'
    assert route[fb + 7] == f"same => n,Playback({cfg.prompts_dir}/fallback-sorry)"
    assert route[fb + 9] == "same => n(done),Hangup()"
    for lang in cfg.languages:
        assert (Path(cfg.prompts_dir).parent / lang / "fallback-sorry.txt").exists()
        assert (Path(cfg.prompts_dir).parent / lang / "fallback-offer.txt").exists()


def test_extensions_fallback_queue_follows_config(tmp_path: Path) -> None:
    dirs = AsteriskDirs.under(tmp_path / "etc", tmp_path / "state")
    render(make_config(fallback_queue="refunds"), dirs, {"ami_secret": AMI_SECRET})
    assert section(conf_sections(read(dirs, "extensions.conf")), "globals")["IVR_FALLBACK_QUEUE"] == "refunds"
    render(make_config(fallback_timeout=45), dirs, {"ami_secret": AMI_SECRET})
    assert section(conf_sections(read(dirs, "extensions.conf")), "globals")["IVR_FALLBACK_TIMEOUT"] == "45"
    from ivr.app.config import ConfigError
    with pytest.raises(ConfigError, match="fallback_timeout"):
        make_config(fallback_timeout=0)


def test_extensions_inbound_extension_runs_default_menu(tmp_path: Path) -> None:
    cfg = make_config(asterisk={"inbound_extension": "8005"}, default_menu="main")
    dirs = AsteriskDirs.under(tmp_path / "etc", tmp_path / "state")
    render(cfg, dirs, {"ami_secret": AMI_SECRET})
    trunk = dialplan(read(dirs, "extensions.conf"), "from-trunk")
    i = next(i for i, line in enumerate(trunk) if line.startswith("exten => 8005,1,Set(CALLERID(all)="))
    assert trunk[i + 2] == "same => n,AGI(${IVR_AGI}/menu/main)"
    assert any(line.startswith("exten => _X.,1,") for line in trunk)   # other numbers are refused


# ---------------------------------------------------------------------- modules

def test_modules_conf_explicit_list_without_risky_modules(rendered: tuple[Config, AsteriskDirs, list[Path]]) -> None:
    _, dirs, _ = rendered
    secs = conf_sections(read(dirs, "modules.conf"))
    assert [n for n, _ in secs] == ["modules"]
    assert section(secs, "modules")["autoload"] == "no"
    loads = [v for k, v in secs[0][1] if k == "load"]
    assert loads == list(MODULES)
    for bad in ("chan_sip", "chan_iax2", "res_ari", "res_http_websocket"):
        assert not any(m.startswith(bad) for m in loads), bad
        assert not any(m.startswith(bad) for m in MODULES), bad
    assert {"chan_pjsip.so", "res_agi.so", "app_queue.so", "pbx_config.so"} <= set(loads)


# ------------------------------------------------------- regressions (bugs found and fixed)

def test_bug_ipv6_agi_host_is_not_bracketed(tmp_path: Path) -> None:
    dirs = AsteriskDirs.under(tmp_path / "etc", tmp_path / "state")
    render(make_config(agi={"host": "::1", "port": 15073}), dirs, {"ami_secret": AMI_SECRET})
    globals_ = section(conf_sections(read(dirs, "extensions.conf")), "globals")
    assert globals_["IVR_AGI"] == "agi://[::1]:15073"


def test_module_constants_are_consistent() -> None:
    assert set(SECRET_FILES) <= set(CONF_FILES)
    assert asterisk_conf.TEMPLATES_DIR.is_dir()
    for name in CONF_FILES:
        assert (asterisk_conf.TEMPLATES_DIR / f"{name}.j2").is_file(), name


def test_registering_phones_are_qualified_static_contacts_are_not(tmp_path: Path) -> None:
    cfg = make_config(agents=[{"id": "2001", "contact": "sip:2001@127.0.0.1:5070"}, {"id": "2002"}],
                      asterisk={"qualify_frequency": 15, "codecs": ["g722", "ulaw"]})
    dirs = AsteriskDirs.under(tmp_path / "etc", tmp_path / "state")
    render(cfg, dirs, {"ami_secret": AMI_SECRET})
    secs = conf_sections(read(dirs, "pjsip.conf"))
    assert "qualify_frequency" not in section(secs, "2001", "aor")
    assert section(secs, "2002", "aor")["qualify_frequency"] == "15"
    assert section(secs, "2002", "endpoint")["allow"] == "g722,ulaw"
    assert "load => codec_g722.so" in read(dirs, "modules.conf")
    assert "load => res_manager_devicestate.so" in read(dirs, "modules.conf")


def test_opus_is_refused_where_its_module_is_missing(tmp_path: Path) -> None:
    from ivr.app.config import ConfigError
    cfg = make_config(asterisk={"codecs": ["opus", "ulaw"], "modules_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match="asterisk.codecs: opus needs codec_opus.so"):
        render(cfg, AsteriskDirs.under(tmp_path / "etc", tmp_path / "state"), {"ami_secret": AMI_SECRET})


def test_mobile_fallback_dials_through_the_trunk_and_needs_a_keypress(tmp_path: Path) -> None:
    cfg = make_config(asterisk={"trunk_uri": "sip:198.51.100.7:5060", "outbound_callerid": "5550100"})
    dirs = AsteriskDirs.under(tmp_path / "etc", tmp_path / "state")
    render(cfg, dirs, {"ami_secret": AMI_SECRET})
    text = read(dirs, "extensions.conf")
    mobile = dict(conf_sections(text))["agent-mobile"]
    assert ("exten", "_X.,1,Set(CALLERID(all)=5550100)") in mobile
    assert any(v == "n,Dial(PJSIP/trunk/sip:${EXTEN}@198.51.100.7:5060,30,U(agent-accept))" for _, v in mobile)
    accept = [v for _, v in dict(conf_sections(text))["agent-accept"]]
    assert any("Read(IVR_ACCEPT," in v and "/agent-whisper,1,,2,6)" in v for v in accept)
    assert "n,Set(GOSUB_RESULT=ABORT)" in accept
    # no trunk: no fallback context
    render(make_config(), dirs, {"ami_secret": AMI_SECRET})
    assert "[agent-mobile]" not in read(dirs, "extensions.conf")


def test_trunk_with_registration_and_digest_auth(tmp_path: Path) -> None:
    cfg = make_config(asterisk={"trunk_uri": "sip:198.51.100.7:5060", "trunk_username": "acme",
                                "trunk_password": "pw-1", "trunk_register": True})
    dirs = AsteriskDirs.under(tmp_path / "etc", tmp_path / "state")
    render(cfg, dirs, {"ami_secret": AMI_SECRET})
    secs = conf_sections(read(dirs, "pjsip.conf"))
    assert section(secs, "trunk", "endpoint")["outbound_auth"] == "trunk-auth"
    assert section(secs, "trunk-auth")["password"] == "pw-1"
    reg = section(secs, "trunk-reg")
    assert reg["server_uri"] == "sip:198.51.100.7:5060" and reg["client_uri"] == "sip:acme@198.51.100.7:5060"
    assert reg["contact_user"] == cfg.asterisk.inbound_extension
    assert mode(dirs.etc / "pjsip.conf") == 0o600
    # IP-authenticated trunk: no auth, no registration
    render(make_config(asterisk={"trunk_uri": "sip:198.51.100.7:5060"}), dirs, {"ami_secret": AMI_SECRET})
    secs = conf_sections(read(dirs, "pjsip.conf"))
    assert "outbound_auth" not in section(secs, "trunk", "endpoint")
    assert not [n for n, _ in secs if n in ("trunk-auth", "trunk-reg")]


def test_trunk_registration_needs_a_password_from_secrets() -> None:
    from ivr.app.config import ConfigError
    with pytest.raises(ConfigError, match="asterisk.trunk_password: needed with trunk_username"):
        make_config(asterisk={"trunk_uri": "sip:198.51.100.7:5060", "trunk_username": "acme"})
    with pytest.raises(ConfigError, match="asterisk.trunk_register: needs trunk_uri and trunk_username"):
        make_config(asterisk={"trunk_register": True})
