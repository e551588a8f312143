"""``ivr up --nodes N``: a private cluster on loopback: Kamailio in front of N nodes (each its own Asterisk and
controller), all sharing one Redis set (a primary, a replica and three Sentinels).

Layout of the workdir::

    cluster.yaml            what ``init`` chose (node names, port base): marks the folder as a cluster's
    secrets.yaml            the secrets every node shares (API token, Redis password, AMI secret)
    kamailio/               kamailio.cfg, dispatcher.list, its control socket; logs/ and pids/
    redis/                  the shared Redis set: primary/, replica/, sentinel1-3/ (configs, data), logs/, pids/
    nodes/<name>/           a node: a Stack workdir of its own (ivr.yaml with ``node: <name>``, Asterisk's
                            config and state, the controller's log)

Ports from the base B: Kamailio B+60 (the ``sip`` every caller dials), the Redis set B+1379..B+1383 (primary,
replica, three Sentinels), node i (1, 2, ...) the single stack's offsets from B+100*i, and the RTP range
B+5000..B+5999 split between the nodes.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..app.config_load import load_secrets, write_secrets
from ..asterisk import conf as asterisk_conf
from .cluster_parts import KamailioProcess
from .redis_ha import DATA_NODES, NAMES as REDIS_PARTS, RedisSet
from .stack import PORT_OFFSETS, StackError, _pid_alive, _port_in_use, _tail, http_url, ports_for, Stack

MAX_NODES = 9
MARKER = "cluster.yaml"


def node_name(i: int) -> str:
    """The name of node ``i`` (0-based): node1, node2, ..."""
    return f"node{i + 1}"


def cluster_ports(base: int, nodes: int) -> dict[str, Any]:
    """Every port of a cluster at ``base``: Kamailio's, the Redis set's (``redis``: the first, ``redis_set``:
    primary, replica, sentinel1..3) and each node's (sip, ami, agi, api, rtp)."""
    width = 1000 // nodes // 2 * 2
    redis = base + PORT_OFFSETS["redis"]
    out: dict[str, Any] = {"kamailio": base + PORT_OFFSETS["sip"], "redis": redis,
                           "redis_set": [redis + i for i in range(len(REDIS_PARTS))], "nodes": []}
    for i in range(nodes):
        p = ports_for(base + 100 * (i + 1))
        start = base + PORT_OFFSETS["rtp_start"] + i * width
        out["nodes"].append({"sip": p["sip"], "ami": p["ami"], "agi": p["agi"], "api": p["api"],
                             "rtp_start": start, "rtp_end": start + width - 1})
    return out


def is_cluster(workdir: str | os.PathLike[str]) -> bool:
    """Whether ``workdir`` holds a cluster (``ivr up --nodes N`` with N > 1), not a single stack."""
    return (Path(workdir) / MARKER).exists()


class Cluster:
    """One workdir holding a private cluster: Kamailio, the shared Redis set and the nodes."""

    def __init__(self, workdir: str | os.PathLike[str]) -> None:
        self.workdir = Path(workdir).resolve()
        self.marker = self.workdir / MARKER
        self.secrets_path = self.workdir / "secrets.yaml"

    # ------------------------------------------------------------------ setup
    def init(self, nodes: int = 2, port_base: int | None = None, extra: Mapping[str, Any] | None = None) -> None:
        """Create the workdir, the shared secrets (if absent) and each node's config. ``extra`` holds config
        keys every node gets (dialplans_dir, agents, ...); a node's ports, name, Redis and cluster keys win."""
        if not 2 <= nodes <= MAX_NODES:
            raise StackError(f"--nodes: 1 (a single stack) or 2 to {MAX_NODES}, got {nodes}")
        if (self.workdir / "ivr.yaml").exists() and not self.marker.exists():
            raise StackError(f"{self.workdir} holds a single stack: use another workdir for a cluster")
        if self.marker.exists():
            known = self._meta()
            if known["nodes"] != nodes or (port_base is not None and known["port_base"] != port_base):
                raise StackError(f"{self.workdir} holds a cluster of {known['nodes']} nodes at port base "
                                 f"{known['port_base']}: use another workdir, or the same --nodes/--port-base")
        base = port_base if port_base is not None else self._meta()["port_base"] if self.marker.exists() else 15000
        self.workdir.mkdir(parents=True, exist_ok=True)
        secrets = load_secrets(self.secrets_path) if self.secrets_path.exists() else {}
        changed = False
        for key in ("ami_secret", "api_token", "redis_password"):
            if not secrets.get(key):
                secrets[key] = asterisk_conf.new_secret(32)
                changed = True
        for agent in (extra or {}).get("agents") or []:   # one SIP password per agent, the same on every node
            key = f"agent:{agent.get('id')}" if isinstance(agent, Mapping) else ""
            if key and not agent.get("password") and not secrets.get(key):
                secrets[key] = asterisk_conf.new_secret(12)
                changed = True
        if changed or not self.secrets_path.exists():
            write_secrets(self.secrets_path, secrets)
        self.marker.write_text(yaml.safe_dump({"nodes": nodes, "port_base": base}, sort_keys=False),
                               encoding="utf-8")
        ports = cluster_ports(base, nodes)
        redis = self.redis()
        for i, p in enumerate(ports["nodes"]):
            stack = self.node(i)
            stack.workdir.mkdir(parents=True, exist_ok=True)
            write_secrets(stack.secrets_path, secrets)
            data: dict[str, Any] = {k: v for k, v in (extra or {}).items()}
            data.update({
                "node": node_name(i),
                "asterisk": {**dict(data.get("asterisk") or {}), "sip_port": p["sip"], "ami_port": p["ami"],
                             "rtp_start": p["rtp_start"], "rtp_end": p["rtp_end"]},
                "agi": {**dict(data.get("agi") or {}), "port": p["agi"]},
                "api": {**dict(data.get("api") or {}), "port": p["api"]},
                "redis": {**dict(data.get("redis") or {}), **redis.client_config()},
                "cluster": {**dict(data.get("cluster") or {}), "enabled": True, "sip_proxy": self.sip()},
            })
            stack.init(port_base=None, extra=data)

    def _meta(self) -> dict[str, int]:
        if not self.marker.exists():
            raise StackError(f"no cluster in {self.workdir}: run `ivr up --workdir {self.workdir} --nodes N`")
        data = yaml.safe_load(self.marker.read_text(encoding="utf-8")) or {}
        return {"nodes": int(data["nodes"]), "port_base": int(data["port_base"])}

    def ports(self) -> dict[str, Any]:
        meta = self._meta()
        return cluster_ports(meta["port_base"], meta["nodes"])

    def secrets(self) -> dict[str, str]:
        return load_secrets(self.secrets_path)

    def sip(self) -> str:
        return f"127.0.0.1:{self.ports()['kamailio']}"

    def node(self, i: int) -> Stack:
        """Node ``i``'s stack (Asterisk and controller; the Redis is the cluster's)."""
        return Stack(self.workdir / "nodes" / node_name(i), services=("asterisk", "controller"))

    def nodes(self) -> list[Stack]:
        return [self.node(i) for i in range(self._meta()["nodes"])]

    def redis(self) -> RedisSet:
        """The shared Redis: a primary, a replica and three Sentinels; every node reaches it through the
        Sentinels (``redis.sentinels``)."""
        return RedisSet(self.workdir / "redis", self.ports()["redis"], self.secrets().get("redis_password", ""))

    def kamailio(self) -> KamailioProcess:
        nodes = [f"127.0.0.1:{p['sip']}" for p in self.ports()["nodes"]]
        return KamailioProcess(self.workdir / "kamailio", self.sip(), nodes, allowed=("127.0.0.1",))

    # ------------------------------------------------------------- processes
    def _check_free(self) -> None:
        ports = self.ports()
        busy = [("kamailio (SIP/UDP)", ports["kamailio"], True)]
        busy += [(f"redis {name}", p, False) for name, p in self.redis().ports.items()]
        for i, p in enumerate(ports["nodes"]):
            busy += [(f"{node_name(i)} sip", p["sip"], True), (f"{node_name(i)} ami", p["ami"], False),
                     (f"{node_name(i)} agi", p["agi"], False), (f"{node_name(i)} api", p["api"], False)]
        for what, port, udp in busy:
            if _port_in_use("127.0.0.1", port, udp):
                raise StackError(f"port {port} ({what}) on 127.0.0.1 is already in use: is another stack running? "
                                 "Stop it with `ivr down`, or pick other ports with --port-base")

    def up(self, timeout: float = 90.0) -> dict[str, Any]:
        """Start the Redis set, every node (Asterisk, then its controller) and Kamailio; wait until each is
        healthy."""
        for tool in ("asterisk", "redis-server", "redis-sentinel", "kamailio", "kamcmd"):
            if shutil.which(tool) is None:
                raise StackError(f"{tool} is not installed: run scripts/install.sh first")
        running = [n for n, pid in self._pids().items() if pid]
        if running:
            raise StackError(f"a cluster is already running in {self.workdir} ({', '.join(running)}); "
                             f"run `ivr down --workdir {self.workdir}` first")
        self._check_free()
        deadline = time.monotonic() + timeout
        try:
            redis = self.redis()
            redis.start(deadline)
            from ..store.tokens import register_token_sync   # the token works before any controller is up

            cfg = self.node(0).config()
            register_token_sync(None, redis.password, cfg.redis.prefix, self.secrets()["api_token"],
                                name="admin", role="admin", sentinels=redis.sentinels,
                                master_name=redis.master_name)
            for stack in self.nodes():
                stack.up(timeout=max(1.0, deadline - time.monotonic()))
            kam = self.kamailio()
            kam.start(deadline)
            kam.wait_probed(deadline)
        except BaseException:
            self.down()
            raise
        return self.describe()

    def start_kamailio(self, timeout: float = 20.0) -> None:
        kam = self.kamailio()
        if kam.procs.pid("kamailio") is not None:
            raise StackError("Kamailio is already running")
        kam.start(time.monotonic() + timeout)

    def stop_kamailio(self) -> None:
        self.kamailio().stop()

    def restart_kamailio(self, timeout: float = 20.0) -> None:
        """Stop Kamailio and start it again (its registrations and dialogs are in memory: they start empty)."""
        self.stop_kamailio()
        self.start_kamailio(timeout)

    def kill_node_asterisk(self, i: int) -> int:
        """SIGKILL node ``i``'s Asterisk (a crash, no goodbye); returns the pid killed."""
        pid = self.node(i)._read_pid("asterisk")
        if pid is None:
            raise StackError(f"{node_name(i)}'s Asterisk is not running")
        os.kill(pid, signal.SIGKILL)
        return pid

    def restart_node_asterisk(self, i: int, timeout: float = 30.0) -> None:
        self.node(i).restart_asterisk(timeout)

    def kill_node_controller(self, i: int) -> int:
        """SIGKILL node ``i``'s controller (a crash: no goodbye, its lease and claims left as they are); its
        Asterisk goes on. Returns the pid killed, once it is gone."""
        stack = self.node(i)
        pid = stack._read_pid("controller")
        if pid is None:
            raise StackError(f"{node_name(i)}'s controller is not running")
        os.kill(pid, signal.SIGKILL)
        end = time.monotonic() + 10
        while _pid_alive(pid):
            if time.monotonic() > end:
                raise StackError(f"{node_name(i)}'s controller (pid {pid}) still runs after SIGKILL")
            time.sleep(0.02)
        return pid

    def restart_node_controller(self, i: int, timeout: float = 30.0) -> None:
        """Start node ``i``'s controller again (after a crash or a kill) and wait until it is healthy."""
        self.node(i).restart_controller(timeout)

    def calls_processed(self, i: int) -> int:
        """Calls node ``i``'s Asterisk has handled since it started (``core show channels count``)."""
        res = self.node(i)._asterisk_cli("core show channels count")
        for line in res.stdout.splitlines():
            if "calls processed" in line or "call processed" in line:
                return int(line.split()[0])
        raise StackError(f"{node_name(i)}'s Asterisk did not say how many calls it processed: {res.stdout!r}"
                         f"{res.stderr!r}")

    def _pids(self) -> dict[str, int | None]:
        pids: dict[str, int | None] = {}
        if not self.marker.exists():
            return pids
        pids.update({f"redis.{name}": pid for name, pid in self.redis().pids().items()})
        pids.update(self.kamailio().pids())
        for i, stack in enumerate(self.nodes()):
            for service in stack.services:
                pids[f"{node_name(i)}.{service}"] = stack._read_pid(service)
        return pids

    def leader(self) -> str:
        """The node that leads the balancing loop now ("" when none): from the lease in Redis, read from the
        primary the Sentinels name."""
        from ..store.sync import current_leader

        redis = self.redis()
        try:
            prefix = self.node(0).config().redis.prefix
        except Exception:   # noqa: BLE001 - no config: no leader to name
            return ""
        return current_leader(None, password=redis.password, prefix=prefix, sentinels=redis.sentinels,
                              master_name=redis.master_name)

    def redis_parts(self) -> dict[str, Any]:
        """The Redis set as ``describe()`` and ``status()`` show it: ``primary`` (host:port the Sentinels name,
        "" when none does) and which part that is (``primary_part``), ``sentinels``, ``master_name``, and each
        part (primary, replica, sentinel1..3) with its port, pid and what it says (a data node's role and
        link, a Sentinel's primary); ``answers``: the named primary runs and says it is the primary."""
        redis = self.redis()
        st = redis.status()
        current = st.get("current_primary")
        part = next((n for n in DATA_NODES if st[n]["port"] == current), "")
        answers = bool(part) and st[part].get("role") == "primary"
        return {"primary": f"127.0.0.1:{current}" if current else "", "primary_part": part,
                "sentinels": redis.sentinels, "master_name": redis.master_name, "answers": answers,
                "parts": {name: st[name] for name in REDIS_PARTS}}

    def describe(self) -> dict[str, Any]:
        """The JSON ``ivr up`` prints: the single stack's keys (``sip`` is Kamailio's, ``api`` etc. the first
        node's) plus ``nodes`` and ``leader``."""
        nodes = []
        for stack in self.nodes():
            cfg = stack.config()
            nodes.append({"name": cfg.node, "api": http_url(cfg.api.host, cfg.api.port),
                          "agi": f"{cfg.agi.host}:{cfg.agi.port}", "ami": f"{cfg.asterisk.ami_host}:{cfg.asterisk.ami_port}",
                          "sip": f"{cfg.asterisk.sip_host}:{cfg.asterisk.sip_port}",
                          "asterisk_pid": stack._read_pid("asterisk"), "workdir": str(stack.workdir)})
        first = self.node(0).config()
        redis = self.redis_parts()
        return {"sip": self.sip(), "ami": nodes[0]["ami"], "agi": nodes[0]["agi"], "api": nodes[0]["api"],
                "redis": f"redis://{redis['primary']}/0" if redis["primary"] else "",
                "inbound_extension": first.asterisk.inbound_extension,
                "token": self.secrets().get("api_token", ""), "workdir": str(self.workdir),
                "nodes": nodes, "leader": self.leader(), "redis_set": redis}

    # ------------------------------------------------------------------- stop
    def down(self, timeout: float = 15.0) -> list[str]:
        """Stop Kamailio, every node (controller, then Asterisk) and the Redis set (Sentinels first); check
        nothing is left running or listening on the cluster's ports. Returns what was stopped."""
        if not self.marker.exists():
            return []
        stopped = self.kamailio().stop(timeout)
        for i, stack in enumerate(self.nodes()):
            stopped += [f"{node_name(i)}.{s}" for s in stack.down(timeout)]
        stopped += [f"redis.{name}" for name in self.redis().stop(timeout)]
        left = [n for n, pid in self._pids().items() if pid]
        ports = self.ports()
        listening = [p for p in (ports["kamailio"], *[n["sip"] for n in ports["nodes"]])
                     if _port_in_use("127.0.0.1", p, udp=True)]
        listening += [p for p in (*ports["redis_set"], *[n[k] for n in ports["nodes"] for k in ("ami", "agi", "api")])
                      if _port_in_use("127.0.0.1", p)]
        if left or listening:
            raise StackError(f"after down, still running: {', '.join(left) or 'nothing'}; still listening: "
                             f"{', '.join(map(str, listening)) or 'nothing'}\n"
                             f"{_tail(self.workdir / 'kamailio' / 'logs' / 'kamailio.log', 10)}")
        return stopped

    def status(self) -> dict[str, Any]:
        """Every part's state: Kamailio (and its view of the nodes), the Redis set (each part, which is the
        primary), each node; ``healthy`` when all run, Kamailio answers and sees every node active, the
        Sentinels name a primary that answers as one, and every controller is healthy."""
        out: dict[str, Any] = {"workdir": str(self.workdir), "cluster": True}
        kam = self.kamailio().status()
        out["kamailio"] = kam
        out["redis"] = self.redis_parts()
        out["nodes"] = {}
        for i, stack in enumerate(self.nodes()):
            out["nodes"][node_name(i)] = stack.status()
        out["leader"] = self.leader() if out["redis"]["answers"] else ""
        expected = {f"sip:{n}" for n in self.kamailio().settings.nodes}
        active = {uri for uri, flags in kam["nodes"].items() if flags.startswith("A")}
        redis_up = all(p["running"] for p in out["redis"]["parts"].values())
        out["healthy"] = (kam["running"] and kam["answers"] and expected <= active and out["redis"]["answers"]
                          and redis_up and all(n.get("healthy") for n in out["nodes"].values()))
        return out

