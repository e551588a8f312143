"""A Redis primary, one replica and three Sentinels on 127.0.0.1, under one directory (tests, ``ivr up``).

Why this shape: two data nodes are the fewest that survive losing one, and three Sentinels with a quorum of
two are the fewest that can agree the primary is gone and elect one of themselves to promote the replica
while one Sentinel is lost too. Passwords live in the config files (0600, in 0700 folders), never on a
command line. The files are written once: Redis and Sentinel rewrite them as roles change (a failover is
written to every Sentinel's file, a demoted primary's file gets its ``replicaof``), so starting again after
a stop keeps the roles the last failover left. The names ``primary`` and ``replica`` are the roles each node
had at the first start; ``primary()`` asks the Sentinels which one is the primary now.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

from ..store.sync import ask, replication, sentinel_master
from .stack import StackError, _pid_alive, _port_in_use, _tail, read_pidfile, remove_pidfile, write_pidfile

DATA_NODES = ("primary", "replica")
SENTINELS = ("sentinel1", "sentinel2", "sentinel3")
NAMES = DATA_NODES + SENTINELS
PORT_OFFSETS = {name: i for i, name in enumerate(NAMES)}   # base, base+1: data nodes; base+2..4: Sentinels
QUORUM = 2
DOWN_AFTER_MS = 1000        # a primary silent this long is down for a Sentinel (then two must agree)
FAILOVER_TIMEOUT_MS = 3000  # a failover not done in this time is abandoned and tried again after twice as long
# Sentinel 7.0 rewrites ``sentinel auth-pass`` into its file without quotes: a space or a quote in the password
# would leave a file it cannot read at its next start. ``ivr`` generates URL-safe secrets, which fit.
PASSWORD_RE = re.compile(r"[A-Za-z0-9_.~+=@%^!*-]{1,256}")


def quoted(value: str) -> str:
    """A value as Redis config files take it, in double quotes with backslash escapes."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def data_conf(port: int, data_dir: Path, password: str, replica_of: int | None = None) -> str:
    """The config of a data node: loopback only, AOF fsynced every second, the password for clients and
    (``masterauth``) for its own link to a primary, as a replica of ``127.0.0.1:replica_of`` if given.
    Both nodes carry ``masterauth``: a primary demoted by a failover must be able to follow the new one."""
    lines = [
        "# a data node of a Redis primary + replica + three Sentinels; Redis rewrites it when its role changes",
        f"port {port}", "bind 127.0.0.1", "protected-mode yes", f"dir {quoted(str(data_dir))}",
        "daemonize no", 'logfile ""', "appendonly yes", "appendfsync everysec", 'save ""',
        "repl-diskless-sync yes", "repl-diskless-sync-delay 0", "replica-read-only yes",
        f"requirepass {quoted(password)}", f"masterauth {quoted(password)}",
    ]
    if replica_of is not None:
        lines.append(f"replicaof 127.0.0.1 {replica_of}")
    return "\n".join(lines) + "\n"


def sentinel_conf(port: int, sentinel_dir: Path, password: str, master_name: str, primary_port: int,
                  down_after_ms: int = DOWN_AFTER_MS, failover_timeout_ms: int = FAILOVER_TIMEOUT_MS) -> str:
    """The config of one Sentinel watching ``master_name`` at 127.0.0.1:``primary_port`` with a quorum of 2;
    ``requirepass`` is the data nodes' password too (clients and the other Sentinels use it)."""
    return "\n".join([
        "# a Sentinel of a Redis primary + replica; Sentinel rewrites it with what it learns (replicas, peers, epochs)",
        f"port {port}", "bind 127.0.0.1", "protected-mode yes", f"dir {quoted(str(sentinel_dir))}",
        "daemonize no", 'logfile ""', "sentinel resolve-hostnames no", "sentinel announce-hostnames no",
        f"requirepass {quoted(password)}",
        f"sentinel monitor {master_name} 127.0.0.1 {primary_port} {QUORUM}",
        f"sentinel auth-pass {master_name} {quoted(password)}",
        f"sentinel down-after-milliseconds {master_name} {down_after_ms}",
        f"sentinel failover-timeout {master_name} {failover_timeout_ms}",
        f"sentinel parallel-syncs {master_name} 1",
    ]) + "\n"


def conf_value(text: str, key: str) -> str | None:
    """The value of the last ``key`` line of a Redis config text (without the key), or None."""
    found = None
    for line in text.splitlines():
        parts = line.strip().split(None, 1)
        if parts and parts[0].lower() == key.lower():
            found = parts[1] if len(parts) > 1 else ""
    return found


def with_replicaof(text: str, primary_port: int | None) -> str:
    """A data node's config text following 127.0.0.1:``primary_port`` (None: a primary, no ``replicaof``)."""
    keep = [line for line in text.splitlines() if line.strip().split(None, 1)[:1] not in (["replicaof"], ["slaveof"])]
    if primary_port is not None:
        keep.append(f"replicaof 127.0.0.1 {primary_port}")
    return "\n".join(keep) + "\n"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


class RedisSet:
    """A Redis primary, one replica and three Sentinels on 127.0.0.1 ports ``base_port`` .. ``base_port + 4``
    (primary, replica, sentinel1..3), with configs, data, logs and pid files under ``root``."""

    def __init__(self, root: Path, base_port: int, password: str, master_name: str = "ivr", *,
                 down_after_ms: int = DOWN_AFTER_MS, failover_timeout_ms: int = FAILOVER_TIMEOUT_MS) -> None:
        if not PASSWORD_RE.fullmatch(password):
            raise StackError("Redis set: the password (secrets.yaml redis_password) must be 1-256 letters, digits "
                             "or _.~+=@%^!*- (Sentinel writes it back into its file unquoted)")
        if not 0 < base_port < 65536 - len(NAMES):
            raise StackError(f"Redis set: base port {base_port} leaves no room for {len(NAMES)} ports")
        self.root = Path(root).resolve()
        self.base_port = base_port
        self.password = password
        self.master_name = master_name
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # ----------------------------------------------------------------- layout
    @property
    def ports(self) -> dict[str, int]:
        """Each part's port: primary, replica, sentinel1, sentinel2, sentinel3."""
        return {name: self.base_port + off for name, off in PORT_OFFSETS.items()}

    @property
    def sentinels(self) -> list[str]:
        """The Sentinels' addresses as ``redis.sentinels`` takes them ("127.0.0.1:port")."""
        return [f"127.0.0.1:{self.ports[name]}" for name in SENTINELS]

    def client_config(self, db: int = 0) -> dict[str, Any]:
        """What a controller's ``redis:`` section gets to reach the set (the password stays in secrets.yaml):
        the database number in ``url``, the Sentinels and the name they monitor."""
        return {"url": f"redis://127.0.0.1/{db}", "sentinels": self.sentinels, "master_name": self.master_name}

    def dir(self, name: str) -> Path:
        return self.root / name

    def conf_path(self, name: str) -> Path:
        return self.dir(name) / f"{name}.conf"

    def log_path(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def pid_path(self, name: str) -> Path:
        return self.root / "pids" / f"{name}.pid"

    def render(self, name: str) -> str:
        """The first config text of ``name`` (as written when its file is absent)."""
        p = self.ports
        if name in DATA_NODES:
            return data_conf(p[name], self.dir(name), self.password, None if name == "primary" else p["primary"])
        return sentinel_conf(p[name], self.dir(name), self.password, self.master_name, p["primary"],
                             self.down_after_ms, self.failover_timeout_ms)

    def write_configs(self) -> None:
        """Create the folders (0700) and each absent config file (0600); a present one is kept (it holds the
        roles Redis and Sentinel wrote into it) unless it was written for another port."""
        for d in (self.root, self.root / "logs", self.root / "pids", *(self.dir(n) for n in NAMES)):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)
        for name in NAMES:
            path = self.conf_path(name)
            if path.exists():
                port = conf_value(path.read_text(encoding="utf-8"), "port")
                if port != str(self.ports[name]):
                    raise StackError(f"Redis set: {path} is for port {port}, not {self.ports[name]} ({name}): "
                                     f"start with the same base port, or remove {self.root}")
                os.chmod(path, 0o600)
            else:
                _write_private(path, self.render(name))

    # -------------------------------------------------------------- processes
    def pids(self) -> dict[str, int | None]:
        """Each part's pid while it runs, else None."""
        return {name: self._pid(name) for name in NAMES}

    def _pid(self, name: str) -> int | None:
        proc = self._procs.get(name)
        if proc is not None and proc.poll() is not None:
            del self._procs[name]
        elif proc is not None:
            return proc.pid        # our own child, still running (its /proc entry may not show redis yet)
        # a pid file left by a crash may name a pid reused since by something else: never signal that
        pid = read_pidfile(self.pid_path(name))
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if pid is not None else b""
        except OSError:
            return None
        return pid if b"redis" in cmdline else None

    def _spawn(self, name: str) -> None:
        # umask 077: the files Redis and Sentinel write (their config rewrites with the password, the AOF)
        # are the owner's only, as the ones written here
        argv = ["redis-sentinel" if name in SENTINELS else "redis-server", str(self.conf_path(name))]
        with open(self.log_path(name), "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    cwd=self.dir(name), start_new_session=True, umask=0o077)
        self._procs[name] = proc
        write_pidfile(self.pid_path(name), proc.pid)

    def _fail(self, name: str, why: str) -> StackError:
        return StackError(f"Redis set: {name} (port {self.ports[name]}) {why}:\n{_tail(self.log_path(name))}")

    def _wait(self, name: str, deadline: float, what: str, check: Callable[[], str]) -> None:
        """Poll ``check`` (it returns "" when satisfied, else what is missing) until ``deadline``."""
        missing = "not asked yet"
        while True:
            if self._pid(name) is None:
                raise self._fail(name, f"exited before {what}")
            try:
                missing = check()
            except OSError as exc:
                missing = str(exc)
            if not missing:
                return
            if time.monotonic() > deadline:
                raise self._fail(name, f"did not get to {what} in time ({missing})")
            time.sleep(0.05)

    def _answers(self, name: str) -> str:
        return "" if ask(self.ports[name], self.password, "PING") in ("PONG", True) else "no PONG"

    def _linked(self, name: str) -> str:
        info = replication(self.ports[name], self.password)
        if info.get("role") != "slave":
            return f"role {info.get('role')}"
        return "" if info.get("master_link_status") == "up" else f"link {info.get('master_link_status')}"

    def _watching(self, name: str) -> str:
        m = sentinel_master(self.ports[name], self.password, self.master_name)
        flags = m.get("flags", "").split(",")
        if "master" not in flags or "s_down" in flags or "o_down" in flags:
            return f"master flags {m.get('flags')}"
        if m.get("num-slaves") != "1" or m.get("num-other-sentinels") != "2":
            return f"sees {m.get('num-slaves')} replica(s), {m.get('num-other-sentinels')} other Sentinel(s)"
        return ""

    def start(self, deadline: float) -> None:
        """Start all five and wait (until ``deadline``, a ``time.monotonic()``) for the primary to answer, the
        replica to be in sync and every Sentinel to know the primary, one replica and two other Sentinels.
        On a failure everything started is stopped and StackError names the part with its log's tail."""
        for tool in ("redis-server", "redis-sentinel"):
            if shutil.which(tool) is None:
                raise StackError(f"Redis set: {tool} is not installed: run scripts/install.sh first")
        running = {n: pid for n, pid in self.pids().items() if pid is not None}
        if running:
            raise StackError(f"Redis set: already running in {self.root} ({running}): stop it first")
        for name, port in self.ports.items():
            if _port_in_use("127.0.0.1", port):   # as Redis binds: SO_REUSEADDR (a TIME_WAIT is no obstacle)
                raise StackError(f"Redis set: port {port} ({name}) on 127.0.0.1 is already in use")
        self.write_configs()
        primary = self._primary_from_files()
        self.set_roles(primary)
        try:
            order = sorted(DATA_NODES, key=lambda n: self.ports[n] != primary)   # the primary first
            for name in order:
                self._spawn(name)
            for name in order:
                self._wait(name, deadline, "answer PING", partial(self._answers, name))
            for name in SENTINELS:
                self._spawn(name)
            for name in order[1:]:
                self._wait(name, deadline, "sync with the primary", partial(self._linked, name))
            for name in SENTINELS:
                self._wait(name, deadline, "know the primary, the replica and the other Sentinels",
                           partial(self._watching, name))
        except BaseException:
            self.stop()
            raise

    def set_roles(self, primary_port: int) -> None:
        """Make the data nodes' files agree with ``primary_port``: that node without ``replicaof``, the other one
        a replica of it (a node stopped while a failover demoted it would otherwise start as a second primary)."""
        for name in DATA_NODES:
            path = self.conf_path(name)
            follow = None if self.ports[name] == primary_port else primary_port
            _write_private(path, with_replicaof(path.read_text(encoding="utf-8"), follow))

    def _primary_from_files(self) -> int:
        """The primary's port as the Sentinels' files last recorded it (at the first start: ``primary``)."""
        for name in SENTINELS:
            for line in self.conf_path(name).read_text(encoding="utf-8").splitlines():
                words = line.split()
                if words[:3] == ["sentinel", "monitor", self.master_name] and len(words) >= 5 and words[4].isdigit():
                    return int(words[4])
        return self.ports["primary"]

    def stop(self, timeout: float = 10.0) -> list[str]:
        """Stop every part (Sentinels first, so none starts a failover while the data nodes go); SIGKILL
        what is still there after ``timeout``. Returns the names stopped; nothing of the set runs after."""
        stopped = []
        for name in SENTINELS + ("replica", "primary"):
            pid = self._pid(name)
            if pid is not None:
                self._signal_and_wait(name, pid, signal.SIGTERM, timeout)
                stopped.append(name)
            remove_pidfile(self.pid_path(name))
        left = {n: p for n, p in self.pids().items() if p is not None}
        if left:
            raise StackError(f"Redis set: still running after stop: {left}")
        return stopped

    def _signal_and_wait(self, name: str, pid: int, sig: int, timeout: float) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        end = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < end:
            self._reap(name)
            time.sleep(0.02)
        if _pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            while _pid_alive(pid) and time.monotonic() < end + 5:
                time.sleep(0.02)
        self._reap(name)

    def _reap(self, name: str) -> None:
        proc = self._procs.get(name)
        if proc is not None and proc.poll() is not None:
            del self._procs[name]

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` to one part (a crash, for fault tests) and wait up to 5 s for it to exit when the
        signal ends it; returns the pid signalled."""
        if name not in NAMES:
            raise StackError(f"Redis set: no part named {name!r} (one of {', '.join(NAMES)})")
        pid = self._pid(name)
        if pid is None:
            raise StackError(f"Redis set: {name} is not running")
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self._signal_and_wait(name, pid, sig, 5.0)
        else:
            os.kill(pid, sig)
        return pid

    def restart(self, name: str, timeout: float = 20.0) -> None:
        """Start one stopped part again and wait until it is back: a data node that is not the primary now
        starts as a replica of the one Sentinel names (its old data is replaced by a sync, never served)
        and is in sync; a Sentinel knows the primary again."""
        if name not in NAMES:
            raise StackError(f"Redis set: no part named {name!r} (one of {', '.join(NAMES)})")
        if self._pid(name) is not None:
            raise StackError(f"Redis set: {name} is still running (pid {self._pid(name)})")
        deadline = time.monotonic() + timeout
        if name in DATA_NODES:
            primary = self.primary()
            follow = None if primary == self.ports[name] else primary
            path = self.conf_path(name)
            _write_private(path, with_replicaof(path.read_text(encoding="utf-8"), follow))
            self._spawn(name)
            self._wait(name, deadline, "answer PING", lambda: self._answers(name))
            if follow is not None:
                self._wait(name, deadline, "sync with the primary", lambda: self._linked(name))
        else:
            self._spawn(name)
            self._wait(name, deadline, "know the primary", lambda: self._knows_primary(name))

    def _knows_primary(self, name: str) -> str:
        flags = sentinel_master(self.ports[name], self.password, self.master_name).get("flags", "")
        return "" if "master" in flags.split(",") else f"master flags {flags}"

    def failover(self, timeout: float = 20.0) -> int:
        """A planned switch (``SENTINEL FAILOVER``): the replica becomes the primary while the old one is still
        up; waits until every running Sentinel names it and returns its port. The old primary keeps taking
        writes until the clients move (the store: within ``FOLLOW_S`` of the switch), and Sentinel demotes it
        some seconds later, dropping them: see docs/cluster.md."""
        before = self.primary()
        sentinel = next((n for n in SENTINELS if self._pid(n) is not None), None)
        if sentinel is None:
            raise StackError("Redis set: no Sentinel is running to fail over")
        ask(self.ports[sentinel], self.password, "SENTINEL", "FAILOVER", self.master_name)
        deadline = time.monotonic() + timeout
        for name in SENTINELS:
            if self._pid(name) is not None:
                self._wait(name, deadline, "name a new primary",
                           partial(self._names_other_than, name, before))
        return self.primary()

    def _names_other_than(self, name: str, port: int) -> str:
        m = sentinel_master(self.ports[name], self.password, self.master_name)
        return "" if m.get("port") != str(port) else f"still names {port}"

    # ----------------------------------------------------------------- state
    def primary(self) -> int:
        """The port of the primary as the Sentinels name it now (the answer most of those reachable give)."""
        votes: dict[int, int] = {}
        errors = []
        for name in SENTINELS:
            try:
                addr = ask(self.ports[name], self.password, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
            except OSError as exc:
                errors.append(f"{name}: {exc}")
                continue
            if addr:
                votes[int(addr[1])] = votes.get(int(addr[1]), 0) + 1
        if not votes:
            raise StackError(f"Redis set: no Sentinel names a primary for {self.master_name!r} ({'; '.join(errors)})")
        return max(votes, key=lambda port: votes[port])

    def status(self) -> dict[str, Any]:
        """Each part by name: its port, pid and what it says (a data node's role and link, a Sentinel's
        primary); and ``current_primary``: the port the Sentinels name (None when none answers)."""
        out: dict[str, Any] = {}
        for name, pid in self.pids().items():
            part: dict[str, Any] = {"port": self.ports[name], "pid": pid, "running": pid is not None}
            if pid is not None:
                try:
                    if name in DATA_NODES:
                        info = replication(self.ports[name], self.password)
                        part["role"] = "primary" if info.get("role") == "master" else "replica"
                        if part["role"] == "replica":
                            part["link"] = info.get("master_link_status")
                    else:
                        m = sentinel_master(self.ports[name], self.password, self.master_name)
                        part["primary"] = int(m["port"]) if m.get("port", "").isdigit() else None
                        part["flags"] = m.get("flags")
                except OSError as exc:
                    part["error"] = str(exc)
            out[name] = part
        try:
            out["current_primary"] = self.primary()
        except StackError:
            out["current_primary"] = None
        return out
