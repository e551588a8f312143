"""Kamailio's configuration (ivr/asterisk/kamailio.py), a cluster node's Asterisk configuration and
``ivr asterisk-conf render`` for a node of a cluster. The rendered kamailio.cfg is checked by Kamailio itself
(``kamailio -c -f``): scripts/install.sh installs it, so a missing kamailio fails these tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ivr.app.cli import main as cli_main
from ivr.app.config import ConfigError
from ivr.app.config_load import from_mapping
from ivr.asterisk import kamailio
from ivr.asterisk.conf import AsteriskDirs, render
from ivr.devtools.cluster import cluster_ports

from .test_asterisk_conf import AMI_SECRET, conf_sections, make_config, section

NODES = ("127.0.0.1:15160", "127.0.0.1:15260")


def settings(tmp_path: Path, **kw: object) -> kamailio.KamailioSettings:
    data: dict[str, object] = {"listen": "127.0.0.1:15060", "nodes": NODES, "allowed": ("10.1.2.0/24",),
                               "dispatcher_file": str(tmp_path / "dispatcher.list"),
                               "ctl_socket": str(tmp_path / "ctl")}
    data.update(kw)
    return kamailio.KamailioSettings(**data)  # type: ignore[arg-type]  # test data of the right types


def kamailio_check(cfg_text: str, nodes: tuple[str, ...], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("kamailio") is None:
        pytest.fail("kamailio is not installed: run `bash scripts/install.sh` first")
    (tmp_path / "dispatcher.list").write_text(kamailio.render_dispatcher(nodes), encoding="utf-8")
    path = tmp_path / "kamailio.cfg"
    path.write_text(cfg_text, encoding="utf-8")
    return subprocess.run(["kamailio", "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)


def test_dispatcher_list_holds_every_node_in_set_1() -> None:
    text = kamailio.render_dispatcher(NODES)
    rows = [line.split() for line in text.splitlines() if not line.startswith("#")]
    assert rows == [["1", "sip:127.0.0.1:15160", "0", "0", "duid=node1"],
                    ["1", "sip:127.0.0.1:15260", "0", "0", "duid=node2"]]


def test_rendered_cfg_is_accepted_by_kamailio(tmp_path: Path) -> None:
    s = settings(tmp_path)
    check = kamailio_check(kamailio.render_cfg(s), NODES, tmp_path)
    assert check.returncode == 0, (check.stdout + check.stderr)[-3000:]
    assert "config file ok" in check.stdout + check.stderr


def test_cfg_probes_fails_over_records_the_route_and_guards_busy_agents(tmp_path: Path) -> None:
    text = kamailio.render_cfg(settings(tmp_path))
    assert "listen=udp:127.0.0.1:15060" in text
    assert f'"list_file", "{tmp_path / "dispatcher.list"}"' in text
    assert 'modparam("dispatcher", "ds_probing_mode", 1)' in text
    assert 'modparam("dispatcher", "ds_ping_interval", 2)' in text
    assert 'modparam("dispatcher", "ds_probing_threshold", 1)' in text
    assert 'modparam("tm", "fr_timer", 2000)' in text
    assert 'ds_select_dst("1", "4")' in text                       # round-robin over set 1
    failure = text[text.index("failure_route[DS_FAIL]"):]
    assert 't_check_status("5[0-9][0-9]|408") || t_branch_timeout()' in failure
    assert "ds_mark_dst" in failure and "ds_next_dst()" in failure
    assert text.count("record_route();") == 3 and "loose_route()" in text
    to_node = text[text.index("route[TO_NODE]"):text.index("route[TO_AGENT]")]
    assert to_node.index("$du = $sht(callnode=>$ci)") < to_node.index("ds_select_dst")   # a retry: same node
    assert 'save("location", "0x04")' in text and 'lookup("location")' in text
    agent = text[text.index("route[TO_AGENT]"):text.index("failure_route")]
    assert agent.index("get_profile_size") < agent.index('sl_send_reply("486", "Busy Here")') \
        < agent.index('set_dlg_profile("agent"')
    assert "rtpproxy" not in text and "rtpengine" not in text      # never on the media path
    allowed = text[text.index("route[ALLOWED]"):text.index("route[RELAY]")]
    assert 'is_in_subnet("$si", "10.1.2.0/24")' in allowed and 'is_in_subnet("$si", "127.0.0.1/32")' in allowed
    assert 'sl_send_reply("403", "Forbidden")' in text
    assert f'"binrpc", "unix:{tmp_path / "ctl"}"' in text


def test_bad_settings_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cluster\.nodes: list every"):
        kamailio.render_cfg(settings(tmp_path, nodes=()))
    with pytest.raises(ConfigError, match=r"cluster\.nodes\[1\]: expected host:port"):
        kamailio.render_cfg(settings(tmp_path, nodes=("127.0.0.1:5060", "node-b")))
    with pytest.raises(ConfigError, match=r"cluster\.allowed\[0\]"):
        kamailio.render_cfg(settings(tmp_path, allowed=("not-a-net",)))
    with pytest.raises(ConfigError, match="listed twice"):
        kamailio.render_cfg(settings(tmp_path, nodes=(NODES[0], NODES[0])))


def test_config_checks_cluster_nodes_and_allowed_at_load() -> None:
    with pytest.raises(ConfigError, match=r"cluster\.nodes\[0\]"):
        from_mapping({"cluster": {"nodes": ["nohost"]}}, {})
    with pytest.raises(ConfigError, match=r"cluster\.allowed\[0\]"):
        from_mapping({"cluster": {"allowed": ["10.0.0.300"]}}, {})
    cfg = from_mapping({"cluster": {"enabled": True, "sip_proxy": "10.0.0.5:5060",
                                    "nodes": ["10.0.0.11:5060", "10.0.0.12:5060"], "allowed": ["10.2.0.0/16"]}}, {})
    s = kamailio.from_config(cfg, "/etc/kamailio/dispatcher.list")
    assert s.nodes == ("10.0.0.11:5060", "10.0.0.12:5060") and s.listen == "10.0.0.5:5060"
    assert s.allowed == ("10.2.0.0/16", "127.0.0.1")               # plus the trunk's addresses
    with pytest.raises(ConfigError, match="cluster.enabled"):
        kamailio.from_config(from_mapping({}, {}), "/x/dispatcher.list")


def test_a_cluster_node_reaches_agents_through_kamailio_and_takes_its_calls_as_the_trunk(tmp_path: Path) -> None:
    cfg = make_config(cluster={"enabled": True, "sip_proxy": "127.0.0.2:17060"}, node="node1")
    dirs = AsteriskDirs.under(tmp_path / "etc", tmp_path / "state")
    render(cfg, dirs, {"ami_secret": AMI_SECRET})
    pjsip = conf_sections((dirs.etc / "pjsip.conf").read_text(encoding="utf-8"))
    for agent in ("1001", "1002"):
        aor = section(pjsip, agent, "aor")
        assert aor["contact"] == f"sip:{agent}@127.0.0.2:17060" and "qualify_frequency" not in aor
        assert section(pjsip, agent, "endpoint")["rewrite_contact"] == "no"
    matches = [v for n, kv in pjsip if n == "trunk" for k, v in kv if k == "match"]
    assert matches == ["127.0.0.1", "127.0.0.2"]
    # the node's name prefixes its channels' uniqueids: two nodes sharing one Redis never reuse a call's id
    asterisk_conf = conf_sections((dirs.etc / "asterisk.conf").read_text(encoding="utf-8"))
    options = dict(next(kv for n, kv in asterisk_conf if n == "options"))
    assert options["systemname"] == "node1"


def test_a_single_node_keeps_its_agents_contacts(tmp_path: Path) -> None:
    dirs = AsteriskDirs.under(tmp_path / "etc", tmp_path / "state")
    render(make_config(), dirs, {"ami_secret": AMI_SECRET})
    pjsip = conf_sections((dirs.etc / "pjsip.conf").read_text(encoding="utf-8"))
    assert section(pjsip, "1001", "aor")["contact"] == "sip:1001@127.0.0.1:5071"
    assert section(pjsip, "1002", "aor")["qualify_frequency"] == "30"
    assert section(pjsip, "1001", "endpoint")["rewrite_contact"] == "yes"
    assert [v for n, kv in pjsip if n == "trunk" for k, v in kv if k == "match"] == ["127.0.0.1"]
    assert "systemname" not in (dirs.etc / "asterisk.conf").read_text(encoding="utf-8").split("[files]")[0]


def test_asterisk_conf_render_writes_kamailio_files_for_a_cluster_node(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "ivr.yaml"
    config.write_text("node: node1\ncluster:\n  enabled: true\n  sip_proxy: 127.0.0.1:17060\n"
                      "  nodes: ['127.0.0.1:17160', '127.0.0.1:17260']\n", encoding="utf-8")
    out = tmp_path / "out"
    assert cli_main(["asterisk-conf", "render", "--config", str(config), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert str(out / "kamailio.cfg") in printed and str(out / "dispatcher.list") in printed
    assert "sip:127.0.0.1:17260" in (out / "dispatcher.list").read_text(encoding="utf-8")
    check = subprocess.run(["kamailio", "-c", "-f", str(out / "kamailio.cfg")], capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0, (check.stdout + check.stderr)[-3000:]


def test_asterisk_conf_render_of_a_single_node_writes_no_kamailio_files(tmp_path: Path) -> None:
    config = tmp_path / "ivr.yaml"
    config.write_text("node: ivr1\n", encoding="utf-8")
    assert cli_main(["asterisk-conf", "render", "--config", str(config), "--out", str(tmp_path / "out")]) == 0
    assert not (tmp_path / "out" / "kamailio.cfg").exists()


def test_cluster_ports_do_not_overlap() -> None:
    ports = cluster_ports(15000, 3)
    flat = [ports["kamailio"], *ports["redis_set"]] + [n[k] for n in ports["nodes"] for k in ("sip", "ami", "agi", "api")]
    assert ports["redis_set"] == [16379, 16380, 16381, 16382, 16383] and ports["redis"] == 16379
    assert len(set(flat)) == len(flat) and ports["kamailio"] == 15060
    ranges = [(n["rtp_start"], n["rtp_end"]) for n in ports["nodes"]]
    assert all(a[1] < b[0] for a, b in zip(ranges, ranges[1:])) and ranges[0][0] == 20000 and ranges[-1][1] <= 20999


def test_cluster_init_gives_each_node_its_ports_name_and_the_shared_secrets(tmp_path: Path) -> None:
    from ivr.devtools.cluster import Cluster, is_cluster
    from ivr.devtools.stack import StackError

    c = Cluster(tmp_path / "c")
    c.init(nodes=2, port_base=30000, extra={"log_level": "DEBUG"})
    assert is_cluster(c.workdir)
    shared = c.secrets()
    cfgs = [stack.config() for stack in c.nodes()]
    assert [cfg.node for cfg in cfgs] == ["node1", "node2"]
    assert [cfg.asterisk.sip_port for cfg in cfgs] == [30160, 30260]
    assert [cfg.api.port for cfg in cfgs] == [30180, 30280]
    assert all(cfg.cluster.enabled and cfg.cluster.sip_proxy == "127.0.0.1:30060" for cfg in cfgs)
    # every node reaches the Redis set through its three Sentinels (B+1381..B+1383)
    assert {cfg.redis.url for cfg in cfgs} == {"redis://127.0.0.1/0"}
    assert all(cfg.redis.sentinels == ("127.0.0.1:31381", "127.0.0.1:31382", "127.0.0.1:31383")
               and cfg.redis.master_name == "ivr" for cfg in cfgs)
    assert all(cfg.redis.password == shared["redis_password"] and cfg.log_level == "DEBUG" for cfg in cfgs)
    assert all(stack.secrets()["api_token"] == shared["api_token"] for stack in c.nodes())
    c.init(nodes=2)   # again, without --port-base: the same ports
    assert c.node(1).config().asterisk.sip_port == 30260
    with pytest.raises(StackError, match="cluster of 2 nodes"):
        c.init(nodes=3)
    with pytest.raises(StackError, match="--nodes"):
        Cluster(tmp_path / "d").init(nodes=1)


def test_up_without_nodes_refuses_a_cluster_workdir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ivr.devtools.cluster import Cluster

    Cluster(tmp_path / "c").init(nodes=2, port_base=30000)
    assert cli_main(["up", "--workdir", str(tmp_path / "c")]) == 1
    assert "holds a cluster" in capsys.readouterr().err
