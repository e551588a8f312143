"""Render the Asterisk configuration tree from the controller's config.

Templates live in ``asterisk_conf/*.j2`` (Jinja2, strict: an unknown name is an
error, not an empty string). Secrets (the AMI secret, agent SIP passwords) are
passed in, never read from the templates, and the rendered files that hold them
are written 0600.
"""

from __future__ import annotations

import hashlib
import os
import secrets as pysecrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import jinja2

from ..app.config import PROJECT_ROOT, Config, ConfigError

TEMPLATES_DIR = PROJECT_ROOT / "asterisk_conf"
SECRET_FILES = {"manager.conf", "pjsip.conf"}

# Explicit module list: start-up in about a second, and no listening port but SIP, RTP and AMI.
MODULES: tuple[str, ...] = (
    # core resources
    "res_timing_timerfd.so", "res_sorcery_config.so", "res_sorcery_memory.so", "res_sorcery_astdb.so",
    "res_musiconhold.so", "res_agi.so", "res_rtp_asterisk.so", "res_speech.so",
    # PJSIP
    "res_pjproject.so", "res_pjsip.so", "res_pjsip_session.so", "chan_pjsip.so",
    "res_pjsip_authenticator_digest.so", "res_pjsip_outbound_authenticator_digest.so",
    "res_pjsip_endpoint_identifier_ip.so", "res_pjsip_endpoint_identifier_user.so",
    "res_pjsip_registrar.so", "res_pjsip_outbound_registration.so", "res_pjsip_sdp_rtp.so",
    "res_pjsip_caller_id.so", "res_pjsip_nat.so", "res_pjsip_rfc3326.so", "res_pjsip_dtmf_info.so",
    "res_pjsip_header_funcs.so", "res_pjsip_acl.so", "res_pjsip_logger.so", "res_pjsip_diversion.so",
    "res_pjsip_pubsub.so", "res_pjsip_dlg_options.so", "res_security_log.so", "res_manager_devicestate.so",
    # bridging
    "bridge_simple.so", "bridge_native_rtp.so", "bridge_softmix.so", "bridge_holding.so",
    "bridge_builtin_features.so",
    # dialplan and applications
    "pbx_config.so", "app_queue.so", "app_dial.so", "app_playback.so", "app_read.so", "app_stack.so",
    "app_exec.so", "app_verbose.so", "app_senddtmf.so", "app_echo.so", "app_amd.so", "app_chanspy.so",
    "app_record.so", "app_mixmonitor.so", "app_playtones.so", "app_userevent.so", "app_originate.so",
    "app_waitforsilence.so", "app_sayunixtime.so",
    "func_channel.so", "func_callerid.so", "func_logic.so", "func_strings.so", "func_global.so",
    "func_cut.so", "func_math.so", "func_timeout.so", "func_devstate.so", "func_dialplan.so",
    "func_hangupcause.so", "func_pjsip_endpoint.so", "func_pjsip_contact.so", "func_pjsip_aor.so",
    "func_uri.so", "func_rand.so",
    # codecs and file formats
    "codec_ulaw.so", "codec_alaw.so", "codec_gsm.so", "codec_a_mu.so", "codec_resample.so",
    "format_wav.so", "format_gsm.so", "format_pcm.so", "format_sln.so", "format_wav_gsm.so",
)

CONF_FILES = ("asterisk.conf", "modules.conf", "logger.conf", "rtp.conf", "manager.conf",
              "musiconhold.conf", "pjsip.conf", "queues.conf", "extensions.conf", "cdr.conf",
              "cel.conf", "features.conf", "indications.conf", "amd.conf", "pjproject.conf",
              "ccss.conf", "acl.conf", "udptl.conf", "stasis.conf")


CTL_PATH_MAX = 100   # sun_path is 108 bytes with its NUL; Asterisk names the socket <astrundir>/asterisk.ctl


@dataclass(frozen=True, slots=True)
class AsteriskDirs:
    etc: Path
    lib: Path
    spool: Path
    run: Path
    log: Path

    @classmethod
    def under(cls, etc: Path, state: Path) -> "AsteriskDirs":
        run = state / "run"
        if len(str(run / "asterisk.ctl")) > CTL_PATH_MAX:
            # a Unix socket's path holds at most 107 bytes: a deep workdir gets its run directory (the control
            # socket, the pid file) under /tmp, named after the workdir, so `asterisk -rx` still finds it
            digest = hashlib.sha1(str(state.resolve()).encode()).hexdigest()[:16]
            run = Path(tempfile.gettempdir()) / f"ivr-asterisk-{digest}"
        return cls(etc=etc, lib=state / "lib", spool=state / "spool", run=run, log=state / "log")

    def create(self) -> None:
        for d in (self.etc, self.lib, self.lib / "agi-bin", self.spool, self.run, self.log):
            d.mkdir(parents=True, exist_ok=True)
        if self.run.parent == Path(tempfile.gettempdir()):
            os.chmod(self.run, 0o700)     # a run folder moved to /tmp (see ``under``): the owner's only


def new_secret(nbytes: int = 24) -> str:
    """A URL-safe random secret (no characters that need quoting in .conf files)."""
    return pysecrets.token_urlsafe(nbytes)


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def _sip_bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


CODEC_MODULES = {"g722": "codec_g722.so", "opus": "codec_opus.so"}


def modules_for(cfg: Config) -> tuple[str, ...]:
    """MODULES plus the codec modules the configured agent codecs need (opus only where it is installed)."""
    extra = []
    for codec in cfg.asterisk.codecs:
        module = CODEC_MODULES.get(codec)
        if module is None:
            continue
        if not (Path(cfg.asterisk.modules_dir) / module).exists():
            raise ConfigError(f"asterisk.codecs: {codec} needs {module}, which is not in {cfg.asterisk.modules_dir} "
                              f"(Debian's Asterisk has codec_g722 but no opus transcoder)")
        extra.append(module)
    return MODULES + tuple(extra)


def sip_proxy(cfg: Config) -> str:
    """Kamailio's host:port when this node is one of a cluster behind it, else ""."""
    return cfg.cluster.sip_proxy if cfg.cluster.enabled else ""


def device_options(cfg: Config, contact: str, agent_id: str = "") -> dict[str, Any]:
    """Codecs for every agent endpoint; OPTIONS pings (qualify) for phones that register, not static contacts.

    On a node of a cluster the phones register with Kamailio, not with the node: the agent's contact is
    ``sip:<agent>@<kamailio>`` (Kamailio looks the phone up and refuses a second call to a busy agent), no
    qualify (Kamailio probes), and the contact a phone's answer carries is kept (Kamailio is in its Route set).
    """
    proxy = sip_proxy(cfg)
    if proxy and agent_id:
        return {"allow": ",".join(cfg.asterisk.codecs), "qualify": 0, "contact": f"sip:{agent_id}@{proxy}",
                "via_proxy": True}
    return {"allow": ",".join(cfg.asterisk.codecs), "qualify": 0 if contact else cfg.asterisk.qualify_frequency}


def trunk_match(cfg: Config) -> tuple[str, ...]:
    """The addresses the trunk is identified by: on a node of a cluster also Kamailio's (calls come through it)."""
    proxy = sip_proxy(cfg)
    if not proxy:
        return cfg.asterisk.trunk_match
    host = proxy.rsplit(":", 1)[0].strip("[]")
    return tuple(dict.fromkeys((*cfg.asterisk.trunk_match, host)))


def render_accounts(accounts: Sequence[Mapping[str, Any]]) -> str:
    """SIP accounts of agents added at run time (pjsip_volunteers.conf), from the agents' template."""
    head = ("; Written by the controller (agents added at run time); do not edit: changes are\n"
            "; overwritten. Add or remove agents with the API or `ivr agent`.\n")
    macro = _environment().get_template("pjsip_agent.j2").module.agent_endpoint  # type: ignore[attr-defined]  # the template's macro
    return head + "".join(str(macro(a)) for a in accounts)


def render(cfg: Config, dirs: AsteriskDirs, secret_values: Mapping[str, str]) -> list[Path]:
    """Render every template into ``dirs.etc``; returns the written paths.

    ``secret_values`` must hold ``ami_secret`` and may hold ``agent:<id>`` SIP passwords
    (an agent without one gets a fresh random password).
    """
    dirs.create()
    env = _environment()
    modules = modules_for(cfg)
    agents = []
    for ag in cfg.agents:
        display = (ag.name or f"Agent {ag.id}").replace('"', "").replace("\n", " ")[:40]
        agents.append({
            "id": ag.id,
            "display": display,
            "contact": ag.contact,
            "password": ag.password or secret_values.get(f"agent:{ag.id}") or new_secret(12),
            **device_options(cfg, ag.contact, ag.id),
        })
    ctx = {
        "asterisk": cfg.asterisk,
        "agi": cfg.agi,
        "dirs": dirs,
        "modules": modules,
        "prompts_dir": cfg.prompts_dir,
        "accept_lang": cfg.languages[0] if cfg.languages else "en",
        "trunk_match": trunk_match(cfg),
        "trunk_host": cfg.asterisk.trunk_uri.split(":", 1)[1] if cfg.asterisk.trunk_uri else "",
        "outbound_callerid": cfg.asterisk.outbound_callerid,
        "queues": cfg.queues,
        "agents": agents,
        "ami_secret": secret_values["ami_secret"],
        "sip_bind": _sip_bind(cfg.asterisk.sip_host, cfg.asterisk.sip_port),
        "agi_url": f"agi://{_sip_bind(cfg.agi.host, cfg.agi.port)}",
        "fallback_queue": cfg.fallback_queue,
        "fallback_timeout": cfg.fallback_timeout,
        "default_menu": cfg.default_menu,
        "routes": cfg.routes(),
        "systemname": cfg.node if cfg.cluster.enabled else "",
    }
    written = []
    for name in CONF_FILES:
        text = env.get_template(name + ".j2").render(**ctx)
        path = dirs.etc / name
        tmp = path.with_suffix(".tmp")
        mode = 0o600 if name in SECRET_FILES else 0o644
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        written.append(path)
    return written
