"""Render Kamailio's configuration (``kamailio.cfg``) and its dispatcher list for a cluster of Asterisk nodes.

Pure functions, text out: the CLI (``ivr asterisk-conf render``) writes them for a real deployment and the
private cluster (ivr/devtools/cluster.py) for loopback. docs/cluster.md says what each part promises.

Why these choices:

* **Round-robin (dispatcher algorithm 4)**, not call-load (10): the nodes are alike and the calls are alike (a
  menu, then a wait on music), so taking turns spreads them evenly; it keeps no per-call state, so a restart
  of Kamailio loses nothing that balancing needs (call-load counts calls in the dialog module's memory and
  would start from zero after a restart). A node that is full answers 503 (Asterisk's ``maxcalls``) and the
  call fails over to the next node.
* **Probing every node** with OPTIONS every ``ping_interval`` seconds in probing mode 1, and a node that does
  not answer an INVITE within ``fr_timer_ms`` is marked down at once (``ds_mark_dst``) and the call retried on
  the next one (``ds_next_dst`` in ``failure_route[DS_FAIL]``): a dead node costs a caller a delay of at
  most ``fr_timer_ms``, not a failed call. A node that took a call (100 Trying) but did not answer it within
  ``ANSWER_TIMER_MS`` counts as failed too: the IVR answers at once, so such a node died or is stuck.
* **Record-Route and loose routing** keep Kamailio on the signalling path of each dialog (so agents' phones
  behind it stay reachable), never on the media path: no rtpproxy, the SDP goes through untouched.
* **Registrar for agents' phones** (usrloc in memory: ``db_mode 0``): a node rings agent 1001 by sending an
  INVITE for ``sip:1001@<kamailio>``; Kamailio looks the phone up. A real deployment keeps the registrations
  in a database (``db_mode`` 2 with db_mysql or db_redis) so a restart does not wait for re-registrations.
* **One call per agent across nodes**: each call to an agent is a dialog in profile ``agent`` keyed by the
  agent's id; a second INVITE while one is up (from any node) gets 486 Busy Here, so app_queue on that node
  rings another member. The check and the mark are taken under a lock per agent (cfgutils).
* **A call retried with credentials goes to the same node**: a node challenges an agent's phone (digest) and
  only that node knows its nonce, so the node each new call went to is kept by Call-ID for a minute (htable).
* **Only known sources** (the nodes, the carrier's and the agents' networks) may send requests; anything else
  gets 403 and is logged.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Sequence

from ..app.config import Config, ConfigError

MODULES_DIR = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"
DISPATCHER_SET = 1
ALGORITHM = 4                 # round-robin: see the module's docstring
PING_INTERVAL = 2             # seconds between OPTIONS probes of each node
FR_TIMER_MS = 2000            # a node that sends nothing back to an INVITE within this is tried no longer
ANSWER_TIMER_MS = 10000       # ... nor one that sent 100 Trying but no answer within this (the IVR answers at once)
_HOSTPORT_RE = re.compile(r"(?P<host>[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>\d{1,5})")


@dataclass(frozen=True, slots=True)
class KamailioSettings:
    """What the rendered kamailio.cfg needs (``from_config`` builds it from a node's ivr.yaml)."""

    listen: str                           # host:port Kamailio listens on (UDP)
    nodes: tuple[str, ...]                # each Asterisk node's SIP address, host:port
    allowed: tuple[str, ...]              # addresses/networks besides the nodes that may send requests
    dispatcher_file: str                  # absolute path of dispatcher.list
    ctl_socket: str = ""                  # unix socket for kamcmd (empty: no control socket)
    modules_dir: str = MODULES_DIR
    ping_interval: int = PING_INTERVAL
    fr_timer_ms: int = FR_TIMER_MS
    children: int = 4


def split_hostport(value: str, key: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) into its parts; a ConfigError naming ``key`` otherwise."""
    m = _HOSTPORT_RE.fullmatch(value)
    if m is None or not 0 < int(m["port"]) < 65536:
        raise ConfigError(f"{key}: expected host:port, got {value!r}")
    return m["host"].strip("[]"), int(m["port"])


def _network(value: str, key: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        raise ConfigError(f"{key}: expected an IP address or network, got {value!r}") from None


def _validate(s: KamailioSettings) -> None:
    split_hostport(s.listen, "cluster.sip_proxy")
    if not s.nodes:
        raise ConfigError("cluster.nodes: list every Asterisk node's SIP address (host:port), at least one")
    for i, node in enumerate(s.nodes):
        split_hostport(node, f"cluster.nodes[{i}]")
    if len(set(s.nodes)) != len(s.nodes):
        raise ConfigError(f"cluster.nodes: a node is listed twice: {', '.join(s.nodes)}")
    for i, net in enumerate(s.allowed):
        _network(net, f"cluster.allowed[{i}]")
    if not s.dispatcher_file.startswith("/"):
        raise ConfigError(f"dispatcher list: an absolute path is needed, got {s.dispatcher_file!r}")
    if not 1 <= s.ping_interval <= 60:
        raise ConfigError(f"ping interval: 1 to 60 seconds, got {s.ping_interval}")


def from_config(cfg: Config, dispatcher_file: str, ctl_socket: str = "") -> KamailioSettings:
    """The settings of a real deployment's Kamailio from a node's config (``cluster.sip_proxy``,
    ``cluster.nodes``, ``cluster.allowed``, plus the trunk's ``asterisk.trunk_match`` networks)."""
    c = cfg.cluster
    if not c.enabled or not c.sip_proxy:
        raise ConfigError("cluster: Kamailio's configuration needs cluster.enabled: true and cluster.sip_proxy")
    allowed = tuple(dict.fromkeys((*c.allowed, *cfg.asterisk.trunk_match)))
    s = KamailioSettings(listen=c.sip_proxy, nodes=tuple(c.nodes), allowed=allowed,
                         dispatcher_file=dispatcher_file, ctl_socket=ctl_socket)
    _validate(s)
    return s


def render_dispatcher(nodes: Sequence[str]) -> str:
    """dispatcher.list: set 1 holds every node (``setid uri flags priority attrs``)."""
    lines = ["# written by `ivr asterisk-conf render` / `ivr up --nodes N`: set 1 = the Asterisk nodes",
             "# setid destination flags priority attributes"]
    for i, node in enumerate(nodes):
        host, port = split_hostport(node, f"cluster.nodes[{i}]")
        uri_host = f"[{host}]" if ":" in host else host
        lines.append(f"{DISPATCHER_SET} sip:{uri_host}:{port} 0 0 duid=node{i + 1}")
    return "\n".join(lines) + "\n"


def _allowed_checks(s: KamailioSettings) -> str:
    nets = [_network(n, "cluster.allowed") for n in s.allowed]
    for i, node in enumerate(s.nodes):
        host, _ = split_hostport(node, f"cluster.nodes[{i}]")
        try:
            nets.append(str(ipaddress.ip_network(host)))
        except ValueError:   # a node given by name: ds_is_from_list below still lets it in
            pass
    return "".join(f'\tif (is_in_subnet("$si", "{n}")) return(1);\n' for n in dict.fromkeys(nets))


def render_cfg(s: KamailioSettings) -> str:
    """kamailio.cfg for ``s`` (checked with ``kamailio -c -f FILE`` by the tests)."""
    _validate(s)
    host, port = split_hostport(s.listen, "cluster.sip_proxy")
    listen_host = f"[{host}]" if ":" in host else host
    ctl = (f'loadmodule "ctl.so"\nmodparam("ctl", "binrpc", "unix:{s.ctl_socket}")\n' if s.ctl_socket else "")
    return f"""#!KAMAILIO
# Written by `ivr asterisk-conf render` (or `ivr up --nodes N`); do not edit: it is rendered again.
# SIP entry of the cluster: dispatcher over the Asterisk nodes (set {DISPATCHER_SET}, round-robin, probed
# every {s.ping_interval} s), registrar for agents' phones, one call per agent across nodes. See docs/cluster.md.

debug=2
log_stderror=yes
log_facility=LOG_LOCAL0
log_prefix="{{$mt $hdr(CSeq) $ci}} "
memdbg=5
memlog=5
children={s.children}
auto_aliases=no
listen=udp:{listen_host}:{port}
alias="{listen_host}:{port}"
disable_tcp=yes
disable_sctp=yes
dns=no
rev_dns=no

mpath="{s.modules_dir}"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "ipops.so"
loadmodule "cfgutils.so"
loadmodule "htable.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "dialog.so"
loadmodule "dispatcher.so"
{ctl}
# a node that sends nothing back within fr_timer is failed over; a ringing call may last two minutes
modparam("tm", "fr_timer", {s.fr_timer_ms})
modparam("tm", "fr_inv_timer", 120000)
modparam("rr", "enable_full_lr", 0)
modparam("rr", "append_fromtag", 1)
# agents' registrations in memory (a real deployment: db_mode 2 with a database)
modparam("usrloc", "db_mode", 0)
modparam("registrar", "max_expires", 3600)
modparam("registrar", "default_expires", 300)
# the calls to agents, one profile entry per call: the busy guard
modparam("dialog", "profiles_with_value", "agent")
modparam("dialog", "dlg_flag", 4)
modparam("dialog", "enable_stats", 0)
# a call to an agent whose BYE never came through (a node died) frees the agent after two hours at most
modparam("dialog", "default_timeout", 7200)
modparam("dispatcher", "list_file", "{s.dispatcher_file}")
modparam("dispatcher", "flags", 2)
modparam("dispatcher", "ds_probing_mode", 1)
modparam("dispatcher", "ds_ping_interval", {s.ping_interval})
modparam("dispatcher", "ds_probing_threshold", 1)
modparam("dispatcher", "ds_inactive_threshold", 1)
modparam("dispatcher", "ds_ping_method", "OPTIONS")
modparam("dispatcher", "ds_ping_from", "sip:dispatcher@{listen_host}:{port}")
modparam("dispatcher", "ds_ping_reply_codes", "class=2;class=4")
modparam("dispatcher", "xavp_dst", "_dsdst_")
modparam("dispatcher", "xavp_ctx", "_dsctx_")
modparam("cfgutils", "lock_set_size", 8)
# the node each new call went to, by Call-ID, for a minute: an agent's phone that answers a node's digest
# challenge sends its INVITE again (same Call-ID) and must reach the node that challenged it
modparam("htable", "htable", "callnode=>size=12;autoexpire=60;")

request_route {{
\tif (!mf_process_maxfwd_header("10")) {{
\t\tsl_send_reply("483", "Too Many Hops");
\t\texit;
\t}}
\tif (!sanity_check("17895", "7")) {{
\t\txlog("L_WARN", "malformed request from $si:$sp dropped\\n");
\t\texit;
\t}}
\tif (!route(ALLOWED)) {{
\t\txlog("L_WARN", "refused $rm from $si:$sp (not a node, the carrier or an agents' network)\\n");
\t\tif (!is_method("ACK")) sl_send_reply("403", "Forbidden");
\t\texit;
\t}}
\tif (is_method("CANCEL")) {{
\t\tif (t_check_trans()) route(RELAY);
\t\texit;
\t}}
\tif (!is_method("ACK")) {{
\t\tif (t_precheck_trans()) {{
\t\t\tt_check_trans();
\t\t\texit;
\t\t}}
\t\tt_check_trans();
\t}}
\troute(WITHINDLG);
\tremove_hf("Route");
\tif (is_method("OPTIONS") && uri == myself && $rU == $null) {{
\t\tsl_send_reply("200", "OK");
\t\texit;
\t}}
\tif (is_method("REGISTER")) {{
\t\t# one phone per agent, as on the nodes (max_contacts 1)
\t\tif (!save("location", "0x04")) sl_reply_error();
\t\texit;
\t}}
\tif (!is_method("INVITE")) {{
\t\tsl_send_reply("405", "Method Not Allowed");
\t\texit;
\t}}
\tif (ds_is_from_list("{DISPATCHER_SET}")) {{
\t\troute(TO_AGENT);
\t\texit;
\t}}
\troute(TO_NODE);
}}

# the nodes, the carrier and the agents' phones; nobody else
route[ALLOWED] {{
\tif (ds_is_from_list("{DISPATCHER_SET}")) return(1);
{_allowed_checks(s)}\treturn(-1);
}}

route[RELAY] {{
\tif (!t_relay()) sl_reply_error();
\texit;
}}

# requests inside a dialog follow its Route set (stateless: they pass after a restart of Kamailio too)
route[WITHINDLG] {{
\tif (!has_totag()) return;
\tif (loose_route()) {{
\t\troute(RELAY);
\t}}
\tif (is_method("ACK")) {{
\t\tif (t_check_trans()) route(RELAY);
\t\texit;
\t}}
\tsl_send_reply("404", "Not here");
\texit;
}}

# a new call from the carrier (or an agent's phone dialling in): to a live node, the next one on failure
route[TO_NODE] {{
\tif ($sht(callnode=>$ci) != $null) {{
\t\t$du = $sht(callnode=>$ci);
\t\txlog("L_INFO", "call retried (credentials): to the same node $du\\n");
\t\trecord_route();
\t\troute(RELAY);
\t}}
\tif (!ds_select_dst("{DISPATCHER_SET}", "{ALGORITHM}")) {{
\t\txlog("L_ERR", "no live node for a call from $si:$sp\\n");
\t\tsl_send_reply("503", "Service Unavailable");
\t\texit;
\t}}
\txlog("L_INFO", "new call to node $du\\n");
\t# a node answers its callers at once (the IVR): one that took the call but gave no answer within
\t# {ANSWER_TIMER_MS // 1000} s is dead or stuck, and the caller goes to the next node
\tt_set_fr({ANSWER_TIMER_MS}, {s.fr_timer_ms});
\t$sht(callnode=>$ci) = $du;
\trecord_route();
\tt_on_failure("DS_FAIL");
\troute(RELAY);
}}

# a node rings an agent: the phone's registration, and never two calls at once for one agent
route[TO_AGENT] {{
\t$var(agent) = $rU;
\tif (!lookup("location")) {{
\t\txlog("L_INFO", "agent $rU is not registered\\n");
\t\tsl_send_reply("480", "Temporarily Unavailable");
\t\texit;
\t}}
\tlock("$var(agent)");
\tget_profile_size("agent", "$var(agent)", "$var(calls)");
\tif ($var(calls) > 0) {{
\t\tunlock("$var(agent)");
\t\txlog("L_INFO", "agent $var(agent) is on a call: 486 to $si:$sp\\n");
\t\tsl_send_reply("486", "Busy Here");
\t\texit;
\t}}
\tdlg_manage();
\tset_dlg_profile("agent", "$var(agent)");
\tunlock("$var(agent)");
\txlog("L_INFO", "call from node $si:$sp to agent $var(agent) at $ru\\n");
\trecord_route();
\troute(RELAY);
}}

failure_route[DS_FAIL] {{
\tif (t_is_canceled()) exit;
\tif (t_check_status("5[0-9][0-9]|408") || t_branch_timeout()) {{
\t\txlog("L_WARN", "node $du failed ($T_reply_code): marked down, trying the next one\\n");
\t\tds_mark_dst("ip");
\t\tif (ds_next_dst()) {{
\t\t\t$sht(callnode=>$ci) = $du;
\t\t\tt_on_failure("DS_FAIL");
\t\t\tt_relay();
\t\t\texit;
\t\t}}
\t}}
}}
"""
